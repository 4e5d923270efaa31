"""Sign-in throttling: 5 failures in 60 s per IP and per account lock that key for 300 s.

Counters live in the process (a restart forgets them; each replica counts its
own), which keeps the check free of database writes on the hot failure path
an attacker controls. The audit log keeps the durable record.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class LoginLimiter:
    def __init__(
        self, max_failures: int = 5, window: float = 60, lockout: float = 300,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.clock = clock
        self._entries: dict[str, _Entry] = {}

    def _entry(self, key: str) -> _Entry:
        entry = self._entries.setdefault(key, _Entry())
        cutoff = self.clock() - self.window
        while entry.failures and entry.failures[0] < cutoff:
            entry.failures.popleft()
        return entry

    def retry_after(self, keys: Iterable[str]) -> int:
        """Seconds until every key may try again; 0 when none is locked."""
        now = self.clock()
        wait = max((self._entry(k).locked_until - now for k in keys), default=0.0)
        return max(0, math.ceil(wait))

    def remaining(self, keys: Iterable[str]) -> int:
        """Failures left before a lockout; 0 while any key is locked (its count was
        cleared when the lock began, which must not read as a fresh allowance)."""
        now = self.clock()
        left = []
        for k in keys:
            entry = self._entry(k)
            locked = entry.locked_until > now
            left.append(0 if locked else self.max_failures - len(entry.failures))
        return max(0, min(left, default=self.max_failures))

    def fail(self, keys: Iterable[str]) -> None:
        now = self.clock()
        for k in keys:
            entry = self._entry(k)
            entry.failures.append(now)
            if len(entry.failures) >= self.max_failures:
                entry.locked_until = now + self.lockout
                entry.failures.clear()
        if len(self._entries) > 100_000:  # bound memory under a spray of usernames/IPs
            self._prune()

    def succeed(self, keys: Iterable[str]) -> None:
        for k in keys:
            entry = self._entries.get(k)
            if entry is not None and entry.locked_until <= self.clock():
                del self._entries[k]

    def headers(self, keys: Iterable[str]) -> dict[str, str]:
        keys = list(keys)
        return {
            "X-RateLimit-Limit": str(self.max_failures),
            "X-RateLimit-Remaining": str(self.remaining(keys)),
        }

    def _prune(self) -> None:
        now = self.clock()
        for k in [k for k, e in self._entries.items()
                  if e.locked_until <= now and not self._entry(k).failures]:
            del self._entries[k]

"""Sign-in throttling: 5 failures in 60 s per IP and per account lock that key for 300 s.

Counters live in the process (a restart forgets them; each replica counts its
own), which keeps the check free of database writes on the hot failure path
an attacker controls. The audit log keeps the durable record.

An attempt is **reserved** before its password is hashed and counts as a
failure while it is in flight: a key with ``n`` failures admits at most
``max_failures - n`` concurrent attempts, and every further one is refused at
once. Otherwise a burst of parallel guesses would all pass the lock check
before the first of them had failed (the lock is checked before the hash, the
failure is known only after it). A success or an attempt that was never
judged (the server was busy, the request broke) gives its reservation back.

Memory: read paths never create an entry; an entry exists only for a key that
has failed or has an attempt in flight, and ``prune`` (run on a timer by
``services/throttle.py``, and whenever the table grows past ``_MAX_ENTRIES``)
drops every entry that no longer holds anything.

Refusals: the first refusal of a key in each lockout is logged as usual; the
rest are only counted here (``Refusal.first`` is false for them), and when the
key is free again one ``Summary`` says how many there were, which the throttle
service writes to the audit log. A flood against a locked key so costs one
counter increment per request instead of one audit row.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

_MAX_ENTRIES = 100_000  # bound memory under a spray of usernames/IPs between prunes
_MAX_SUMMARIES = 10_000  # summaries not yet written (the service drains them every minute)
BUSY = "busy"  # the pseudo-key under which "server busy" refusals are counted


def ip_key(address: str) -> str:
    """The throttle key of a client address. An IPv6 client is keyed by its /64: one
    subscriber usually holds a whole /64, and counting each of its 2**64 addresses
    apart would let one machine make unlimited guesses. An IPv4-mapped IPv6 address
    counts as the IPv4 address it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"ip:{address}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"ip:{ip.ipv4_mapped}"
        return f"ip:{ipaddress.IPv6Network((int(ip) >> 64 << 64, 64))}"
    return f"ip:{ip}"


@dataclass
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0
    pending: int = 0  # attempts reserved and not yet judged
    refused: int = 0  # refusals since the key began refusing (first one logged)
    refused_since: float = 0.0  # wall-clock time of the first of them


@dataclass(frozen=True)
class Summary:
    """How many attempts a key refused during one lockout (or busy period)."""

    key: str
    refused: int
    since: float  # wall-clock time of the first refusal
    ended: bool  # False when flushed while the key was still refusing (shutdown)


@dataclass(frozen=True)
class Refusal:
    """An attempt refused without being judged."""

    retry_after: int  # seconds
    locked: bool  # a key is locked (else: its whole allowance is in flight)
    first: bool  # the first refusal of some key in this lockout: log it


class Attempt:
    """A reserved attempt; settle it with ``failed``, ``succeeded`` or ``release``.
    Only the first of these counts, so ``release`` is safe in a ``finally``."""

    def __init__(self, limiter: LoginLimiter, keys: Sequence[str]) -> None:
        self._limiter = limiter
        self._keys = tuple(keys)
        self._open = True

    def _close(self) -> bool:
        was_open, self._open = self._open, False
        if was_open:
            self._limiter._refund(self._keys)
        return was_open

    def failed(self) -> None:
        """The guess was wrong: the reservation becomes a failure."""
        if self._close():
            self._limiter.fail(self._keys)

    def succeeded(self, reset: Iterable[str]) -> None:
        """The guess was right: give the reservation back and clear ``reset``'s
        failures (the account's, not the IP's)."""
        if self._close():
            self._limiter.succeed(reset)

    def release(self) -> None:
        """Not judged (or judged neither way): give the reservation back."""
        self._close()


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
        self._summaries: deque[Summary] = deque(maxlen=_MAX_SUMMARIES)

    # -- reading: never creates an entry ------------------------------------------

    def _get(self, key: str, now: float) -> _Entry | None:
        """The entry of ``key`` with failures outside the window forgotten, and its
        refusals summarised if it has stopped refusing; None if it has none."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        cutoff = now - self.window
        while entry.failures and entry.failures[0] < cutoff:
            entry.failures.popleft()
        if entry.refused and not self._blocking(entry, now):
            self._summarise(key, entry, ended=True)
        return entry

    def _blocking(self, entry: _Entry, now: float) -> bool:
        return (entry.locked_until > now
                or len(entry.failures) + entry.pending >= self.max_failures)

    def retry_after(self, keys: Iterable[str]) -> int:
        """Seconds until every key may try again; 0 when none is locked."""
        now = self.clock()
        wait = 0.0
        for k in keys:
            entry = self._get(k, now)
            if entry is not None:
                wait = max(wait, entry.locked_until - now)
        return max(0, math.ceil(wait))

    def remaining(self, keys: Iterable[str]) -> int:
        """Attempts left before a lockout, those in flight counted as failures; 0 while
        any key is locked (its count was cleared when the lock began, which must not
        read as a fresh allowance)."""
        now = self.clock()
        left = self.max_failures
        for k in keys:
            entry = self._get(k, now)
            if entry is None:
                continue
            if entry.locked_until > now:
                return 0
            left = min(left, self.max_failures - len(entry.failures) - entry.pending)
        return max(0, left)

    def headers(self, keys: Iterable[str]) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.max_failures),
            "X-RateLimit-Remaining": str(self.remaining(keys)),
        }

    # -- attempts --------------------------------------------------------------------

    def reserve(self, keys: Sequence[str]) -> Attempt | Refusal:
        """Reserve one attempt on every key, or refuse it: a key is locked, or its
        failures plus the attempts in flight use up its allowance. Check and
        reservation happen without an ``await`` between them, so concurrent
        requests cannot all see the same free allowance."""
        now = self.clock()
        blocking: list[_Entry] = []
        wait, locked = 0.0, False
        for k in keys:
            entry = self._get(k, now)
            if entry is None or not self._blocking(entry, now):
                continue
            blocking.append(entry)
            if entry.locked_until > now:
                locked = True
                wait = max(wait, entry.locked_until - now)
        if blocking:
            return Refusal(max(1, math.ceil(wait)), locked, self._count_refusal(blocking))
        for k in keys:
            self._entries.setdefault(k, _Entry()).pending += 1
        if len(self._entries) > _MAX_ENTRIES:
            self.prune()
        return Attempt(self, keys)

    def _count_refusal(self, entries: Iterable[_Entry]) -> bool:
        first = False
        for entry in entries:
            if entry.refused == 0:
                entry.refused_since = time.time()
                first = True
            entry.refused += 1
        return first

    def _refund(self, keys: Iterable[str]) -> None:
        now = self.clock()
        for k in keys:
            entry = self._entries.get(k)
            if entry is not None and entry.pending > 0:
                entry.pending -= 1
                self._drop_if_idle(k, entry, now)

    def fail(self, keys: Iterable[str]) -> None:
        """Count a failure on every key; the ``max_failures``-th in the window locks it."""
        now = self.clock()
        for k in keys:
            entry = self._get(k, now) or self._entries.setdefault(k, _Entry())
            entry.failures.append(now)
            if len(entry.failures) >= self.max_failures:
                entry.locked_until = now + self.lockout
                entry.failures.clear()
        if len(self._entries) > _MAX_ENTRIES:
            self.prune()

    def succeed(self, keys: Iterable[str]) -> None:
        """Forget the failures of ``keys``; a lock in force stays."""
        now = self.clock()
        for k in keys:
            entry = self._get(k, now)
            if entry is not None and entry.locked_until <= now:
                entry.failures.clear()
                self._drop_if_idle(k, entry, now)

    def shed(self) -> bool:
        """Count a refusal because the server is too busy to hash; True for the first
        one since the last ``prune``, which should be logged (the rest are summarised)."""
        entry = self._entries.setdefault(BUSY, _Entry())
        return self._count_refusal([entry])

    # -- housekeeping ----------------------------------------------------------------

    def _drop_if_idle(self, key: str, entry: _Entry, now: float) -> None:
        if (entry.locked_until <= now and not entry.failures and not entry.pending
                and not entry.refused):
            del self._entries[key]

    def _summarise(self, key: str, entry: _Entry, *, ended: bool) -> None:
        if entry.refused > 1:  # a single refusal has its own audit row already
            self._summaries.append(
                Summary(key, entry.refused, entry.refused_since, ended)
            )
        entry.refused = 0

    def prune(self) -> None:
        """Forget every entry that no longer holds a failure, a lock, an attempt in
        flight or an unsummarised refusal (the busy count is summarised on each call)."""
        now = self.clock()
        for k in list(self._entries):
            entry = self._get(k, now)
            if entry is not None:
                self._drop_if_idle(k, entry, now)

    def take_summaries(self, *, everything: bool = False) -> list[Summary]:
        """The summaries made since the last call. ``everything`` also summarises
        the keys still refusing (at shutdown, so a restart does not lose them)."""
        if everything:
            for k, entry in self._entries.items():
                if entry.refused:
                    self._summarise(k, entry, ended=False)
        out = list(self._summaries)
        self._summaries.clear()
        return out

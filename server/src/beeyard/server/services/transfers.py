"""File transfers in progress: what ``GET /api/files/transfers`` shows and
``DELETE /api/files/transfers/{id}`` cancels.

Transfers live in this process's memory only, never in the database: they are
bounded (``MAX_TRANSFERS``), a download nobody fetched expires after
``READY_TTL``, a finished transfer is listed for ``KEEP`` seconds, and none
survives a restart (a transfer running then fails: the link to the agent goes
with the process). The bytes themselves are never held here: they flow from the
agent's call to the HTTP client (or back) through the call's credit window.

A transfer belongs to the user who created it; only that user and admins see,
fetch or cancel it.
"""

from __future__ import annotations

import secrets
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from beeyard.server.auth.principal import Principal, Role
from beeyard.server.hub.calls import Call

MAX_TRANSFERS = 1000  # per server process, running and finished together
READY_TTL = 600.0  # seconds a created download waits for its GET
KEEP = 3600.0  # seconds a finished transfer stays listed

Kind = Literal["download", "upload"]
FINISHED = ("done", "failed", "cancelled", "expired")


class Full(Exception):
    """Too many transfers at once; the client should retry later."""


@dataclass
class Transfer:
    """One download or upload: who, where, and how far it got."""

    id: str
    kind: Kind
    server_id: int
    path: str
    user_id: int
    username: str
    total: int | None
    state: str = "ready"  # ready → running → done | failed | cancelled | expired
    bytes_done: int = 0
    error: str | None = None
    sha256: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    call: Call | None = field(default=None, repr=False)

    @property
    def over(self) -> bool:
        return self.state in FINISHED

    def start(self, call: Call) -> None:
        self.call = call
        self.state = "running"
        self.started = time.time()

    def finish(self, state: str, error: str | None = None) -> None:
        if not self.over:
            self.state = state
            self.error = error
            self.finished = time.time()
        self.call = None

    def cancel(self, reason: str) -> None:
        """Stop it: the agent stops too (and removes an upload's temporary file)."""
        call = self.call
        self.finish("cancelled", reason)
        if call is not None:
            call.cancel(reason)

    def visible_to(self, principal: Principal) -> bool:
        return principal.role is Role.ADMIN or principal.user_id == self.user_id

    def rate(self, now: float | None = None) -> float:
        """Bytes a second since the transfer started (to its end, once over)."""
        if self.started is None:
            return 0.0
        end = self.finished or (now or time.time())
        return self.bytes_done / max(end - self.started, 1e-3)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "server_id": self.server_id, "path": self.path,
            "owner": self.username, "state": self.state, "size": self.total,
            "bytes_done": self.bytes_done,
            "progress": (self.bytes_done / self.total if self.total else
                         (1.0 if self.state == "done" else 0.0)),
            "rate": round(self.rate(), 1), "sha256": self.sha256, "error": self.error,
            "created_at": _iso(self.created), "started_at": _iso(self.started),
            "finished_at": _iso(self.finished),
            "expires_at": _iso(self.created + READY_TTL) if self.state == "ready" else None,
            "download_url": (f"/api/files/download/{self.id}"
                             if self.kind == "download" and self.state == "ready" else None),
        }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class Transfers:
    """The transfers of one server process."""

    def __init__(self, limit: int = MAX_TRANSFERS) -> None:
        self.limit = limit
        self._all: dict[str, Transfer] = {}

    def create(self, kind: Kind, server_id: int, path: str, principal: Principal,
               total: int | None) -> Transfer:
        self.purge()
        if len(self._all) >= self.limit:
            raise Full(f"{self.limit} transfers are under way or recent; try again later")
        transfer = Transfer(secrets.token_urlsafe(16), kind, server_id, path,
                            principal.user_id, principal.username, total)
        self._all[transfer.id] = transfer
        return transfer

    def get(self, transfer_id: str, principal: Principal) -> Transfer | None:
        """The transfer if it exists and ``principal`` may see it (else None: another
        user's transfer is reported as missing, not as forbidden)."""
        self.purge()
        transfer = self._all.get(transfer_id)
        if transfer is None or not transfer.visible_to(principal):
            return None
        return transfer

    def visible(self, principal: Principal) -> list[Transfer]:
        self.purge()
        return sorted((t for t in self._all.values() if t.visible_to(principal)),
                      key=lambda t: t.created, reverse=True)

    def purge(self, now: float | None = None) -> None:
        """Expire downloads nobody fetched; forget finished transfers after ``KEEP``,
        and the oldest finished ones early when the table is full."""
        now = now or time.time()
        for t in list(self._all.values()):
            if t.state == "ready" and now - t.created > READY_TTL:
                t.finish("expired", "not downloaded in time")
            if t.over and now - (t.finished or now) > KEEP:
                del self._all[t.id]
        if len(self._all) >= self.limit:
            finished = sorted((t for t in self._all.values() if t.over),
                              key=lambda t: t.finished or 0)
            for t in finished[: len(self._all) - self.limit + 1]:
                del self._all[t.id]

    def __len__(self) -> int:
        return len(self._all)


_BY_APP: weakref.WeakKeyDictionary[web.Application, Transfers] = weakref.WeakKeyDictionary()


def of(app: web.Application) -> Transfers:
    """The transfers of this application (created on first use: a frozen app takes
    no new keys, and transfers need nothing started)."""
    transfers = _BY_APP.get(app)
    if transfers is None:
        transfers = _BY_APP[app] = Transfers()
    return transfers

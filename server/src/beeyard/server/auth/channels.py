"""Channel tokens: short-lived, single-use tickets that open one WebSocket channel.

A browser cannot set headers on a WebSocket, and a URL is copied into proxy logs,
browser history and Referer headers, so no lasting credential may travel in one.
Before it opens a terminal, the client asks for a channel token with its usual
credential (``POST /api/ws/terminal/{server_id}/token``) and presents it when it
connects. The token is

- random (256 bits), kept only as its SHA-256 digest, in this process's memory;
- bound to the principal that minted it (user, credential kind and credential id:
  the same browser session, device or API key) and to one purpose and target
  (``terminal``, server 7): another user, another session of the same user, or
  another server cannot use it;
- single-use: the first presentation removes it, whatever its outcome, so a token
  that leaked is either already spent or spent by the leak, never both;
- dead after ``TTL`` seconds.

The connection still needs the usual credential too: the token adds to it and
never replaces it. Tokens live in one process: under several replicas the socket
must reach the replica that minted its token (as the agent link must, today).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from beeyard.server.auth import tokens
from beeyard.server.auth.principal import Principal

TTL = 30.0  # seconds a token may wait to be used
PREFIX = "bch_"
PER_USER = 16  # outstanding tokens per user; beyond, minting is refused (a runaway client)
MAX_TOKENS = 10000  # outstanding tokens in all


class TooMany(Exception):
    """Too many unused tokens outstanding."""


@dataclass(frozen=True)
class Grant:
    user_id: int
    principal_kind: str
    credential_id: int
    purpose: str
    target: int
    expires: float  # time.monotonic()


class ChannelTokens:
    """The outstanding tokens of one application."""

    def __init__(self, ttl: float = TTL) -> None:
        self.ttl = ttl
        self._grants: dict[bytes, Grant] = {}

    def mint(self, principal: Principal, purpose: str, target: int) -> str:
        """A fresh token for ``principal`` to open ``purpose`` on ``target``."""
        self._purge()
        mine = sum(1 for g in self._grants.values() if g.user_id == principal.user_id)
        if mine >= PER_USER or len(self._grants) >= MAX_TOKENS:
            raise TooMany(f"{mine} channel tokens are waiting to be used; use or let them "
                          f"expire ({self.ttl:g} s) first")
        token, digest = tokens.new_secret(PREFIX)
        self._grants[digest] = Grant(principal.user_id, principal.kind, principal.credential_id,
                                     purpose, target, time.monotonic() + self.ttl)
        return token

    def redeem(self, token: str, principal: Principal, purpose: str, target: int) -> str | None:
        """Spend ``token``: None if it admits ``principal`` to ``purpose`` on ``target``,
        else why not. The token is gone either way."""
        grant = self._grants.pop(tokens.digest(token), None)
        if grant is None:
            return "unknown or already used channel token: ask for a new one"
        if time.monotonic() >= grant.expires:
            return f"the channel token expired (they last {self.ttl:g} s): ask for a new one"
        if (grant.user_id, grant.principal_kind, grant.credential_id) != (
                principal.user_id, principal.kind, principal.credential_id):
            return "this channel token was issued to another user or session"
        if (grant.purpose, grant.target) != (purpose, target):
            return f"this channel token was issued for {grant.purpose} on server {grant.target}"
        return None

    def _purge(self) -> None:
        now = time.monotonic()
        for digest in [d for d, g in self._grants.items() if g.expires <= now]:
            del self._grants[digest]

    def __len__(self) -> int:
        return len(self._grants)

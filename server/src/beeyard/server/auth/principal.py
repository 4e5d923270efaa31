"""Principals and the access levels a route can require.

A route declares one ``Access`` level; ``authorize`` is the only place that
decides whether a principal meets it, so the rules below are the whole policy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Role(enum.StrEnum):
    VIEWER = "viewer"
    MEMBER = "member"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Role.VIEWER: 1, Role.MEMBER: 2, Role.ADMIN: 3}


class Access(enum.StrEnum):
    """What a route requires of its caller.

    PUBLIC   anyone, signed in or not.
    ACCOUNT  a person signed in (browser session or mobile device) acting on
             their own account. API keys are refused: a leaked key must not be
             able to change the password, mint keys or turn off 2FA.
    VIEWER   any signed-in principal; writes need a full-scope key.
    MEMBER   role member or admin.
    ADMIN    role admin.
    ADMIN_INTERACTIVE
             role admin, in person (browser session or mobile device), never
             an API key: creating users and changing anyone's credentials or
             privileges. A key is a long-lived bearer secret that scripts and
             CI logs copy around; if one leaks it must not be able to make an
             admin with a password of its choosing or strip someone's 2FA.
    AGENT    an agent's run token (``bag_...``), and nothing else: the agent
             link only. Agent tokens are refused on every other non-public
             route, and people's credentials on this one, so a token copied
             off a host opens no user API and a user cannot pose as a host.
    """

    PUBLIC = "public"
    ACCOUNT = "account"
    VIEWER = "viewer"
    MEMBER = "member"
    ADMIN = "admin"
    ADMIN_INTERACTIVE = "admin_interactive"
    AGENT = "agent"

    @property
    def people_only(self) -> bool:
        """Whether an API key is refused outright, whatever its owner's role and scope."""
        return self in (Access.ACCOUNT, Access.ADMIN_INTERACTIVE)


PrincipalKind = Literal["session", "device", "api_key", "agent"]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller, resolved afresh from the database on every request
    so that a deleted user or a changed role takes effect at once."""

    kind: PrincipalKind
    user_id: int
    username: str
    role: Role
    credential_id: int  # the session, device or API key that authenticated the call
    read_only: bool = False  # an API key with the read scope
    csrf_token: str | None = None  # cookie sessions only
    server_id: int | None = None  # agents only: the server the run token belongs to


def agent_principal(server_id: int, name: str) -> Principal:
    """An agent acts as no user: ``user_id`` 0 and the lowest role, so that even a
    rule that forgot about agents would grant it nothing."""
    return Principal(kind="agent", user_id=0, username=f"agent:{server_id}", role=Role.VIEWER,
                     credential_id=server_id, read_only=True, server_id=server_id)


class Denied(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code  # machine-readable reason beside "error", e.g. unknown_token


def authorize(access: Access, method: str, principal: Principal | None) -> None:
    """Raise ``Denied`` (401 or 403) unless ``principal`` may call a route of ``access``."""
    if access is Access.PUBLIC:
        return
    if principal is None:
        raise Denied(401, "authentication required")
    if access is Access.AGENT:
        if principal.kind != "agent":
            raise Denied(403, "only an agent's run token opens the agent link")
        return
    if principal.kind == "agent":
        raise Denied(403, "an agent run token only opens the agent link")
    if access is Access.ACCOUNT:
        if principal.kind == "api_key":
            raise Denied(403, "API keys cannot manage accounts; sign in as the user instead")
        return
    if access is Access.ADMIN_INTERACTIVE:
        if principal.kind == "api_key":
            raise Denied(403, "API keys cannot create users or change credentials and roles; "
                              "sign in as an admin instead")
        needed = Role.ADMIN
    else:
        needed = Role(access.value)
    if principal.role.rank < needed.rank:
        raise Denied(403, f"requires the {needed.value} role")
    if principal.read_only and method not in SAFE_METHODS:
        raise Denied(403, "this API key is read-only")

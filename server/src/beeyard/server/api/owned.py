"""Credentials a person owns and manages themself (API keys, mobile devices): the
one rule for who may see and revoke whose, shared so that the two cannot drift.

Each person lists and revokes their own. An admin may also list everyone's (with
``all=true``) and revoke anyone's: a leaked key or a lost phone must be stoppable
without deleting its owner. Someone else's credential answers 404 to anyone
else, exactly like one that does not exist, so ids reveal nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg
from aiohttp import web

from beeyard.server import context
from beeyard.server.auth.principal import Principal, Role
from beeyard.server.http.envelope import ApiError, ok
from beeyard.server.http.params import path_id

# db.api_keys.revoke, db.mobile.revoke_device: (pool, id, owner or None for any) → row
Revoke = Callable[[asyncpg.Pool, int, int | None], Awaitable[dict[str, Any] | None]]


def _owner(principal: Principal) -> int | None:
    """The owner whose credentials the caller may act on; None: anyone's (an admin)."""
    return None if principal.role is Role.ADMIN else principal.user_id


def listed_owner(request: web.Request, what: str) -> int | None:
    """Whose ``what`` to list: the caller's own, or everyone's (None) when an admin
    passed ``all=true``. Anyone else asking for ``all`` is refused with 403, not
    quietly shown their own, so a script cannot mistake one list for the other."""
    principal = context.principal(request)
    if not context.query(request)["all"]:
        return principal.user_id
    if _owner(principal) is not None:
        raise ApiError(403, f"only admins may list every user's {what} (all=true)")
    return None


async def revoke_owned(
    request: web.Request, *, what: str, target: str, revoke: Revoke, describe: Iterable[str]
) -> web.Response:
    """Revoke the credential ``{id}`` names, if the caller may, and answer
    ``{id, revoked_at}``; audited as ``target:id`` with the ``describe`` columns
    (and the owner's name when it was someone else's)."""
    principal = context.principal(request)
    wanted = path_id(request, what)
    request[context.AUDIT_TARGET] = f"{target}:{wanted}"
    row = await revoke(context.pool(request), wanted, _owner(principal))
    if row is None:
        raise ApiError(404, f"{what} {wanted} not found")
    detail: dict[str, Any] = {k: row[k] for k in describe}
    if row["user_id"] != principal.user_id:
        detail["owner"] = row["username"]
    request[context.AUDIT_DETAIL] = detail
    return ok({"id": row["id"], "revoked_at": row["revoked_at"]})

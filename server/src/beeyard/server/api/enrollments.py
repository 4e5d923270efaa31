"""Agent enrollment: one-time codes, registration, and run-token rotation.

Minting, listing and deleting codes and rotating tokens are ``Access.ADMIN``,
which full-scope API keys of admins pass, and not ``ADMIN_INTERACTIVE``:
enrolling hosts is what provisioning scripts (cloud-init, Ansible, CI) do,
hundreds at a time, and a person cannot sit in that loop. The risk is bounded
where it matters: a code is single-use, expires in 10 minutes by default (at
most a day), and creates only a server record that can report metrics; it
grants no access to the API, to users, or to what the host's agent allows
(the agent's own config decides that, never the server). A read-scope key is
refused on the writes as everywhere.

``POST /api/agent/register`` is public (the code is the credential), throttled
per client address like sign-in, and consumes the code with one conditional
UPDATE in the transaction that creates the server, so that of two racing
registrations exactly one succeeds.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from beeyard.server import context
from beeyard.server.auth import tokens
from beeyard.server.auth.login import attempt
from beeyard.server.auth.principal import Access
from beeyard.server.auth.ratelimit import ip_key
from beeyard.server.db import enrollments as db
from beeyard.server.db import servers
from beeyard.server.http.envelope import ApiError, ok
from beeyard.server.http.params import path_id
from beeyard.server.http.routing import route
from beeyard.server.hub.agents import HUB
from beeyard.shared.frames import HOST
from beeyard.shared.schema import Field, Schema

PREFIX_LENGTH = 8
CODE_BYTES = 24  # 192 random bits, 32 URL-safe characters
ROTATE_WAIT = 10.0  # seconds a connected agent has to confirm it stored a new token

_ENROLLMENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "code_prefix": {"type": "string", "description": "the code's first 8 characters"},
        "status": {"type": "string", "enum": ["pending", "consumed", "expired"]},
        "created_at": {"type": "string", "format": "date-time"},
        "expires_at": {"type": "string", "format": "date-time"},
        "consumed_at": {"type": ["string", "null"], "format": "date-time"},
        "server_id": {"type": ["integer", "null"]},
    },
}
_MINTED = {
    "type": "object",
    "properties": {
        **_ENROLLMENT["properties"],
        "code": {"type": "string", "description": "the code itself; returned only this once"},
    },
}
_REGISTERED = {
    "type": "object",
    "properties": {
        "server_id": {"type": "integer"},
        "token": {"type": "string", "description": "the run token (bag_...); shown only once"},
    },
}
_ROTATED = {
    "type": "object",
    "properties": {
        "server_id": {"type": "integer"},
        "delivered": {
            "type": "boolean",
            "description": "true: the connected agent stored the new token and reconnects "
                           "with it; false: the old token is revoked and nobody holds the new "
                           "one (enroll the agent again)",
        },
    },
}

MINT = Schema("EnrollmentCreate", (
    Field("ttl_seconds", "int", required=False, default=600, min=60, max=86400,
          doc="how long the code can be used; 10 minutes unless given"),
))

REGISTER = Schema("AgentRegister", (
    Field("code", "str", min=1, max=256, secret=True, doc="the one-time enrollment code"),
    Field("name", "str", required=False, nullable=True, min=1, max=100,
          doc="display name; the host's hostname when absent"),
    Field("host", "map", schema=HOST, doc="host facts, as in the hello frame"),
))


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "code_prefix", "status", "created_at", "expires_at",
                                "consumed_at", "server_id")}


def new_code() -> str:
    """A URL-safe code that never begins with "-": argparse would take such a code for an
    option in ``beeyard-agent enroll --code CODE`` (1 code in 64 otherwise)."""
    while (code := secrets.token_urlsafe(CODE_BYTES)).startswith("-"):
        pass
    return code


@route("POST", "/api/agent/enrollments", Access.ADMIN, "enrollments.create", body=MINT,
       status=201, tags=("agent",), response=_MINTED, extra_statuses=(409,))
async def create_enrollment(request: web.Request) -> web.Response:
    """Mint a one-time enrollment code; the response holds the code, shown this once.

    Give it to ``beeyard-agent enroll --server URL --code CODE`` within its TTL.
    """
    code = new_code()
    prefix = code[:PREFIX_LENGTH]
    try:
        row = await db.create(
            context.pool(request), prefix=prefix, digest=tokens.digest(code),
            created_by=context.principal(request).user_id,
            ttl_seconds=context.body(request)["ttl_seconds"],
        )
    except db.TooMany:
        raise ApiError(409, f"{db.MAX_PENDING} unused codes are pending; delete some or let "
                            "them expire") from None
    request[context.AUDIT_TARGET] = f"enrollment:{row['id']}"
    request[context.AUDIT_DETAIL] = {"code_prefix": prefix, "expires_at": row["expires_at"]
                                     .isoformat()}
    return ok({**_public(row), "code": code}, status=201)


@route("GET", "/api/agent/enrollments", Access.ADMIN, "enrollments.list", tags=("agent",),
       response={"type": "array", "items": _ENROLLMENT})
async def list_enrollments(request: web.Request) -> web.Response:
    """List enrollment codes: only their 8-character prefix, status and expiry."""
    return ok([_public(r) for r in await db.list_all(context.pool(request))])


@route("DELETE", "/api/agent/enrollments/{id}", Access.ADMIN, "enrollments.delete",
       tags=("agent",), extra_statuses=(404,))
async def delete_enrollment(request: web.Request) -> web.Response:
    """Delete an unused enrollment code; it stops working at once."""
    enrollment_id = path_id(request, "enrollment code")
    request[context.AUDIT_TARGET] = f"enrollment:{enrollment_id}"
    row = await db.delete_unused(context.pool(request), enrollment_id)
    if row is None:
        raise ApiError(404, f"no unused enrollment code {enrollment_id}")
    request[context.AUDIT_DETAIL] = {"code_prefix": row["code_prefix"]}
    return ok(_public(row))


@route("POST", "/api/agent/register", Access.PUBLIC, "agent.register", body=REGISTER,
       status=201, tags=("agent",), response=_REGISTERED, rate_limited=True)
async def register(request: web.Request) -> web.Response:
    """Register an agent with a one-time code: creates the server, returns its run token.

    The code is consumed by the first successful registration; a used, expired
    or unknown code is a 401 (and counts toward this address's throttle).
    """
    body = context.body(request)
    code = body["code"].strip()
    request[context.AUDIT_ACTOR] = f"enrollment code {code[:PREFIX_LENGTH]}"
    host = body["host"]
    name = (body["name"] or host["hostname"]).strip() or host["hostname"]
    keys = [f"register:{ip_key(context.client_ip(request))}"]
    with attempt(request, keys, "registrations") as tried:
        token, token_digest = tokens.new_secret(tokens.AGENT_TOKEN_PREFIX)
        created = await db.register(
            context.pool(request), code_digest=tokens.digest(code), name=name[:100], host=host,
            token_digest=token_digest,
        )
        if created is None:
            tried.failed()
            request[context.AUDIT_DETAIL] = {"reason": "unknown, used or expired code"}
            raise ApiError(401, "invalid, used or expired enrollment code")
        tried.succeeded([])
    server_id, enrollment_id = created
    request[context.AUDIT_TARGET] = f"server:{server_id}"
    request[context.AUDIT_DETAIL] = {"enrollment_id": enrollment_id, "name": name,
                                     "hostname": host["hostname"]}
    return ok({"server_id": server_id, "token": token}, status=201)


@route("POST", "/api/agent/{id}/rotate-token", Access.ADMIN, "agent.rotate_token",
       tags=("agent",), response=_ROTATED, extra_statuses=(404,))
async def rotate_token(request: web.Request) -> web.Response:
    """Rotate a server's run token; the old one stops working at once.

    A connected agent is sent the new token over its link; once it confirms it
    stored it (or after 10 s without an answer), the new token's digest
    replaces the old, and the link that used the old token is closed so the
    agent reconnects with the new one. An agent that is not connected (or did
    not confirm) is simply locked out: nobody knows the new token, so enroll
    it again. ``delivered`` says which happened.
    """
    server_id = path_id(request, "server")
    request[context.AUDIT_TARGET] = f"server:{server_id}"
    pool = context.pool(request)
    if not await servers.exists(pool, server_id):
        raise ApiError(404, f"server {server_id} not found")
    hub = request.app[HUB]
    token, digest = tokens.new_secret(tokens.AGENT_TOKEN_PREFIX)
    delivered = await hub.rotate(server_id, token, ROTATE_WAIT)
    # The digest changes before the link closes: the agent's reconnect with the new
    # token must find it in place.
    if not await servers.set_token(pool, server_id, digest):
        raise ApiError(404, f"server {server_id} not found")
    await hub.disconnect(server_id, "revoked", "the run token was rotated; reconnect with the "
                         "new one" if delivered else "the run token was revoked; enroll the "
                         "agent again", retry=bool(delivered))
    request[context.AUDIT_DETAIL] = {"connected": delivered is not None,
                                     "delivered": bool(delivered)}
    return ok({"server_id": server_id, "delivered": bool(delivered)})


ROUTES = [create_enrollment, list_enrollments, delete_enrollment, register, rotate_token]

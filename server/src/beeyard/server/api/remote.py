"""What every route that acts on a host shares: refuse early, call the agent, map
its answer to HTTP.

Two checks stand before the agent's own. The server refuses at once what its
record of the agent's capabilities (from ``hello`` and every later
``capabilities`` frame) lacks, so a user learns without a round trip; the agent
then checks again against its policy at that moment and may still refuse
(``denied``), and that reason reaches the user as a 403. The server's record is
a cache of the agent's word, never an authority: nothing here can make the agent
do what it does not allow.

Every call is audited by the route's audit record (``server:{id}`` and the
operation as detail), whatever its outcome.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from beeyard.server import context
from beeyard.server.http.envelope import ApiError
from beeyard.server.hub.agents import HUB
from beeyard.server.hub.calls import Call, RemoteError, early_refusal
from beeyard.shared.operations import lookup

STATUS = {
    "denied": 403,  # the agent's policy refused: its reason names the rule
    "not_found": 404,
    "offline": 404,  # the REST contract: "404 … server offline"
    "invalid": 422,
    "exists": 409,
    "cancelled": 409,
    "too_large": 413,
    "busy": 429,
    "unknown_op": 501,  # an agent older than the server
    "failed": 502,
    "lost": 502,
    "unavailable": 503,  # e.g. no Docker engine on the host
    "timeout": 504,
}


def api_error(exc: RemoteError) -> ApiError:
    """The HTTP answer to a failed call: its status, and the agent's reason verbatim."""
    return ApiError(STATUS.get(exc.code, 502), exc.reason or exc.code)


async def preflight(request: web.Request, server_id: int, capability: str) -> None:
    """The server's own checks before it asks the agent (which checks again): the server
    exists, its agent reported ``capability``, and it is linked to this process."""
    refusal = await early_refusal(context.pool(request), server_id, capability)
    if refusal is not None:
        raise api_error(refusal)
    link = request.app[HUB].links.get(server_id)
    if link is None or link.closing:
        raise ApiError(404, f"server {server_id} is offline")


async def start(request: web.Request, server_id: int, op_name: str, args: dict[str, Any],
                *, window: int | None = None, detail: dict[str, Any] | None = None) -> Call:
    """Open a call after the server's own checks; raises the ``ApiError`` to answer."""
    op = lookup(op_name)
    request[context.AUDIT_TARGET] = f"server:{server_id}"
    request[context.AUDIT_DETAIL] = {"op": op_name, **(detail or {})}
    await preflight(request, server_id, op.capability)
    try:
        return request.app[HUB].call(server_id, op_name, args, window)
    except RemoteError as exc:
        raise api_error(exc) from None


async def call(request: web.Request, server_id: int, op_name: str, args: dict[str, Any],
               *, within: float | None = None,
               detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run a call that answers with one result, and return it."""
    pending = await start(request, server_id, op_name, args, detail=detail)
    try:
        return await pending.wait(pending.op.timeout if within is None else within)
    except RemoteError as exc:
        raise api_error(exc) from None
    finally:
        if not pending.done:  # the client went away: the agent stops too
            pending.cancel("the client went away")

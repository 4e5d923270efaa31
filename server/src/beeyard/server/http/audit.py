"""Every write, and every login attempt, leaves an audit record: who, what, target,
IP and outcome, whether it succeeded, failed or was denied.

Handlers may refine the record through the request keys in ``context``
(``AUDIT_TARGET``, ``AUDIT_ACTOR`` for a login's attempted username,
``AUDIT_DETAIL``); the middleware writes it, so no write can forget to. The one
exception is ``AUDIT_SKIP``: the sign-in throttle sets it on the second and later
refusals of a locked key, which it counts and summarises in one record instead
(``auth/ratelimit.py``), so that a flood cannot grow the log by a row a request.
"""

from __future__ import annotations

import logging

from aiohttp import web

from beeyard.server import context
from beeyard.server.auth.principal import Denied, Principal
from beeyard.server.db import audit
from beeyard.server.http.envelope import ApiError
from beeyard.server.http.routing import Handler, declaration

log = logging.getLogger("beeyard.server.audit")


def _status_of(exc: BaseException) -> int:
    if isinstance(exc, ApiError | Denied):
        return exc.status
    if isinstance(exc, web.HTTPException):
        return exc.status
    return 500


def outcome_of(status: int) -> str:
    if status < 400:
        return "success"
    if status in (401, 403):
        return "denied"
    return "failure"


@web.middleware
async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    decl = declaration(request)
    if decl is None or not decl.audit:
        return await handler(request)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except BaseException as exc:
        status = _status_of(exc)
        raise
    finally:
        await _write(request, decl.name, status)


async def _write(request: web.Request, action: str, status: int) -> None:
    if request.get(context.AUDIT_SKIP):  # a repeated throttle refusal: counted, not logged
        return
    principal: Principal | None = request.get(context.PRINCIPAL)
    target = request.get(context.AUDIT_TARGET)
    if target is None and request.match_info:
        target = ",".join(f"{k}={v}" for k, v in request.match_info.items()) or None
    try:
        await audit.record(
            context.pool(request),
            action=action,
            outcome=outcome_of(status),
            actor_user_id=principal.user_id if principal else None,
            actor=principal.username if principal else request.get(context.AUDIT_ACTOR),
            principal_kind=principal.kind if principal else None,
            target=None if target is None else str(target),
            ip=context.client_ip(request),
            status=status,
            request_id=request.get(context.REQUEST_ID),
            detail=request.get(context.AUDIT_DETAIL),
        )
    except Exception:
        log.exception("could not write the audit record for %s", action)

"""The outermost middleware: request ids, security headers, and JSON for every failure.

Whatever happens further in, a client gets ``{"error": ...}`` with the right
status and an ``X-Request-Id`` it can quote; a traceback only ever reaches the
server log, tagged with that id.
"""

from __future__ import annotations

import logging
import re
import uuid

import asyncpg
from aiohttp import web

from beeyard.server.auth.principal import Denied
from beeyard.server.context import RATE_HEADERS, REQUEST_ID
from beeyard.server.http.envelope import ApiError, error_response
from beeyard.server.http.routing import Handler, declaration

log = logging.getLogger("beeyard.server.http")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


# The UI and Swagger UI are served from our own origin and load nothing else.
UI_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"


_DATABASE_DOWN = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    is_api = request.path.startswith("/api/") or request.path.startswith("/api-docs/")
    h.setdefault("Content-Security-Policy", API_CSP if is_api else UI_CSP)
    if request.secure:
        h.setdefault("Strict-Transport-Security", "max-age=31536000")
    if is_api:
        h.setdefault("Cache-Control", "no-store")


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-Id", "")
    request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    try:
        decl = declaration(request)
        length = request.content_length
        if decl is not None and length is not None and length > decl.max_body:
            # Refuse before reading a byte of the body, whoever is asking.
            raise ApiError(413, f"request body too large: limit is {decl.max_body} bytes")
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.message, exc.headers, exc.extra)
    except Denied as exc:
        response = error_response(
            exc.status, exc.message, extra=None if exc.code is None else {"code": exc.code}
        )
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects are answers, not errors
            exc.headers["X-Request-Id"] = request_id
            _security_headers(request, exc)
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        response = error_response(exc.status, _message(exc), headers)
    except _DATABASE_DOWN:
        log.exception("database unavailable [request %s]", request_id)
        response = error_response(
            503, "database unavailable; try again shortly", {"Retry-After": "5"}
        )
    except Exception:
        log.exception("unhandled error in %s %s [request %s]",
                      request.method, request.path, request_id)
        response = error_response(500, f"internal error (request id {request_id})")
    response.headers["X-Request-Id"] = request_id
    response.headers.update(request.get(RATE_HEADERS, {}))
    _security_headers(request, response)
    return response


def _message(exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPNotFound):
        custom = exc.text and not exc.text.startswith("404")
        return f"not found: {exc.text}" if custom else "not found"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"method {exc.method} is not allowed on this path (allowed: {allowed})"
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return "request body too large"
    return exc.reason or f"HTTP {exc.status}"

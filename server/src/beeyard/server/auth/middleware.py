"""Resolve the caller, check the route's declared access, then parse its input.

Order matters: the principal is checked before the body is read, so an
anonymous client cannot make the server read (or parse) a large body on a
route it may not call.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp_session import get_session
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from beeyard.server import context
from beeyard.server.auth import tokens
from beeyard.server.auth.principal import Denied, Principal, Role, agent_principal, authorize
from beeyard.server.db import principals, servers
from beeyard.server.http.routing import Handler, declaration
from beeyard.server.http.validation import parse_query, read_body

SESSION_COOKIE = "beeyard_session"
SESSION_KEY = "sid"  # the session's own key, inside the encrypted cookie
CSRF_HEADER = "X-CSRF-Token"


class SessionCookieStorage(EncryptedCookieStorage):
    """aiohttp_session's encrypted cookie, except that a cookie that cannot be ours
    counts as no cookie instead of a crash.

    aiohttp passes header bytes that are not UTF-8 on as lone surrogates, and the
    base class's ``cookie.encode()`` raises on those before it can decide that the
    cookie is not a valid token: a 500 on every route for anyone who sends
    ``Cookie: beeyard_session=\\xff``. A sealed session is URL-safe base64, so any
    non-ASCII value is simply not a session.
    """

    def load_cookie(self, request: web.Request) -> str | None:
        cookie = super().load_cookie(request)
        if cookie is not None and not cookie.isascii():
            return None
        return cookie


def presented_token(request: web.Request) -> str | None:
    key = request.headers.get("X-API-Key")
    if key:
        return key.strip()
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def resolve(request: web.Request) -> Principal | None:
    """Who is calling. A header credential wins over the cookie; a bad one is an error."""
    pool = context.pool(request)
    token = presented_token(request)
    if token is not None:
        if token.startswith(tokens.AGENT_TOKEN_PREFIX):
            server = await servers.by_token(pool, tokens.digest(token))
            if server is None:
                raise Denied(401, "unknown or revoked agent token: enroll the agent again",
                             code="unknown_token")
            return agent_principal(server["id"], server["name"])
        if token.startswith(tokens.API_KEY_PREFIX):
            row = await principals.api_key(pool, tokens.digest(token))
            if row is None:
                raise Denied(401, "invalid, expired or revoked API key")
            kind = "api_key"
        elif token.startswith(tokens.ACCESS_TOKEN_PREFIX):
            row = await principals.access_token(pool, tokens.digest(token))
            if row is None:
                raise Denied(401, "invalid or expired access token; refresh it")
            kind = "device"
        else:
            raise Denied(401, "unrecognised credential: expected an API key, an access token "
                              "or an agent token")
        if row["stale"]:
            await principals.touch(pool, kind, row["id"])
        return Principal(
            kind=kind,  # type: ignore[arg-type]
            user_id=row["user_id"],
            username=row["username"],
            role=Role(row["role"]),
            credential_id=row["id"],
            read_only=kind == "api_key" and row["scope"] == "read",
        )
    session = await get_session(request)
    sid = session.get(SESSION_KEY)
    if not isinstance(sid, str):
        return None
    row = await principals.session(pool, tokens.digest(sid))
    if row is None:
        session.invalidate()  # revoked or expired: drop the cookie too
        return None
    if row["stale"]:
        await principals.touch(pool, "session", row["id"])
    return Principal(
        kind="session",
        user_id=row["user_id"],
        username=row["username"],
        role=Role(row["role"]),
        credential_id=row["id"],
        csrf_token=row["csrf_token"],
    )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    decl = declaration(request)
    if decl is None:  # static files, 404 and 405: nothing to authorise
        return await handler(request)
    try:
        principal = await resolve(request)
    except Denied:
        if decl.access != "public":
            raise
        principal = None  # a stale credential must not block a public route such as login
    request[context.PRINCIPAL] = principal  # type: ignore[misc]
    authorize(decl.access, request.method, principal)
    if principal is not None and principal.kind == "session" and decl.is_write:
        sent = request.headers.get(CSRF_HEADER, "")
        if not (principal.csrf_token and sent and tokens.same(sent, principal.csrf_token)):
            if decl.access != "public":
                raise Denied(
                    403, f"missing or wrong {CSRF_HEADER} header (its value is in GET /api/auth/me)"
                )
            # A public write (signing in again) needs nobody: an unproven cookie lends no
            # authority, so the request goes on as anonymous instead of failing.
            request[context.PRINCIPAL] = None  # type: ignore[misc]
    if decl.query is not None:
        request[context.QUERY] = parse_query(decl.query, request.query)
    if decl.body is not None:
        request[context.BODY] = await read_body(request, decl)
    return await handler(request)

"""Route declarations: every route states its access level, body and query schema.

The table is the single source for three things: registration with aiohttp,
the permission check in the auth middleware, and the OpenAPI document. An
aiohttp route that is not in the table makes the application refuse to start,
so no endpoint can be added that is open by omission.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from beeyard.server.auth.principal import Access
from beeyard.shared.schema import Schema

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Every body we declare fits in a few KiB; a route that needs more says so (max_body).
# The limit is what an anonymous client can make us hold per connection.
DEFAULT_MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class Route:
    """One endpoint. ``name`` is the OpenAPI operationId and the audit action."""

    method: str
    path: str
    handler: Handler
    access: Access
    name: str
    summary: str = ""
    body: Schema | None = None
    query: Schema | None = None
    response: dict[str, Any] | None = None  # JSON Schema of ``data`` on success
    status: int = 200
    tags: tuple[str, ...] = ()
    rate_limited: bool = False
    max_body: int = DEFAULT_MAX_BODY
    audited: bool | None = None  # default: every write is audited
    extra_statuses: tuple[int, ...] = field(default=())

    @property
    def is_write(self) -> bool:
        return self.method not in {"GET", "HEAD", "OPTIONS"}

    @property
    def audit(self) -> bool:
        return self.is_write if self.audited is None else self.audited


def route(
    method: str, path: str, access: Access, name: str, **kwargs: Any
) -> Callable[[Handler], Route]:
    """Decorator form: ``@route("GET", "/api/users", Access.ADMIN, "users.list")``.

    The handler's docstring's first line becomes the OpenAPI summary.
    """

    def wrap(handler: Handler) -> Route:
        doc = (handler.__doc__ or "").strip()
        kwargs.setdefault("summary", doc.splitlines()[0] if doc else name)
        return Route(method, path, handler, access, name, **kwargs)

    return wrap


ROUTES = web.AppKey("routes", dict)  # AbstractRoute -> Route
STATIC = web.AppKey("static_routes", set)  # AbstractRoute objects that serve files publicly


def install(app: web.Application, routes: Iterable[Route]) -> None:
    table: dict[AbstractRoute, Route] = app.setdefault(ROUTES, {})
    for r in routes:
        registered = app.router.add_route(r.method, r.path, r.handler, name=r.name)
        table[registered] = r


def add_static(app: web.Application, prefix: str, path: Any) -> None:
    """Serve a folder publicly; declared here so the completeness check knows it is meant."""
    static: set[AbstractRoute] = app.setdefault(STATIC, set())
    resource = app.router.add_static(prefix, path, append_version=False)
    static.update(resource)


def declaration(request: web.Request) -> Route | None:
    """The declared route a request matched, or None (404/405/static)."""
    return request.app[ROUTES].get(request.match_info.route)


def check_complete(app: web.Application) -> None:
    """Refuse to run with an undeclared route. Called from ``on_startup``."""
    table = app.get(ROUTES, {})
    static = app.get(STATIC, set())
    missing = [
        f"{r.method} {r.resource.canonical if r.resource else '?'}"
        for r in app.router.routes()
        if r not in table and r not in static
    ]
    if missing:
        raise RuntimeError("routes without a declared permission: " + ", ".join(missing))

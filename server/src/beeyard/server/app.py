"""The application factory. Read top down, it is the whole server:
settings → database → middleware → routes → background services."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp_session import session_middleware

from beeyard.server import context
from beeyard.server.api import (
    api_keys,
    audit,
    auth,
    docker,
    docs,
    files,
    groups,
    health,
    live,
    mobile,
    prometheus,
    records,
    servers,
    sessions,
    tasks,
    terminal,
    traceroute,
    two_factor,
    users,
)
from beeyard.server.auth.keys import Keys
from beeyard.server.auth.login import LIMITER
from beeyard.server.auth.middleware import SESSION_COOKIE, SessionCookieStorage, auth_middleware
from beeyard.server.auth.ratelimit import LoginLimiter
from beeyard.server.config import Settings
from beeyard.server.db import bootstrap, embedded, migrate, pool
from beeyard.server.http import routing
from beeyard.server.http.audit import audit_middleware
from beeyard.server.http.middleware import edge_middleware
from beeyard.server.hub.live import LiveState
from beeyard.server.hub.wiring import install as install_agent_link
from beeyard.server.services import background
from beeyard.server.services.housekeeping import housekeeping
from beeyard.server.services.rollups import rollups
from beeyard.server.services.schedule import install as install_tasks
from beeyard.server.services.throttle import throttle
from beeyard.server.web import install as install_web_ui

log = logging.getLogger("beeyard.server")

API_MODULES = [
    health, auth, sessions, users, two_factor, api_keys, mobile, audit, docs,
    servers, groups, records, live, prometheus,
    files,
    docker,
    traceroute,
    terminal,
    tasks,
]


async def database(app: web.Application) -> AsyncIterator[None]:
    settings = app[context.SETTINGS]
    async with contextlib.AsyncExitStack() as stack:
        dsn = settings.database_url
        if dsn is None:  # a private PostgreSQL in the data directory, stopped on exit
            dsn = (await stack.enter_async_context(embedded.running(settings.data_dir))).dsn
        log.info("connecting to %s", pool.redact(dsn))
        app[context.POOL] = await pool.create_pool(dsn, wait=settings.database_wait)
        stack.push_async_callback(app[context.POOL].close)
        async with app[context.POOL].acquire() as conn:
            await migrate.migrate(conn)
            await bootstrap.ensure_admin(conn, settings)
        yield


async def _check_routes(app: web.Application) -> None:
    routing.check_complete(app)


def create_app(settings: Settings) -> web.Application:
    keys = Keys.from_secret(settings.secret_key)
    storage = SessionCookieStorage(
        keys.cookie,
        cookie_name=SESSION_COOKIE,
        max_age=settings.session_ttl,
        httponly=True,
        samesite="Strict",
        secure=settings.secure_cookies,
    )
    app = web.Application(
        middlewares=[
            edge_middleware,  # request id, headers, every failure as JSON
            session_middleware(storage),  # decrypts the session cookie
            audit_middleware,  # sees the final outcome of each write, denials included
            auth_middleware,  # principal, access, CSRF, then the body
        ],
        client_max_size=routing.DEFAULT_MAX_BODY,
    )
    app[context.SETTINGS] = settings
    app[context.KEYS] = keys
    app[context.STARTED] = time.monotonic()
    app[context.TASKS] = {}
    app[context.LIVE] = LiveState()
    app[LIMITER] = LoginLimiter(
        settings.login_max_failures, settings.login_window, settings.login_lockout
    )
    for module in API_MODULES:
        routing.install(app, module.ROUTES)
    install_web_ui(app)  # the UI at /, Swagger UI at /swagger-ui/
    app.on_startup.insert(0, _check_routes)  # before the database starts
    app.on_shutdown.append(live.close_streams)  # open WebSocket/SSE streams end at stop
    app.cleanup_ctx.append(database)
    install_agent_link(app)  # enrollment, agent hub, ingest writer, presence: need the pool
    app.cleanup_ctx.append(background(housekeeping, throttle, rollups))
    install_tasks(app)  # the task runner and its cron scheduler: need the pool and the hub
    return app

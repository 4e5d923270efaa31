"""Typed keys for what the application and each request carry.

Kept apart from ``app.py`` so that every layer can name them without importing
the factory that wires the layers together.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
from aiohttp import web

from beeyard.server.auth.keys import Keys
from beeyard.server.auth.principal import Principal
from beeyard.server.config import Settings

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
KEYS = web.AppKey("keys", Keys)
STARTED = web.AppKey("started_monotonic", float)
TASKS = web.AppKey("background_tasks", dict)  # name -> services.Background

PRINCIPAL = web.RequestKey("principal", Principal | None)  # type: ignore[arg-type]
BODY = web.RequestKey("body", dict)
QUERY = web.RequestKey("query", dict)
AUDIT_TARGET = web.RequestKey("audit_target", str)  # what a write acted on, e.g. "user:7"
AUDIT_ACTOR = web.RequestKey("audit_actor", str)  # the username a login attempt named
AUDIT_DETAIL = web.RequestKey("audit_detail", dict)
REQUEST_ID = web.RequestKey("request_id", str)
RATE_HEADERS = web.RequestKey("rate_headers", dict)  # X-RateLimit-* for rate-limited routes


def pool(request: web.Request) -> asyncpg.Pool:
    return request.app[POOL]


def settings(request: web.Request) -> Settings:
    return request.app[SETTINGS]


def principal(request: web.Request) -> Principal:
    """The caller of a route that requires one (the middleware has checked it is there)."""
    p: Principal | None = request.get(PRINCIPAL)
    if p is None:  # pragma: no cover - a route declared PUBLIC asked for a principal
        raise RuntimeError("principal() called on an anonymous request")
    return p


def body(request: web.Request) -> dict[str, Any]:
    return request[BODY]


def query(request: web.Request) -> dict[str, Any]:
    return request[QUERY]


def client_ip(request: web.Request) -> str:
    return request.remote or "unknown"


def uptime(app: web.Application) -> float:
    return time.monotonic() - app[STARTED]

"""Typed keys for what the application and each request carry.

Kept apart from ``app.py`` so that every layer can name them without importing
the factory that wires the layers together.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import asyncpg
from aiohttp import web

from beeyard.server.auth.keys import Keys
from beeyard.server.auth.principal import Principal
from beeyard.server.config import Settings
from beeyard.server.hub.live import LiveState

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
KEYS = web.AppKey("keys", Keys)
STARTED = web.AppKey("started_monotonic", float)
TASKS = web.AppKey("background_tasks", dict)  # name -> services.Background
LIVE = web.AppKey("live", LiveState)  # the fleet's in-memory live state (hub/live.py)

PRINCIPAL = web.RequestKey("principal", Principal | None)  # type: ignore[arg-type]
BODY = web.RequestKey("body", dict)
QUERY = web.RequestKey("query", dict)
AUDIT_TARGET = web.RequestKey("audit_target", str)  # what a write acted on, e.g. "user:7"
AUDIT_ACTOR = web.RequestKey("audit_actor", str)  # the username a login attempt named
AUDIT_DETAIL = web.RequestKey("audit_detail", dict)
AUDIT_SKIP = web.RequestKey("audit_skip", bool)  # counted elsewhere instead (throttle refusals)
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
    """The caller's address; behind a trusted reverse proxy (BEEYARD_TRUSTED_PROXIES),
    the nearest untrusted hop of X-Forwarded-For."""
    remote = request.remote or "unknown"
    proxies = request.app[SETTINGS].trusted_proxies
    if not proxies or not _trusted(remote, proxies):
        return remote
    hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", []) for h in v.split(",")]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return remote  # a forged or garbled header: fall back to the proxy
    return remote


def _trusted(address: str, proxies: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def uptime(app: web.Application) -> float:
    return time.monotonic() - app[STARTED]

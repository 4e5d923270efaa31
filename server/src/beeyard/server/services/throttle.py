"""Upkeep of the sign-in throttle (``auth/ratelimit.py``): every minute, forget the
keys that hold nothing any more, and write one audit record per lockout that
refused more than once, saying how many attempts it refused.

Only the first refusal of each lockout is written as it happens (by the audit
middleware, like any sign-in attempt); without this summary a flood against a
locked account would write a row per request, which is the growth the throttle
exists to prevent. The same goes for "server busy" refusals (503), summarised
per minute. At shutdown the counts still open are written too.
"""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from beeyard.server import context
from beeyard.server.auth.login import LIMITER
from beeyard.server.auth.ratelimit import BUSY, Summary
from beeyard.server.db import audit
from beeyard.server.services import Background

ACTION = "auth.throttled"


async def _write(app: web.Application, summaries: list[Summary]) -> None:
    pool = app[context.POOL]
    for s in summaries:
        kind, _, name = s.key.partition(":")
        await audit.record(
            pool,
            action=ACTION,
            outcome="failure",
            actor=name if kind == "user" else None,
            target=s.key,
            ip=name if kind == "ip" else None,
            status=503 if s.key == BUSY else 429,
            detail={
                "reason": "server busy" if s.key == BUSY else "locked out",
                "refused": s.refused,  # the first of them has a record of its own
                "since": dt.datetime.fromtimestamp(s.since, dt.UTC).isoformat(),
                "ended": s.ended,
            },
        )


async def sweep(app: web.Application) -> None:
    limiter = app[LIMITER]
    limiter.prune()
    await _write(app, limiter.take_summaries())


async def flush(app: web.Application) -> None:
    await _write(app, app[LIMITER].take_summaries(everything=True))


throttle = Background("login-throttle", interval=60, run=sweep, final=flush)

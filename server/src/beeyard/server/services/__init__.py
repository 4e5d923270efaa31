"""Long-running work started with the application and stopped with it.

Each service is a coroutine run by ``Background``, which restarts it after a
failure (with a pause) and keeps its state for the detailed health endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from beeyard.server import context

log = logging.getLogger("beeyard.server.services")


@dataclass
class Background:
    """A periodic job: ``run`` every ``interval`` seconds until the app stops, then
    ``final`` once (to save what the job holds in memory)."""

    name: str
    interval: float
    run: Callable[[web.Application], Awaitable[None]]
    final: Callable[[web.Application], Awaitable[None]] | None = None
    runs: int = 0
    failures: int = 0
    last_run: float | None = None
    last_error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def _loop(self, app: web.Application) -> None:
        while True:
            try:
                await self.run(app)
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("background task %s failed", self.name)
            self.runs += 1
            self.last_run = time.time()
            await asyncio.sleep(self.interval)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "running": self.task is not None and not self.task.done(),
            "interval_seconds": self.interval,
            "runs": self.runs,
            "failures": self.failures,
            "last_run": self.last_run,
            "last_error": self.last_error,
        }


def background(*jobs: Background) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry that runs ``jobs`` for the life of the app."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        registry: dict[str, Background] = app[context.TASKS]
        for job in jobs:
            registry[job.name] = job
            job.task = asyncio.create_task(job._loop(app), name=f"beeyard:{job.name}")
        yield
        for job in jobs:
            if job.task is not None:
                job.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job.task
            if job.final is not None:
                try:
                    await job.final(app)
                except Exception:
                    log.exception("background task %s failed to finish", job.name)

    return ctx

"""Traceroute on demand: start one on a host (admin), read its outcome (member).

A traceroute can take a minute (30 hops of unanswered probes), longer than a
request should wait, so ``POST`` answers 202 with a request id at once and the
call to the agent goes on in the background; ``GET`` tells ``running``, ``done``
(with the hops) or ``failed`` (with the reason and the status the error maps to).
Outcomes are kept in this process's memory only: at most ``MAX_KEPT`` of them,
each for ``KEEP_FOR`` seconds after it ended. They are results of a diagnostic,
not records; the audit log keeps who asked what.
"""

from __future__ import annotations

import asyncio
import collections
import re
import secrets
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from beeyard.server import context
from beeyard.server.api import remote
from beeyard.server.auth.principal import Access
from beeyard.server.http.envelope import ApiError, ok
from beeyard.server.http.params import path_id
from beeyard.server.http.routing import route
from beeyard.server.hub.calls import Call, RemoteError
from beeyard.shared.operations.traceroute import RUN

MAX_KEPT = 1000  # outcomes kept per server process; the oldest go first
KEEP_FOR = 3600.0  # seconds an outcome is kept after it ended
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_TAGS = ("traceroute",)


@dataclass
class Trace:
    """One traceroute request and, once it ended, its outcome."""

    request_id: str
    server_id: int
    args: dict[str, Any]
    started: float = field(default_factory=time.time)
    finished: float | None = None
    state: str = "running"
    result: dict[str, Any] | None = None
    error: str | None = None
    status: int | None = None

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "request_id": self.request_id,
            "server_id": self.server_id,
            "state": self.state,
            "target": self.args["target"],
            "max_hops": self.args["max_hops"],
            "started_at": self.started,
            "finished_at": self.finished,
        }
        if self.result is not None:
            out.update(address=self.result.get("address"), family=self.result.get("family"),
                       reached=bool(self.result.get("reached")),
                       hops=self.result.get("hops") or [])
        if self.error is not None:
            out.update(error=self.error, status=self.status)
        return out


class Traces:
    """The outcomes of one application: bounded and expiring."""

    def __init__(self) -> None:
        self.items: collections.OrderedDict[str, Trace] = collections.OrderedDict()
        self.tasks: set[asyncio.Task[None]] = set()

    def add(self, trace: Trace) -> None:
        self.prune()
        self.items[trace.request_id] = trace
        while len(self.items) > MAX_KEPT:
            self.items.popitem(last=False)

    def get(self, request_id: str) -> Trace | None:
        self.prune()
        return self.items.get(request_id)

    def prune(self) -> None:
        cutoff = time.time() - KEEP_FOR
        for key in [k for k, t in self.items.items()
                    if t.finished is not None and t.finished < cutoff]:
            del self.items[key]


_STORES: weakref.WeakKeyDictionary[web.Application, Traces] = weakref.WeakKeyDictionary()


def traces(app: web.Application) -> Traces:
    store = _STORES.get(app)
    if store is None:
        store = _STORES[app] = Traces()
    return store


async def _finish(call: Call, trace: Trace) -> None:
    """Wait for the agent's answer and keep it."""
    try:
        trace.result = await call.wait(RUN.timeout)
        trace.state = "done"
    except RemoteError as exc:
        error = remote.api_error(exc)
        trace.state, trace.error, trace.status = "failed", str(error), error.status
    finally:
        trace.finished = time.time()
        if not call.done:
            call.cancel("traceroute abandoned")


_RESULT = {
    "type": "object",
    "properties": {
        "request_id": {"type": "string"},
        "state": {"type": "string", "enum": ["running", "done", "failed"]},
        "hops": {"type": "array", "items": {"type": "object", "properties": {
            "ttl": {"type": "integer"},
            "address": {"type": ["string", "null"]},
            "rtt_ms": {"type": ["number", "null"]},
            "reached": {"type": "boolean"},
        }}},
        "reached": {"type": "boolean"},
    },
}


@route("POST", "/api/servers/{id}/traceroute", Access.ADMIN, "traceroute.start",
       body=RUN.args, status=202, response=_RESULT, tags=_TAGS, extra_statuses=(404,))
async def start(request: web.Request) -> web.Response:
    """Start a traceroute from the host to ``target`` (capability ``traceroute``).

    Answers 202 with ``request_id`` at once; poll ``GET …/traceroute/{request_id}``.
    The host must allow ``traceroute`` (403 otherwise) and be online (404)."""
    server_id = path_id(request, "server")
    args = context.body(request)
    detail = {"target": args["target"], "max_hops": args["max_hops"]}
    call = await remote.start(request, server_id, "traceroute.run", args, detail=detail)
    trace = Trace(secrets.token_urlsafe(16), server_id, args)
    store = traces(request.app)
    store.add(trace)
    task = asyncio.create_task(_finish(call, trace), name=f"traceroute:{trace.request_id}")
    store.tasks.add(task)
    task.add_done_callback(store.tasks.discard)
    request[context.AUDIT_DETAIL] = {"op": "traceroute.run", **detail,
                                     "request_id": trace.request_id}
    return ok(trace.view(), status=202)


@route("GET", "/api/servers/{id}/traceroute/{request_id}", Access.MEMBER, "traceroute.get",
       response=_RESULT, tags=_TAGS, extra_statuses=(404,))
async def result(request: web.Request) -> web.Response:
    """A traceroute's state: ``running``, ``done`` with its hops (``ttl``, ``address``,
    ``rtt_ms``, ``reached``; ``address`` null for a hop that did not answer), or
    ``failed`` with ``error`` and ``status``. Kept for an hour after it ended."""
    server_id = path_id(request, "server")
    request_id = request.match_info["request_id"]
    if not _REQUEST_ID.fullmatch(request_id):
        raise ApiError(422, "path parameter request_id: must be the request_id that "
                            "POST …/traceroute answered")
    trace = traces(request.app).get(request_id)
    if trace is None or trace.server_id != server_id:
        raise ApiError(404, f"traceroute {request_id} not found (outcomes are kept for "
                            f"{KEEP_FOR / 3600:g} h)")
    return ok(trace.view())


ROUTES = [start, result]

"""Docker on a server, through its agent: read (member) and act on containers (admin).

Every route here calls the host's agent (``remote``): the server refuses early
when its record of the agent lacks ``docker_read`` / ``docker_control``, the agent
checks its own policy again, and its answers map to statuses (``not_found`` 404,
``unavailable`` 503 when the host has no Docker engine, ``denied`` 403 with the
agent's reason). Reads act on a host, so they are audited like writes.

Logs stream over a WebSocket: binary messages carry the log bytes as the engine
wrote them; the last message is a text JSON ``{"type": "end", ...}`` or
``{"type": "error", "status": ..., "error": ...}``. Closing the socket cancels
the agent's call, which closes its stream from the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from beeyard.server import context
from beeyard.server.api import remote
from beeyard.server.api.live import check_origin
from beeyard.server.auth.principal import Access
from beeyard.server.http.envelope import ApiError, ok
from beeyard.server.http.params import path_id
from beeyard.server.http.routing import route
from beeyard.server.hub.calls import Call, RemoteError
from beeyard.shared.operations.docker import ACTIONS, CONTAINER_PATTERN, MAX_EVENTS
from beeyard.shared.schema import Field, Schema

log = logging.getLogger("beeyard.server.docker")

_CONTAINER_RE = re.compile(CONTAINER_PATTERN)
FIRST_ANSWER = 1.0  # seconds the logs socket waits for the agent before upgrading
SEND_TIMEOUT = 10.0  # a browser that takes longer to accept a message is dropped
_TAGS = ("docker",)

CONTAINERS_QUERY = Schema("DockerContainersQuery", (
    Field("all", "bool", required=False, default=True,
          doc="include stopped containers (default true)"),
))
STATS_QUERY = Schema("DockerStatsQuery", (
    Field("container", "str", required=False, min=1, max=128, pattern=CONTAINER_PATTERN,
          doc="one container (id, id prefix or name); default: every running one"),
))
EVENTS_QUERY = Schema("DockerEventsQuery", (
    Field("since", "int", required=False, min=0, max=2**40,
          doc="unix seconds; default: an hour before until"),
    Field("until", "int", required=False, min=0, max=2**40,
          doc="unix seconds; default and at most: now"),
    Field("limit", "int", required=False, min=1, max=MAX_EVENTS, default=200,
          doc="at most this many events, the newest"),
))
ACTION_BODY = Schema("DockerAction", (
    Field("action", "str", choices=ACTIONS),
    Field("timeout", "int", required=False, min=0, max=600, default=10,
          doc="stop and restart: seconds before the engine kills the container"),
    Field("force", "bool", required=False, default=False,
          doc="remove: also a running container"),
))
LOGS_QUERY = Schema("DockerLogsQuery", (
    Field("container", "str", min=1, max=128, pattern=CONTAINER_PATTERN,
          doc="container id, id prefix or name"),
    Field("tail", "int", required=False, min=0, max=100_000, default=100,
          doc="the last N lines first (0: none)"),
    Field("follow", "bool", required=False, default=False,
          doc="keep streaming until the socket closes or the container stops"),
    Field("timestamps", "bool", required=False, default=False,
          doc="prefix each line with its RFC 3339 time"),
))

_LIST = {"type": "object", "additionalProperties": True}


async def _read(request: web.Request, op: str, args: dict[str, Any]) -> web.Response:
    server_id = path_id(request, "server")
    return ok(await remote.call(request, server_id, op, args))


@route("GET", "/api/servers/{id}/docker/containers", Access.MEMBER, "docker.containers",
       query=CONTAINERS_QUERY, response=_LIST, audited=True, tags=_TAGS,
       extra_statuses=(404, 503, 504))
async def containers(request: web.Request) -> web.Response:
    """The host's containers: id, name, image, state, status, created, ports, labels.

    ``{"containers": [...], "truncated": bool}``; 503 when the host has no Docker
    engine, 403 when its agent does not allow ``docker_read``."""
    return await _read(request, "docker.containers", {"all": context.query(request)["all"]})


@route("GET", "/api/servers/{id}/docker/stats", Access.MEMBER, "docker.stats",
       query=STATS_QUERY, response=_LIST, audited=True, tags=_TAGS,
       extra_statuses=(404, 503, 504))
async def stats(request: web.Request) -> web.Response:
    """One reading per running container: CPU %, memory, network and block IO, pids."""
    return await _read(request, "docker.stats",
                       {"container": context.query(request)["container"]})


@route("GET", "/api/servers/{id}/docker/info", Access.MEMBER, "docker.info",
       response=_LIST, audited=True, tags=_TAGS, extra_statuses=(404, 503, 504))
async def info(request: web.Request) -> web.Response:
    """The engine: version, whether docker or podman, container and image counts."""
    return await _read(request, "docker.info", {})


@route("GET", "/api/servers/{id}/docker/events", Access.MEMBER, "docker.events",
       query=EVENTS_QUERY, response=_LIST, audited=True, tags=_TAGS,
       extra_statuses=(404, 503, 504))
async def events(request: web.Request) -> web.Response:
    """The engine's recent events between ``since`` and ``until`` (unix seconds; at most
    7 days apart, until at most now), oldest first, the newest ``limit`` kept."""
    q = context.query(request)
    if q["since"] is not None and q["until"] is not None and q["since"] > q["until"]:
        raise ApiError(422, "query parameter since: must not be after until")
    return await _read(request, "docker.events",
                       {"since": q["since"], "until": q["until"], "limit": q["limit"]})


@route("GET", "/api/servers/{id}/docker/networks", Access.MEMBER, "docker.networks",
       response=_LIST, audited=True, tags=_TAGS, extra_statuses=(404, 503, 504))
async def networks(request: web.Request) -> web.Response:
    """The engine's networks: name, driver, scope, subnets, attached containers."""
    return await _read(request, "docker.networks", {})


@route("GET", "/api/servers/{id}/docker/volumes", Access.MEMBER, "docker.volumes",
       response=_LIST, audited=True, tags=_TAGS, extra_statuses=(404, 503, 504))
async def volumes(request: web.Request) -> web.Response:
    """The engine's volumes: name, driver, mountpoint, created."""
    return await _read(request, "docker.volumes", {})


def _container(request: web.Request) -> str:
    raw = request.match_info["cid"]
    if not _CONTAINER_RE.fullmatch(raw):
        raise ApiError(422, f"path parameter cid: must be a container id or name "
                            f"(letters, digits, _ . -; at most 128), got {raw[:40]!r}")
    return raw


@route("POST", "/api/servers/{id}/docker/containers/{cid}/action", Access.ADMIN,
       "docker.action", body=ACTION_BODY, response=_LIST, tags=_TAGS,
       extra_statuses=(404, 503, 504))
async def action(request: web.Request) -> web.Response:
    """Start, stop, restart, pause, unpause or remove a container (``docker_control``).

    Answers ``{"id", "action", "state"}``: the container's state after the action
    (``removed`` for remove). 404 for an unknown container; 422 when the engine
    refuses in the container's current state (pausing a stopped one)."""
    server_id = path_id(request, "server")
    cid = _container(request)
    body = context.body(request)
    args = {"container": cid, **body}
    return ok(await remote.call(request, server_id, "docker.action", args,
                                detail={"container": cid, "action": body["action"]}))


@route("GET", "/api/ws/docker/logs/{server_id}", Access.MEMBER, "docker.logs",
       query=LOGS_QUERY, audited=True, tags=_TAGS, status=101,
       extra_statuses=(404, 426, 503))
async def logs(request: web.Request) -> web.StreamResponse:
    """A container's logs over WebSocket (``docker_read``): ``?container=&tail=&follow=``.

    Binary messages carry the log bytes (stdout and stderr as the engine interleaved
    them); the last message is text JSON, ``{"type": "end", "bytes": n}`` or
    ``{"type": "error", "status": 404, "error": "..."}``, then the socket closes.
    Errors known at once (no such container, docker off, no engine) are answered as
    plain HTTP statuses instead of an upgrade. Closing the socket stops the stream
    on the host. Cookie sessions must come from this server's own origin."""
    check_origin(request)
    server_id = path_id(request, "server", "server_id")
    q = context.query(request)
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096)
    if not ws.can_prepare(request).ok:
        raise ApiError(426, "this endpoint needs a WebSocket upgrade",
                       headers={"Upgrade": "websocket"})
    detail = {"container": q["container"], "tail": q["tail"], "follow": q["follow"]}
    call = await remote.start(request, server_id, "docker.logs", dict(q), detail=detail)
    first = asyncio.ensure_future(call.receive())
    try:
        await asyncio.wait({first}, timeout=FIRST_ANSWER)
        if first.done() and first.result() is None:  # over before any byte: answer plainly
            await _result(call)
        await ws.prepare(request)
        await _pump(ws, call, first)
    finally:
        if not first.done():
            first.cancel()
        if not call.done:
            call.cancel("the client went away")
        request[context.AUDIT_DETAIL] = {"op": "docker.logs", **detail,
                                         "bytes": call.bytes_in}
    return ws


async def _result(call: Call) -> dict[str, Any]:
    try:
        return await call.wait(5.0)
    except RemoteError as exc:
        raise remote.api_error(exc) from None


async def _pump(ws: web.WebSocketResponse, call: Call, first: asyncio.Future[bytes | None]
                ) -> None:
    """Relay the call's stream to the socket until either ends."""
    closed: asyncio.Future[Any] = asyncio.ensure_future(_client_gone(ws))
    receive: asyncio.Future[Any] = first
    try:
        while True:
            done, _ = await asyncio.wait((receive, closed), return_when=asyncio.FIRST_COMPLETED)
            if closed in done and receive not in done:
                receive.cancel()
                return  # the finally of logs() cancels the call
            chunk = receive.result()
            if chunk is None:
                break
            async with asyncio.timeout(SEND_TIMEOUT):
                await ws.send_bytes(chunk)
            receive = asyncio.ensure_future(call.receive())
        try:
            result = await call.wait(5.0)
            end: dict[str, Any] = {"type": "end", "bytes": result.get("bytes", call.bytes_in)}
        except RemoteError as exc:
            error = remote.api_error(exc)
            end = {"type": "error", "status": error.status, "error": str(error)}
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            async with asyncio.timeout(SEND_TIMEOUT):
                await ws.send_str(json.dumps(end))
            await ws.close(code=WSCloseCode.OK)
    except (ConnectionResetError, TimeoutError):
        pass  # a vanished or stuck browser: the call is cancelled by the caller
    finally:
        closed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await closed
        if not ws.closed:
            await ws.close()


async def _client_gone(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the browser sends until it closes."""
    async for msg in ws:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break


ROUTES = [containers, stats, info, events, networks, volumes, action, logs]

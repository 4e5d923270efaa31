"""Tasks: commands run on a server, a group or a tag, now or on a cron schedule (admin).

A task holds an ``argv`` list or a ``shell`` line (which runs only where the
host's agent sets ``exec.allow_shell``), exactly one target (``server_ids``,
``group_id`` or ``tag_id``), a ``timeout``, an output cap (``max_output``) and an
optional ``schedule`` (five-field cron, UTC). ``POST .../run`` starts a run and
answers 202 with its per-server results (``queued`` at first); its progress and
output stream as Server-Sent Events from ``.../runs/{run_id}/events``; a finished
server's output is plain text at ``.../servers/{server_id}/log``, cacheable once
finished. Every route is admin only: a command runs with whatever rights the
agent's ``exec.user`` has.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncpg
from aiohttp import web

from beeyard.server import context
from beeyard.server.auth.principal import Access
from beeyard.server.cron import CronError
from beeyard.server.cron import parse as parse_cron
from beeyard.server.db import groups as groups_db
from beeyard.server.db import tags as tags_db
from beeyard.server.db import tasks as tasks_db
from beeyard.server.http.envelope import ApiError, dumps, ok
from beeyard.server.http.middleware import API_CSP
from beeyard.server.http.params import path_id
from beeyard.server.http.routing import route
from beeyard.server.services.tasks import (
    RETRYABLE,
    RUNNER,
    Runner,
    Starter,
    db_events,
    now,
)
from beeyard.shared.operations import exec as exec_op
from beeyard.shared.schema import Field, Schema

MAX_TIMEOUT = 7 * 24 * 3600
MAX_OUTPUT = 16 * 1024 * 1024
LOG_MAX_AGE = 3600  # seconds a finished output may be cached (it never changes again)
KEEPALIVE = 15.0  # seconds between comment lines on an idle event stream
_MAX_ID = 2**63 - 1  # bigint: a larger id is refused as input, not sent to the database

TASK_BODY = Schema("Task", (
    Field("name", "str", min=1, max=128),
    Field("argv", "list", required=False, nullable=True, min=1, max=exec_op.MAX_ARGV,
          items=Field("arg", "str", max=exec_op.MAX_ARG),
          doc="the program and its arguments, run without a shell; or give shell"),
    Field("shell", "str", required=False, nullable=True, min=1, max=exec_op.MAX_SHELL,
          doc="a line for /bin/sh -c; runs only where the agent sets exec.allow_shell"),
    Field("server_ids", "list", required=False, nullable=True, min=1, max=1000,
          items=Field("server_id", "int", min=1, max=_MAX_ID), doc="target: these servers"),
    Field("group_id", "int", required=False, nullable=True, min=1, max=_MAX_ID,
          doc="target: the servers of this group at each run"),
    Field("tag_id", "int", required=False, nullable=True, min=1, max=_MAX_ID,
          doc="target: the servers with this tag at each run"),
    Field("timeout", "int", required=False, default=300, min=1, max=MAX_TIMEOUT,
          doc="seconds; the agent's exec.max_timeout caps it"),
    Field("max_output", "int", required=False, default=1024 * 1024, min=1, max=MAX_OUTPUT,
          doc="bytes of output kept per server; the agent's exec.max_output_bytes caps it"),
    Field("cwd", "str", required=False, nullable=True, min=1, max=4096,
          doc="absolute working directory"),
    Field("env", "map", required=False, nullable=True, max=exec_op.MAX_ENV,
          doc="extra environment variables"),
    Field("schedule", "str", required=False, nullable=True, max=128,
          doc="five-field cron expression, UTC (e.g. '*/15 * * * *'); null: manual only"),
    Field("enabled", "bool", required=False, default=True,
          doc="false: the schedule does not fire (manual runs still work)"),
))

LIST_QUERY = Schema("TaskResultsQuery", (
    Field("limit", "int", required=False, default=20, min=1, max=100),
    Field("offset", "int", required=False, default=0, min=0, max=10**9),
))

CANCEL_BODY = Schema("TaskCancel", (
    Field("server_id", "int", required=False, nullable=True, min=1,
          doc="cancel only this server's part; absent: the whole run"),
))

_ENV_NAME = re.compile(exec_op.ENV_NAME)
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")  # as the schema refuses in every str field

_RESULT = {
    "type": "object",
    "properties": {
        "server_id": {"type": "integer"}, "server_name": {"type": "string"},
        "state": {"type": "string", "enum": ["queued", "running", "succeeded", "failed",
                                             "timed_out", "cancelled", "denied", "offline"]},
        "reason": {"type": ["string", "null"]},
        "exit_code": {"type": ["integer", "null"]}, "signal": {"type": ["integer", "null"]},
        "output": {"type": "string"}, "output_bytes": {"type": "integer"},
        "truncated": {"type": "boolean"},
        "started_at": {"type": ["string", "null"], "format": "date-time"},
        "finished_at": {"type": ["string", "null"], "format": "date-time"},
        "duration": {"type": ["number", "null"]},
    },
}
_RUN = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"}, "task_id": {"type": "integer"},
        "trigger": {"type": "string", "enum": ["manual", "schedule", "retry"]},
        "retry_of": {"type": ["integer", "null"]},
        "state": {"type": "string", "enum": ["running", "finished", "cancelled"]},
        "progress": {"type": "object"},
        "results": {"type": "array", "items": _RESULT},
    },
}
_TASK = {"type": "object", "properties": {f.name: f.json_schema() for f in TASK_BODY.fields}}


async def _checked(request: web.Request) -> tuple[dict[str, Any], Any]:
    """The body as a task, every rule checked, and its next firing (or None)."""
    task = dict(context.body(request))
    pool = context.pool(request)
    task["name"] = " ".join(task["name"].split())
    if not task["name"]:
        raise ApiError(422, "name: must not be blank")
    if (task["argv"] is None) == (task["shell"] is None):
        raise ApiError(422, "argv, shell: give exactly one, a list of arguments or a shell line")
    if task["argv"] is not None and not task["argv"][0]:
        raise ApiError(422, "argv[0]: the program must not be empty")
    if task["shell"] is not None and not task["shell"].strip():
        raise ApiError(422, "shell: must not be blank")
    chosen = [k for k in ("server_ids", "group_id", "tag_id") if task[k] is not None]
    if len(chosen) != 1:
        raise ApiError(422, "server_ids, group_id, tag_id: give exactly one target")
    if task["server_ids"] is not None:
        task["server_ids"] = sorted(set(task["server_ids"]))
        missing = sorted(set(task["server_ids"]) - await tasks_db.existing_servers(
            pool, task["server_ids"]))
        if missing:
            raise ApiError(422, f"server_ids: no server {', '.join(map(str, missing))}")
    if task["group_id"] is not None and await groups_db.get(pool, task["group_id"]) is None:
        raise ApiError(422, f"group_id: no group {task['group_id']}")
    if task["tag_id"] is not None and await tags_db.get(pool, task["tag_id"]) is None:
        raise ApiError(422, f"tag_id: no tag {task['tag_id']}")
    if task["cwd"] is not None and not task["cwd"].startswith("/"):
        raise ApiError(422, "cwd: must be an absolute path")
    for name, value in (task["env"] or {}).items():
        if not _ENV_NAME.fullmatch(name):
            raise ApiError(422, f"env: {name[:64]!r} is not a variable name")
        if (not isinstance(value, str) or len(value) > exec_op.MAX_ENV_VALUE
                or _UNSTORABLE.search(value)):
            raise ApiError(422, f"env.{name}: must be a string of at most "
                                f"{exec_op.MAX_ENV_VALUE} characters without NUL or "
                                f"unpaired surrogates")
    following = None
    if task["schedule"] is not None:
        try:
            cron = parse_cron(task["schedule"])
        except CronError as exc:
            raise ApiError(422, f"schedule: {exc}") from None
        task["schedule"] = cron.text
        following = cron.next_after(now())
        if following is None:
            raise ApiError(422, f"schedule: {cron.text!r} never fires")
        if not task["enabled"]:
            following = None
    return task, following


async def _task_or_404(request: web.Request) -> dict[str, Any]:
    task_id = path_id(request, "task")
    task = await tasks_db.get(context.pool(request), task_id)
    if task is None:
        raise ApiError(404, f"task {task_id} not found")
    request[context.AUDIT_TARGET] = f"task:{task_id}"
    return task


def _result_view(result: dict[str, Any]) -> dict[str, Any]:
    result.pop("run_id", None)
    output = result.pop("output", None)
    if output is not None:
        result["output"] = bytes(output).decode("utf-8", "replace")
    return result


def _run_view(run: dict[str, Any]) -> dict[str, Any]:
    run["results"] = [_result_view(r) for r in run["results"]]
    counts: dict[str, int] = {}
    for r in run["results"]:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    run["progress"] = {
        "total": len(run["results"]),
        "finished": sum(counts.get(s, 0) for s in tasks_db.FINISHED),
        "states": counts,
    }
    return run


async def _run_or_404(request: web.Request, *, output: bool = True) -> dict[str, Any]:
    task = await _task_or_404(request)
    run_id = path_id(request, "run", "run_id")
    run = await tasks_db.get_run(context.pool(request), task["id"], run_id, output=output)
    if run is None:
        raise ApiError(404, f"run {run_id} of task {task['id']} not found")
    request[context.AUDIT_DETAIL] = {"run_id": run_id}
    return run


def _starter(request: web.Request) -> Starter:
    who = context.principal(request)
    return Starter(who.user_id, who.username, who.kind)


async def _start(request: web.Request, task: dict[str, Any], servers: list[tuple[int, str]],
                 trigger: str, retry_of: int | None = None) -> web.Response:
    runner: Runner = request.app[RUNNER]
    gone = ApiError(404, f"task {task['id']} not found (it was deleted meanwhile)")
    try:
        run_id = await runner.start(task, servers, trigger=trigger, starter=_starter(request),
                                    retry_of=retry_of)
    except asyncpg.ForeignKeyViolationError:  # deleted between our read and the insert
        raise gone from None
    request[context.AUDIT_DETAIL] = {"run_id": run_id, "trigger": trigger,
                                     "servers": [sid for sid, _ in servers]}
    await asyncio.sleep(0)  # let the parts that fail at once (offline, denied) say so
    run = await tasks_db.get_run(context.pool(request), task["id"], run_id, output=True)
    if run is None:
        raise gone
    return ok(_run_view(run), status=202)


@route("GET", "/api/tasks", Access.ADMIN, "tasks.list", tags=("tasks",),
       response={"type": "array", "items": _TASK})
async def list_tasks(request: web.Request) -> web.Response:
    """List every task with its next scheduled firing and its latest run."""
    return ok(await tasks_db.list_all(context.pool(request)))


@route("POST", "/api/tasks", Access.ADMIN, "tasks.create", body=TASK_BODY, status=201,
       tags=("tasks",), response=_TASK)
async def create_task(request: web.Request) -> web.Response:
    """Create a task: a command (argv or shell), one target, limits, an optional schedule."""
    task, following = await _checked(request)
    row = await tasks_db.create(context.pool(request), task, following,
                                context.principal(request).user_id)
    request[context.AUDIT_TARGET] = f"task:{row['id']}"
    request[context.AUDIT_DETAIL] = {"name": row["name"]}
    return ok(row, status=201)


@route("GET", "/api/tasks/{id}", Access.ADMIN, "tasks.get", tags=("tasks",), response=_TASK)
async def get_task(request: web.Request) -> web.Response:
    """One task."""
    return ok(await _task_or_404(request))


@route("PUT", "/api/tasks/{id}", Access.ADMIN, "tasks.update", body=TASK_BODY,
       tags=("tasks",), response=_TASK)
async def update_task(request: web.Request) -> web.Response:
    """Replace a task (the whole of it, as POST takes it); past runs keep what they ran."""
    current = await _task_or_404(request)
    task, following = await _checked(request)
    row = await tasks_db.update(context.pool(request), current["id"], task, following)
    if row is None:
        raise ApiError(404, f"task {current['id']} not found")
    request[context.AUDIT_DETAIL] = {"name": row["name"]}
    return ok(row)


@route("DELETE", "/api/tasks/{id}", Access.ADMIN, "tasks.delete", tags=("tasks",))
async def delete_task(request: web.Request) -> web.Response:
    """Delete a task and its runs; runs still going are cancelled first."""
    task = await _task_or_404(request)
    runner: Runner = request.app[RUNNER]
    for run in list(runner.runs.values()):
        if run.task_id == task["id"]:
            runner.cancel(run.run_id, None, "the task was deleted")
    row = await tasks_db.delete(context.pool(request), task["id"])
    if row is None:
        raise ApiError(404, f"task {task['id']} not found")
    request[context.AUDIT_DETAIL] = {"name": row["name"]}
    return ok({"id": task["id"], "deleted": True})


@route("POST", "/api/tasks/{id}/run", Access.ADMIN, "tasks.run", tags=("tasks",),
       status=202, response=_RUN, extra_statuses=(409,))
async def run_task(request: web.Request) -> web.Response:
    """Run a task now on its target's servers: 202 with the run and its per-server results."""
    task = await _task_or_404(request)
    servers = await tasks_db.targets(context.pool(request), task)
    if not servers:
        raise ApiError(409, f"task {task['id']} has no target servers (its group or tag is "
                            f"empty or was deleted)")
    return await _start(request, task, servers, "manual")


@route("GET", "/api/tasks/{id}/results", Access.ADMIN, "tasks.results", tags=("tasks",),
       query=LIST_QUERY, response={"type": "array", "items": _RUN})
async def task_results(request: web.Request) -> web.Response:
    """The task's runs, newest first, each with its per-server results and output;
    ``pagination`` {limit, offset, total}."""
    task = await _task_or_404(request)
    q = context.query(request)
    runs, total = await tasks_db.list_runs(context.pool(request), task["id"], limit=q["limit"],
                                           offset=q["offset"], output=True)
    return ok([_run_view(r) for r in runs],
              pagination={"limit": q["limit"], "offset": q["offset"], "total": total})


@route("GET", "/api/tasks/{id}/runs/{run_id}", Access.ADMIN, "tasks.run_get",
       tags=("tasks",), response=_RUN)
async def get_run(request: web.Request) -> web.Response:
    """One run with each server's state, output so far and timing, and its progress."""
    return ok(_run_view(await _run_or_404(request)))


@route("POST", "/api/tasks/{id}/runs/{run_id}/cancel", Access.ADMIN, "tasks.run_cancel",
       tags=("tasks",), body=CANCEL_BODY, status=202, response=_RUN, extra_statuses=(409,))
async def cancel_run(request: web.Request) -> web.Response:
    """Cancel a running run, or one server's part of it (``server_id``): the agents kill
    the commands' process groups."""
    run = await _run_or_404(request, output=False)
    server_id = context.body(request)["server_id"]
    if server_id is not None and all(r["server_id"] != server_id for r in run["results"]):
        raise ApiError(404, f"server {server_id} is not part of run {run['id']}")
    if run["state"] != "running":
        raise ApiError(409, f"run {run['id']} is over ({run['state']})")
    who = context.principal(request).username
    runner: Runner = request.app[RUNNER]
    if not runner.cancel(run["id"], server_id, f"cancelled by {who}"):
        raise ApiError(409, f"run {run['id']} is not running in this server process (another "
                            f"replica runs it); cancel it there")
    live = runner.live(run["id"])
    if live is not None:  # parts settle as their calls end; give them a moment
        settling = [p.task for p in live.parts.values()
                    if p.task is not None and (server_id is None or p.server_id == server_id)]
        if settling:
            await asyncio.wait(settling, timeout=2)
    fresh = await tasks_db.get_run(context.pool(request), run["task_id"], run["id"], output=True)
    assert fresh is not None
    return ok(_run_view(fresh), status=202)


@route("POST", "/api/tasks/{id}/runs/{run_id}/retry", Access.ADMIN, "tasks.run_retry",
       tags=("tasks",), status=202, response=_RUN, extra_statuses=(409,))
async def retry_run(request: web.Request) -> web.Response:
    """A new run of this run's servers that failed, timed out or were offline."""
    run = await _run_or_404(request, output=False)
    if run["state"] == "running":
        raise ApiError(409, f"run {run['id']} is still running; retry it once it is over")
    again = [r["server_id"] for r in run["results"] if r["state"] in RETRYABLE]
    if not again:
        raise ApiError(409, f"run {run['id']} has no failed, timed-out or offline server "
                            f"to retry")
    task = await tasks_db.get(context.pool(request), run["task_id"])
    assert task is not None
    names = await tasks_db.server_names(context.pool(request), again)
    servers = [(sid, names[sid]) for sid in again if sid in names]
    if not servers:
        raise ApiError(409, "the servers to retry no longer exist")
    return await _start(request, task, servers, "retry", retry_of=run["id"])


@route("GET", "/api/tasks/{id}/runs/{run_id}/events", Access.ADMIN, "tasks.run_events",
       tags=("tasks",))
async def run_events(request: web.Request) -> web.StreamResponse:
    """A run's progress as Server-Sent Events, until it ends.

    ``text/event-stream``; a client that connects late first gets what was already
    produced. Events: ``state`` (one server's state, exit code, timing), ``output``
    (``{"server_id", "text"}``: the next piece of that server's output), ``progress``
    (``{"total", "finished", "states"}``) and a last ``end`` (``{"run_id", "state"}``),
    after which the stream closes. A comment line every 15 s while idle. A client more
    than 4,096 events behind gets ``resync`` and the stream closes: reconnecting (as
    EventSource does by itself) starts again from the snapshot.
    """
    run = await _run_or_404(request, output=False)
    resp = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": API_CSP,
    })
    await resp.prepare(request)
    live = request.app[RUNNER].live(run["id"])
    try:
        if live is None:
            async for name, data in db_events(context.pool(request), run["task_id"], run["id"]):
                await resp.write(_event(name, data))
            return resp
        with live.watch() as queue:
            backlog = live.snapshot()
            await resp.write(b"".join(_event(n, d) for n, d in backlog))
            if backlog[-1][0] == "end":
                return resp
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE):
                        name, data = await queue.get()
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                batch = [(name, data)]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                await resp.write(b"".join(_event(n, d) for n, d in batch))
                if any(n in ("end", "resync") for n, _ in batch):
                    return resp  # resync: the client fell behind; it reconnects afresh
    except ConnectionResetError:
        pass  # the client went away
    return resp


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {dumps(data)}\n\n".encode()


@route("GET", "/api/tasks/{id}/runs/{run_id}/servers/{server_id}/log", Access.ADMIN,
       "tasks.run_log", tags=("tasks",))
async def run_log(request: web.Request) -> web.Response:
    """One server's output of a run as plain text; cacheable once that server finished."""
    task = await _task_or_404(request)
    run_id = path_id(request, "run", "run_id")
    server_id = path_id(request, "server", "server_id")
    row = await tasks_db.output_of(context.pool(request), task["id"], run_id, server_id)
    if row is None:
        raise ApiError(404, f"no output of server {server_id} in run {run_id} of task "
                            f"{task['id']}")
    headers = {"X-Truncated": "true" if row["truncated"] else "false"}
    if row["state"] in tasks_db.FINISHED:
        headers["Cache-Control"] = f"private, max-age={LOG_MAX_AGE}, immutable"
    return web.Response(body=bytes(row["output"]), headers=headers,
                        content_type="text/plain", charset="utf-8")


ROUTES = [list_tasks, create_task, get_task, update_task, delete_task, run_task, task_results,
          get_run, cancel_run, retry_run, run_events, run_log]

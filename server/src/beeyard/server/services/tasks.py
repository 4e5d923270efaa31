"""Running tasks: a run fans out to its servers, each part one ``exec.run`` call.

A run starts from the API (``manual``, ``retry``) or the scheduler (``schedule``).
Its parts run at most ``PARALLEL`` at a time; each part first checks the server's
record of its agent's capabilities (refused at once: ``denied``), then calls the
agent through the hub (no link to this process: ``offline``), and streams the
output into memory as it comes: subscribers (the API's event stream) see each
chunk at once, and the database gets the new bytes at most every
``FLUSH_INTERVAL`` seconds and at the end. The server keeps at most the task's
``max_output`` bytes per server whatever the agent sends.

Cancelling a run (or one server's part of it) cancels its calls: the agent kills
the command's process group. A retry is a new run of the servers of an earlier
run that failed, timed out or were offline.

The state of a run in progress lives in the process that runs it; any replica can
read its progress from the database, which the event stream polls when the run is
not its own (``db_events``).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from beeyard.server import context
from beeyard.server.db import audit
from beeyard.server.db import tasks as tasks_db
from beeyard.server.hub.agents import HUB
from beeyard.server.hub.calls import Call, RemoteError, early_refusal

log = logging.getLogger("beeyard.server.tasks")

PARALLEL = 32  # parts of one run talking to agents at once
FLUSH_INTERVAL = 1.0  # seconds between writes of a part's new output
ANSWER_SLACK = 30.0  # seconds past the command's timeout before we stop waiting for the agent
POLL = 1.0  # seconds between database reads when streaming a run another replica runs
LINGER = 30.0  # seconds a finished run stays in memory for late event-stream clients
WATCH_LIMIT = 4096  # events queued for one event-stream client before it must resync

RETRYABLE = ("failed", "timed_out", "offline")
_STATE_OF_ERROR = {"denied": "denied", "cancelled": "cancelled", "offline": "offline"}


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def command_of(task: dict[str, Any]) -> dict[str, Any]:
    """The exec.run arguments of a task (frozen into each run)."""
    out: dict[str, Any] = {"timeout": task["timeout"], "max_output": task["max_output"]}
    if task.get("argv") is not None:
        out["argv"] = list(task["argv"])
    else:
        out["shell"] = task["shell"]
    if task.get("cwd"):
        out["cwd"] = task["cwd"]
    if task.get("env"):
        out["env"] = dict(task["env"])
    return out


@dataclass
class Part:
    """One server's share of a run, as it goes."""

    server_id: int
    name: str
    cap: int
    state: str = "queued"
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    output: bytearray = field(default_factory=bytearray)
    output_bytes: int = 0
    truncated: bool = False
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    duration: float | None = None
    flushed: int = 0  # bytes of output already in the database
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    call: Call | None = None
    task: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        return self.state in tasks_db.FINISHED

    def view(self) -> dict[str, Any]:
        return {
            "server_id": self.server_id, "server_name": self.name, "state": self.state,
            "reason": self.reason, "exit_code": self.exit_code, "signal": self.signal,
            "output_bytes": self.output_bytes, "truncated": self.truncated,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "duration": self.duration,
        }

    def take(self, chunk: bytes) -> str:
        """Keep what fits under the cap; the new text to publish."""
        self.output_bytes += len(chunk)
        room = self.cap - len(self.output)
        kept = chunk[:max(room, 0)]
        if len(kept) < len(chunk):
            self.truncated = True
        self.output += kept
        return self.decoder.decode(kept)


class LiveRun:
    """A run in progress in this process: its parts and who is watching."""

    def __init__(self, run_id: int, task_id: int, parts: list[Part]) -> None:
        self.run_id = run_id
        self.task_id = task_id
        self.parts = {p.server_id: p for p in parts}
        self.state = "running"
        self.cancel_requested = False
        self.watchers: set[asyncio.Queue[tuple[str, dict[str, Any]]]] = set()
        self.done = asyncio.Event()

    def progress(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for part in self.parts.values():
            counts[part.state] = counts.get(part.state, 0) + 1
        finished = sum(1 for p in self.parts.values() if p.finished)
        return {"run_id": self.run_id, "total": len(self.parts), "finished": finished,
                "states": counts}

    def publish(self, name: str, data: dict[str, Any]) -> None:
        for queue in list(self.watchers):
            try:
                queue.put_nowait((name, data))
            except asyncio.QueueFull:
                # A reader this far behind would hold the run's whole output once more:
                # it is told to start over (its EventSource reconnects to a fresh snapshot).
                self.watchers.discard(queue)
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(("resync", {"run_id": self.run_id}))

    def changed(self, part: Part) -> None:
        self.publish("state", part.view())
        self.publish("progress", self.progress())

    def snapshot(self) -> list[tuple[str, dict[str, Any]]]:
        """What a client that connects now has missed: each part's state and output so
        far, then the progress (and the end, if the run is over)."""
        events: list[tuple[str, dict[str, Any]]] = []
        for part in self.parts.values():
            events.append(("state", part.view()))
            if part.output:
                text = bytes(part.output).decode("utf-8", "replace")
                events.append(("output", {"server_id": part.server_id, "text": text}))
        events.append(("progress", self.progress()))
        if self.done.is_set():
            events.append(("end", {"run_id": self.run_id, "state": self.state}))
        return events

    @contextlib.contextmanager
    def watch(self) -> Any:
        """A queue of the events from now on (use with ``snapshot`` taken at the same
        moment: nothing awaits between the two, so nothing is lost or repeated)."""
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(WATCH_LIMIT)
        self.watchers.add(queue)
        try:
            yield queue
        finally:
            self.watchers.discard(queue)


@dataclass(frozen=True)
class Starter:
    """Who started a run, for the run's record and the audit trail."""

    user_id: int | None
    actor: str
    kind: str | None


class Runner:
    """The runs this process is running."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.runs: dict[int, LiveRun] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pool(self) -> Any:
        return self.app[context.POOL]

    def live(self, run_id: int) -> LiveRun | None:
        return self.runs.get(run_id)

    async def start(self, task: dict[str, Any], servers_: list[tuple[int, str]], *,
                    trigger: str, starter: Starter, retry_of: int | None = None) -> int:
        """Record a run of ``task`` on ``servers_`` and start it; its id."""
        command = command_of(task)
        async with self.pool.acquire() as conn:
            run_id = await tasks_db.create_run(
                conn, task["id"], trigger=trigger, triggered_by=starter.user_id,
                retry_of=retry_of, command=command, servers=servers_)
        parts = [Part(sid, name, task["max_output"]) for sid, name in servers_]
        run = LiveRun(run_id, task["id"], parts)
        self.runs[run_id] = run
        job = asyncio.create_task(self._run(run, command, trigger, starter),
                                  name=f"beeyard:task-run:{run_id}")
        self._tasks.add(job)
        job.add_done_callback(self._tasks.discard)
        return run_id

    async def _run(self, run: LiveRun, command: dict[str, Any], trigger: str,
                   starter: Starter) -> None:
        gate = asyncio.Semaphore(PARALLEL)
        try:
            for part in run.parts.values():
                part.task = asyncio.create_task(
                    self._part(run, part, command, gate, trigger, starter))
            await asyncio.gather(*(p.task for p in run.parts.values() if p.task),
                                 return_exceptions=True)
        finally:
            run.state = "cancelled" if run.cancel_requested else "finished"
            with contextlib.suppress(Exception):
                await asyncio.shield(tasks_db.finish_run(self.pool, run.run_id, run.state))
            run.done.set()
            run.publish("end", {"run_id": run.run_id, "state": run.state})
            loop = asyncio.get_running_loop()
            loop.call_later(LINGER, self.runs.pop, run.run_id, None)

    async def _part(self, run: LiveRun, part: Part, command: dict[str, Any],
                    gate: asyncio.Semaphore, trigger: str, starter: Starter) -> None:
        try:
            async with gate:
                await self._execute(run, part, command)
        except asyncio.CancelledError:
            await asyncio.shield(self._finish(run, part, "cancelled",
                                              reason=part.reason or "cancelled"))
        except Exception as exc:
            log.exception("run %d on server %d failed", run.run_id, part.server_id)
            await asyncio.shield(self._finish(run, part, "failed",
                                              reason=f"the control plane failed: {exc}"))
        finally:
            if part.call is not None and not part.call.done:
                part.call.cancel(part.reason or "cancelled")
        with contextlib.suppress(Exception):
            await audit.record(
                self.pool, action="tasks.exec",
                outcome="success" if part.state == "succeeded"
                else "denied" if part.state == "denied" else "failure",
                actor_user_id=starter.user_id, actor=starter.actor,
                principal_kind=starter.kind, target=f"server:{part.server_id}",
                detail={"task_id": run.task_id, "run_id": run.run_id, "trigger": trigger,
                        "state": part.state, "exit_code": part.exit_code,
                        "bytes": part.output_bytes})

    async def _execute(self, run: LiveRun, part: Part, command: dict[str, Any]) -> None:
        refusal = await early_refusal(self.pool, part.server_id, "exec")
        if refusal is not None:
            gone = refusal.code == "not_found"
            await self._finish(run, part, "offline" if gone else "denied", reason=(
                f"server {part.server_id} no longer exists" if gone else refusal.reason))
            return
        try:
            call = self.app[HUB].call(part.server_id, "exec.run", command)
        except RemoteError as exc:
            await self._finish(run, part, _STATE_OF_ERROR.get(exc.code, "failed"),
                               reason=exc.reason)
            return
        part.call = call
        part.state, part.started_at = "running", now()
        await tasks_db.set_result(self.pool, run.run_id, part.server_id, state="running",
                                  started_at=part.started_at)
        run.changed(part)
        flushed_at = time.monotonic()
        try:
            async with asyncio.timeout(command["timeout"] + ANSWER_SLACK):
                while True:
                    # output not yet in the database goes there within FLUSH_INTERVAL,
                    # whether or not more follows (other replicas read it from there)
                    due = None
                    if part.flushed < len(part.output):
                        due = flushed_at + FLUSH_INTERVAL - time.monotonic()
                        if due <= 0:
                            await self._flush(run, part)
                            flushed_at, due = time.monotonic(), None
                    try:
                        async with asyncio.timeout(due):
                            chunk = await call.receive()
                    except TimeoutError:
                        await self._flush(run, part)
                        flushed_at = time.monotonic()
                        continue
                    if chunk is None:
                        break
                    text = part.take(chunk)
                    if text:
                        run.publish("output", {"server_id": part.server_id, "text": text})
                result = await call.wait(ANSWER_SLACK)
        except TimeoutError:
            call.cancel("no answer from the agent in time")
            await self._finish(run, part, "timed_out", reason=(
                f"the agent did not answer within {command['timeout'] + ANSWER_SLACK:g} s"))
            return
        except RemoteError as exc:
            state = _STATE_OF_ERROR.get(exc.code, "failed")
            if state == "cancelled" and part.reason:
                await self._finish(run, part, state, reason=part.reason)
            else:
                await self._finish(run, part, state, reason=exc.reason or exc.code)
            return
        timed_out = bool(result.get("timed_out"))
        exit_code = result.get("exit_code")
        part.output_bytes = max(part.output_bytes, int(result.get("bytes") or 0))
        part.truncated = part.truncated or bool(result.get("truncated"))
        part.exit_code = exit_code if isinstance(exit_code, int) else None
        part.signal = result.get("signal") if isinstance(result.get("signal"), int) else None
        duration = result.get("duration")
        part.duration = float(duration) if isinstance(duration, int | float) else None
        if timed_out:
            state, reason = "timed_out", f"killed after {command['timeout']} s (the timeout)"
        elif part.exit_code == 0:
            state, reason = "succeeded", None
        else:
            state = "failed"
            reason = (f"exit code {part.exit_code}" if part.exit_code is not None
                      else f"killed by signal {part.signal}")
        await self._finish(run, part, state, reason=reason)

    async def _flush(self, run: LiveRun, part: Part) -> None:
        new = bytes(part.output[part.flushed:])
        await tasks_db.append_output(self.pool, run.run_id, part.server_id, new,
                                     part.output_bytes, part.truncated)
        part.flushed += len(new)

    async def _finish(self, run: LiveRun, part: Part, state: str, *, reason: str | None) -> None:
        if part.finished:
            return
        tail = part.decoder.decode(b"", final=True)
        if tail:
            run.publish("output", {"server_id": part.server_id, "text": tail})
        part.state, part.reason, part.finished_at = state, reason, now()
        if part.started_at is not None and part.duration is None:
            part.duration = round((part.finished_at - part.started_at).total_seconds(), 3)
        await self._flush(run, part)
        await tasks_db.set_result(
            self.pool, run.run_id, part.server_id, state=state, reason=reason,
            exit_code=part.exit_code, signal=part.signal, finished_at=part.finished_at,
            duration=part.duration, output_bytes=part.output_bytes, truncated=part.truncated)
        run.changed(part)

    def cancel(self, run_id: int, server_id: int | None, reason: str) -> bool:
        """Cancel a run here (or one server's part); False if this process does not
        run it (it finished, or another replica runs it)."""
        run = self.runs.get(run_id)
        if run is None or run.done.is_set():
            return False
        if server_id is None:
            run.cancel_requested = True
        for part in run.parts.values():
            if server_id is not None and part.server_id != server_id:
                continue
            if part.finished:
                continue
            part.reason = reason
            if part.call is not None:
                part.call.cancel(reason)  # the agent kills the command's process group
            elif part.task is not None:
                part.task.cancel()  # still queued
        return True

    async def close(self) -> None:
        """The server stops: cancel what runs, so each part is recorded, not left running."""
        for run_id in list(self.runs):
            self.cancel(run_id, None, "the control plane stopped")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)


RUNNER = web.AppKey("task_runner", Runner)


async def runner_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the runner for the life of the app."""
    app[RUNNER] = Runner(app)
    yield
    await app[RUNNER].close()


async def db_events(pool: Any, task_id: int,
                    run_id: int) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The events of a run this process does not hold, read from the database: the
    same shapes as a live run's, output arriving in ``FLUSH_INTERVAL`` steps."""
    sent_state: dict[int, dict[str, Any]] = {}
    sent_bytes: dict[int, int] = {}
    decoders: dict[int, codecs.IncrementalDecoder] = {}
    last_progress: dict[str, Any] | None = None
    while True:
        run = await tasks_db.get_run(pool, task_id, run_id, output=True)
        if run is None:
            return
        counts: dict[str, int] = {}
        for result in run["results"]:
            sid = result["server_id"]
            output: bytes = result.pop("output")
            result.pop("run_id", None)
            counts[result["state"]] = counts.get(result["state"], 0) + 1
            if sent_state.get(sid) != result:
                sent_state[sid] = result
                yield "state", result
            decoder = decoders.setdefault(
                sid, codecs.getincrementaldecoder("utf-8")("replace"))
            done = sent_bytes.get(sid, 0)
            final = result["state"] in tasks_db.FINISHED
            text = decoder.decode(output[done:], final=final)
            sent_bytes[sid] = len(output)
            if text:
                yield "output", {"server_id": sid, "text": text}
        finished = sum(counts.get(s, 0) for s in tasks_db.FINISHED)
        progress = {"run_id": run_id, "total": len(run["results"]), "finished": finished,
                    "states": counts}
        if progress != last_progress:
            last_progress = progress
            yield "progress", progress
        if run["state"] != "running":
            yield "end", {"run_id": run_id, "state": run["state"]}
            return
        await asyncio.sleep(POLL)

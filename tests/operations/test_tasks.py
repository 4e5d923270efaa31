"""/api/tasks end to end with real agent processes: CRUD and its validation, runs on
a server, a group and a tag, live output over SSE, the output cap, timeouts and
cancels that kill the process group, retry, offline servers, the agent's own
refusals, the scheduler's tick, and who may call any of it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from tests.conftest import Api
from tests.operations.conftest import MakeHost, pids_alive, wait_online

from beeyard.server.services.schedule import MISSED_GRACE, keep_runs, tick
from beeyard.server.services.tasks import RUNNER

PY = sys.executable


async def make_task(api: Api, **fields: Any) -> dict[str, Any]:
    body = {"name": "t", **fields}
    status, out = await api.post("/api/tasks", body)
    assert status == 201, out
    return out["data"]  # type: ignore[no-any-return]


async def run(api: Api, task_id: int) -> dict[str, Any]:
    status, out = await api.post(f"/api/tasks/{task_id}/run", {})
    assert status == 202, out
    return out["data"]  # type: ignore[no-any-return]


async def finished(api: Api, task_id: int, run_id: int, within: float = 30) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            status, out = await api.get(f"/api/tasks/{task_id}/runs/{run_id}")
            assert status == 200, out
            if out["data"]["state"] != "running":
                return out["data"]  # type: ignore[no-any-return]
            await asyncio.sleep(0.1)


def by_server(run_: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {r["server_id"]: r for r in run_["results"]}


async def events(client: TestClient[Any, Any], path: str) -> AsyncIterator[tuple[str, Any]]:
    """Server-Sent Events of ``path`` as (name, data), until the server closes."""
    async with client.get(path) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/event-stream"
        name, data = "message", ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif not line and data:
                yield name, json.loads(data)
                name, data = "message", ""


async def test_crud_and_validation(api: Api, agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["exec"], start=False)
    task = await make_task(api, name="  uptime  ", argv=["/usr/bin/uptime"],
                           server_ids=[host.server_id], schedule="*/5 * * * *")
    assert task["name"] == "uptime" and task["server_ids"] == [host.server_id]
    assert task["timeout"] == 300 and task["max_output"] == 1024 * 1024 and task["enabled"]
    assert task["next_run_at"] is not None and task["last_run"] is None
    status, out = await api.get("/api/tasks")
    assert status == 200 and [t["id"] for t in out["data"]] == [task["id"]]

    status, out = await api.put(f"/api/tasks/{task['id']}", {
        "name": "hello", "shell": "echo hello", "server_ids": [host.server_id],
        "enabled": False, "schedule": "@daily"})
    assert status == 200, out
    assert out["data"]["shell"] == "echo hello" and out["data"]["argv"] is None
    assert out["data"]["schedule"] == "0 0 * * *" and out["data"]["next_run_at"] is None

    good = {"name": "x", "argv": ["/bin/true"], "server_ids": [host.server_id]}
    for change, field in [
        ({"schedule": "61 * * * *"}, "schedule: minute: 61 is out of range"),
        ({"schedule": "* * *"}, "schedule: needs 5 fields"),
        ({"schedule": "0 0 30 2 *"}, "schedule: '0 0 30 2 *' never fires"),
        ({"shell": "true"}, "argv, shell: give exactly one"),
        ({"argv": None}, "argv, shell: give exactly one"),
        ({"argv": [""]}, "argv[0]"),
        ({"group_id": 1}, "server_ids, group_id, tag_id: give exactly one target"),
        ({"server_ids": None}, "give exactly one target"),
        ({"server_ids": [999999]}, "server_ids: no server 999999"),
        ({"server_ids": None, "group_id": 999999}, "group_id: no group 999999"),
        ({"server_ids": None, "tag_id": 999999}, "tag_id: no tag 999999"),
        ({"env": {"1X": "y"}}, "env: '1X' is not a variable name"),
        ({"env": {"X": 1}}, "env.X: must be a string"),
        ({"env": {"X": "\ud800"}}, "env.X: must be a string"),  # stored, it broke GET /api/tasks
        ({"server_ids": [2**63]}, "server_ids[0]: must be at most"),  # beyond bigint: no 500
        ({"server_ids": None, "group_id": 2**63}, "group_id: must be at most"),
        ({"server_ids": None, "tag_id": 2**70}, "tag_id: must be at most"),
        ({"cwd": "relative"}, "cwd: must be an absolute path"),
        ({"timeout": 0}, "timeout: must be at least 1"),
        ({"max_output": 10**9}, "max_output: must be at most"),
        ({"name": "   "}, "name: must not be blank"),
        ({"colour": "blue"}, "colour"),
    ]:
        status, out = await api.post("/api/tasks", {**good, **change})
        assert status == 422, (change, out)
        assert field in out["error"], (change, out["error"])
    status, out = await api.get("/api/tasks")
    assert status == 200, out
    status, out = await api.put("/api/tasks/999999", good)
    assert status == 404
    status, out = await api.delete(f"/api/tasks/{task['id']}")
    assert status == 200 and out["data"]["deleted"]
    status, out = await api.get(f"/api/tasks/{task['id']}")
    assert status == 404 and "task" in out["error"]


async def test_run_argv_and_shell_with_results_and_log(
        api: Api, agent_host: MakeHost, client: TestClient[Any, Any]) -> None:
    host = await agent_host(capabilities=["exec"])
    task = await make_task(api, argv=[PY, "-c", "import sys; print('out'); sys.exit(7)"],
                           server_ids=[host.server_id])
    started = await run(api, task["id"])
    assert started["trigger"] == "manual" and started["progress"]["total"] == 1
    done = await finished(api, task["id"], started["id"])
    result = by_server(done)[host.server_id]
    assert result["state"] == "failed" and result["exit_code"] == 7
    assert result["output"] == "out\n" and result["output_bytes"] == 4
    assert result["reason"] == "exit code 7" and result["duration"] is not None
    assert done["state"] == "finished" and done["progress"]["finished"] == 1

    log_path = f"/api/tasks/{task['id']}/runs/{done['id']}/servers/{host.server_id}/log"
    async with client.get(log_path) as resp:
        assert resp.status == 200 and await resp.text() == "out\n"
        assert resp.content_type == "text/plain"
        assert "max-age=3600" in resp.headers["Cache-Control"]

    # a shell line: refused by this agent (no exec.allow_shell), with its reason
    status, out = await api.put(f"/api/tasks/{task['id']}", {
        "name": "sh", "shell": "echo $((1+1))", "server_ids": [host.server_id]})
    assert status == 200, out
    denied = await finished(api, task["id"], (await run(api, task["id"]))["id"])
    result = by_server(denied)[host.server_id]
    assert result["state"] == "denied" and "exec.allow_shell" in result["reason"]

    # results: newest first, paginated
    status, out = await api.get(f"/api/tasks/{task['id']}/results?limit=1")
    assert status == 200 and out["pagination"]["total"] == 2
    assert [r["id"] for r in out["data"]] == [denied["id"]]
    status, out = await api.get(f"/api/tasks/{task['id']}/results?limit=1&offset=1")
    assert [r["id"] for r in out["data"]] == [done["id"]]
    assert out["data"][0]["results"][0]["output"] == "out\n"
    status, out = await api.get(f"/api/tasks/{task['id']}/results?limit=0")
    assert status == 422 and "limit" in out["error"]

    # the audit log has each server's execution
    status, out = await api.get("/api/audit-logs?action=tasks.exec")
    assert status == 200, out
    assert {e["target"] for e in out["data"]} == {f"server:{host.server_id}"}
    assert {e["outcome"] for e in out["data"]} == {"failure", "denied"}


async def test_group_and_tag_targets_with_shell_allowed(
        api: Api, agent_host: MakeHost) -> None:
    a = await agent_host("a", capabilities=["exec"], exec={"allow_shell": True})
    b = await agent_host("b", capabilities=["exec"], exec={"allow_shell": True})
    status, out = await api.post("/api/server-groups", {"name": "web"})
    assert status == 201
    group_id = out["data"]["id"]
    status, out = await api.post("/api/server-tags", {"name": "db"})
    assert status == 201
    tag_id = out["data"]["id"]
    for host in (a, b):
        status, out = await api.put(f"/api/servers/{host.server_id}",
                                    {"group_id": group_id, "tags": [tag_id]})
        assert status == 200, out
    for target in ({"group_id": group_id}, {"tag_id": tag_id}):
        task = await make_task(api, **{"shell": "echo $((6*7)) from $HOME", **target})
        done = await finished(api, task["id"], (await run(api, task["id"]))["id"])
        results = by_server(done)
        assert set(results) == {a.server_id, b.server_id}
        assert all(r["state"] == "succeeded" and r["output"].startswith("42 from ")
                   for r in results.values()), results
    # deleting the group leaves its task without a target: it refuses to run
    status, _ = await api.delete(f"/api/server-groups/{group_id}")
    assert status == 200
    status, out = await api.get("/api/tasks")
    grouped = [t for t in out["data"] if t["tag_id"] is None]
    assert len(grouped) == 1 and grouped[0]["group_id"] is None
    status, out = await api.post(f"/api/tasks/{grouped[0]['id']}/run", {})
    assert status == 409 and "no target servers" in out["error"]


async def test_output_streams_over_sse_while_the_command_runs(
        api: Api, agent_host: MakeHost, client: TestClient[Any, Any], tmp_path: Path) -> None:
    host = await agent_host(capabilities=["exec"])
    gate = tmp_path / "gate"
    script = ("import os, time\nprint('first', flush=True)\n"
              f"while not os.path.exists({str(gate)!r}): time.sleep(0.02)\nprint('second')\n")
    task = await make_task(api, argv=[PY, "-c", script], server_ids=[host.server_id])
    started = await run(api, task["id"])
    path = f"/api/tasks/{task['id']}/runs/{started['id']}/events"
    seen: list[tuple[str, Any]] = []
    text = ""
    async with asyncio.timeout(30):
        async for name, data in events(client, path):
            seen.append((name, data))
            if name == "output":
                text += data["text"]
                if text == "first\n":
                    # seen while the command still runs: it waits for the gate
                    status, out = await api.get(f"/api/tasks/{task['id']}/runs/{started['id']}")
                    assert out["data"]["state"] == "running"
                    assert by_server(out["data"])[host.server_id]["state"] == "running"
                    gate.touch()
    assert text == "first\nsecond\n"
    assert seen[-1] == ("end", {"run_id": started["id"], "state": "finished"})
    states = [d["state"] for n, d in seen if n == "state"]
    assert "running" in states and states[-1] == "succeeded"
    assert any(n == "progress" and d["finished"] == 1 for n, d in seen)

    # a client that connects after the end gets all of it, then the end
    late = [e async for e in events(client, path)]
    assert "".join(d["text"] for n, d in late if n == "output") == "first\nsecond\n"
    assert late[-1][0] == "end"
    status, out = await api.get(f"/api/tasks/{task['id']}/runs/999999/events")
    assert status == 404

    # once this process has let the run go, the same comes from the database
    client.app[RUNNER].runs.pop(started["id"], None)
    stored = [e async for e in events(client, path)]
    assert "".join(d["text"] for n, d in stored if n == "output") == "first\nsecond\n"
    assert stored[-1] == ("end", {"run_id": started["id"], "state": "finished"})
    assert [d["state"] for n, d in stored if n == "state"] == ["succeeded"]


async def test_sse_of_a_run_another_replica_runs_polls_the_database(
        api: Api, agent_host: MakeHost, client: TestClient[Any, Any], tmp_path: Path) -> None:
    host = await agent_host(capabilities=["exec"])
    gate = tmp_path / "gate"
    script = ("import os, time\nprint('early', flush=True)\n"
              f"while not os.path.exists({str(gate)!r}): time.sleep(0.02)\nprint('late')\n")
    task = await make_task(api, argv=[PY, "-c", script], server_ids=[host.server_id])
    started = await run(api, task["id"])
    client.app[RUNNER].runs.pop(started["id"])  # as a replica that does not run it sees it
    path = f"/api/tasks/{task['id']}/runs/{started['id']}/events"
    text = ""
    async with asyncio.timeout(30):
        async for name, data in events(client, path):
            if name == "output":
                text += data["text"]
                if text == "early\n":  # flushed to the database while still running
                    gate.touch()
            last = (name, data)
    assert text == "early\nlate\n"
    assert last == ("end", {"run_id": started["id"], "state": "finished"})


async def test_output_cap_truncates(api: Api, agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["exec"])
    task = await make_task(api, argv=[PY, "-c", "print('z' * 100000)"],
                           server_ids=[host.server_id], max_output=1000)
    done = await finished(api, task["id"], (await run(api, task["id"]))["id"])
    result = by_server(done)[host.server_id]
    assert result["state"] == "succeeded" and result["truncated"]
    assert result["output"] == "z" * 1000 and result["output_bytes"] == 100001


SPAWN_SLEEP = ("import subprocess, os, sys, time\n"
               "child = subprocess.Popen(['sleep', '300'])\n"
               "open(sys.argv[1], 'w').write(f'{os.getpid()} {child.pid}')\n"
               "print('spawned', flush=True)\n"
               "time.sleep(300)\n")


async def _pids(path: Path) -> list[int]:
    async with asyncio.timeout(20):
        while not path.exists() or len(path.read_text().split()) < 2:
            await asyncio.sleep(0.05)
    return [int(p) for p in path.read_text().split()]


async def _gone(pids: list[int]) -> None:
    async with asyncio.timeout(10):
        while pids_alive(pids):
            await asyncio.sleep(0.05)


async def test_timeout_kills_the_process_group(
        api: Api, agent_host: MakeHost, tmp_path: Path) -> None:
    host = await agent_host(capabilities=["exec"])
    pids_file = tmp_path / "pids"
    task = await make_task(api, argv=[PY, "-c", SPAWN_SLEEP, str(pids_file)],
                           server_ids=[host.server_id], timeout=2)
    started = await run(api, task["id"])
    pids = await _pids(pids_file)
    done = await finished(api, task["id"], started["id"])
    result = by_server(done)[host.server_id]
    assert result["state"] == "timed_out" and "timeout" in result["reason"]
    assert result["output"] == "spawned\n"
    await _gone(pids)
    assert not pids_alive(pids)


async def test_cancel_a_run_and_retry_it(
        api: Api, agent_host: MakeHost, tmp_path: Path) -> None:
    host = await agent_host(capabilities=["exec"])
    pids_file = tmp_path / "pids"
    task = await make_task(api, argv=[PY, "-c", SPAWN_SLEEP, str(pids_file)],
                           server_ids=[host.server_id])
    started = await run(api, task["id"])
    pids = await _pids(pids_file)
    status, out = await api.post(f"/api/tasks/{task['id']}/runs/{started['id']}/cancel", {})
    assert status == 202, out
    done = await finished(api, task["id"], started["id"])
    result = by_server(done)[host.server_id]
    assert done["state"] == "cancelled" and result["state"] == "cancelled"
    assert "cancelled by admin" in result["reason"]
    await _gone(pids)
    assert not pids_alive(pids)
    status, out = await api.post(f"/api/tasks/{task['id']}/runs/{started['id']}/cancel", {})
    assert status == 409 and "is over" in out["error"]
    status, out = await api.post(f"/api/tasks/{task['id']}/runs/{started['id']}/retry", {})
    assert status == 409 and "no failed" in out["error"]  # cancelled is not retried

    # retry: fails the first time (no marker yet), succeeds the second
    marker = tmp_path / "marker"
    script = (f"import os, sys\np = {str(marker)!r}\n"
              "if os.path.exists(p): print('second try')\n"
              "else: open(p, 'w').close(); print('first try'); sys.exit(1)\n")
    flaky = await make_task(api, argv=[PY, "-c", script], server_ids=[host.server_id])
    first = await finished(api, flaky["id"], (await run(api, flaky["id"]))["id"])
    assert by_server(first)[host.server_id]["state"] == "failed"
    status, out = await api.post(f"/api/tasks/{flaky['id']}/runs/{first['id']}/retry", {})
    assert status == 202, out
    assert out["data"]["trigger"] == "retry" and out["data"]["retry_of"] == first["id"]
    second = await finished(api, flaky["id"], out["data"]["id"])
    result = by_server(second)[host.server_id]
    assert result["state"] == "succeeded" and result["output"] == "second try\n"


async def test_cancel_one_server_of_a_run(api: Api, agent_host: MakeHost) -> None:
    a = await agent_host("a", capabilities=["exec"])
    b = await agent_host("b", capabilities=["exec"])
    task = await make_task(api, argv=["sleep", "2"], server_ids=[a.server_id, b.server_id])
    started = await run(api, task["id"])
    status, out = await api.post(f"/api/tasks/{task['id']}/runs/{started['id']}/cancel",
                                 {"server_id": a.server_id})
    assert status == 202, out
    done = await finished(api, task["id"], started["id"])
    results = by_server(done)
    assert results[a.server_id]["state"] == "cancelled"
    assert results[b.server_id]["state"] == "succeeded"
    assert done["state"] == "finished"


async def test_offline_server_then_retry(api: Api, agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["exec"])
    host.stop()
    await wait_online(api, host.server_id, online=False)
    task = await make_task(api, argv=["/bin/echo", "back"], server_ids=[host.server_id])
    done = await finished(api, task["id"], (await run(api, task["id"]))["id"])
    result = by_server(done)[host.server_id]
    assert result["state"] == "offline" and "offline" in result["reason"]
    host.start()
    await wait_online(api, host.server_id)
    status, out = await api.post(f"/api/tasks/{task['id']}/runs/{done['id']}/retry", {})
    assert status == 202, out
    again = await finished(api, task["id"], out["data"]["id"])
    assert by_server(again)[host.server_id]["output"] == "back\n"


async def test_exec_off_on_the_agent_though_the_record_says_on(
        api: Api, agent_host: MakeHost, db: asyncpg.Connection) -> None:
    host = await agent_host(capabilities=["files"], files={"roots": ["/tmp"]})
    task = await make_task(api, argv=["/bin/true"], server_ids=[host.server_id])
    # the server's own record refuses at once
    done = await finished(api, task["id"], (await run(api, task["id"]))["id"])
    result = by_server(done)[host.server_id]
    assert result["state"] == "denied" and "does not allow exec" in result["reason"]
    # a record that (wrongly) says exec is on: the agent refuses itself, with its reason
    await db.execute("UPDATE servers SET capabilities = '{exec,files}' WHERE id = $1",
                     host.server_id)
    done = await finished(api, task["id"], (await run(api, task["id"]))["id"])
    result = by_server(done)[host.server_id]
    assert result["state"] == "denied"
    assert "exec capability is off on this host" in result["reason"]


async def test_viewer_and_member_are_refused_everywhere(
        api: Api, agent_host: MakeHost, new_api: Any) -> None:
    host = await agent_host(capabilities=["exec"])
    task = await make_task(api, argv=["/bin/true"], server_ids=[host.server_id])
    done = await finished(api, task["id"], (await run(api, task["id"]))["id"])
    base = f"/api/tasks/{task['id']}"
    one = f"{base}/runs/{done['id']}"
    calls = [("GET", "/api/tasks", None), ("POST", "/api/tasks", {"name": "x"}),
             ("GET", base, None), ("PUT", base, {"name": "x"}), ("DELETE", base, None),
             ("POST", f"{base}/run", {}), ("GET", f"{base}/results", None),
             ("GET", one, None), ("POST", f"{one}/cancel", {}), ("POST", f"{one}/retry", {}),
             ("GET", f"{one}/events", None),
             ("GET", f"{one}/servers/{host.server_id}/log", None)]
    for role in ("viewer", "member"):
        status, out = await api.post("/api/users", {"username": role, "role": role,
                                                    "password": "a long passphrase 1"})
        assert status == 201, out
        other = await new_api()
        await other.login(role, "a long passphrase 1")
        for method, path, body in calls:
            status, out = await other.call(method, path, body)
            assert status == 403, (role, method, path, status, out)
    status, out = await api.get(base)
    assert status == 200  # nothing was deleted by them


async def test_scheduler_fires_a_due_task_once(
        api: Api, agent_host: MakeHost, client: TestClient[Any, Any],
        db: asyncpg.Connection) -> None:
    host = await agent_host(capabilities=["exec"])
    task = await make_task(api, argv=["/bin/echo", "tick"], server_ids=[host.server_id],
                           schedule="*/5 * * * *")
    due = dt.datetime.fromisoformat(task["next_run_at"])
    assert due.minute % 5 == 0 and due > dt.datetime.now(dt.UTC)
    app = client.app

    assert await tick(app, due - dt.timedelta(seconds=1)) == []  # not yet
    # two replicas ticking at the same moment: exactly one fires
    fired = await asyncio.gather(tick(app, due + dt.timedelta(seconds=3)),
                                 tick(app, due + dt.timedelta(seconds=4)))
    runs = [r for f in fired for r in f]
    assert len(runs) == 1
    assert await tick(app, due + dt.timedelta(seconds=30)) == []  # once a minute at most
    done = await finished(api, task["id"], runs[0])
    assert done["trigger"] == "schedule" and done["triggered_by"] is None
    assert by_server(done)[host.server_id]["output"] == "tick\n"
    status, out = await api.get(f"/api/tasks/{task['id']}")
    following = dt.datetime.fromisoformat(out["data"]["next_run_at"])
    assert following == due + dt.timedelta(minutes=5)
    assert out["data"]["last_run"]["id"] == runs[0]

    # after downtime: a firing missed by long ago is skipped, and the next is from now
    later = following + MISSED_GRACE + dt.timedelta(hours=3, minutes=1)
    assert await tick(app, later) == []
    status, out = await api.get(f"/api/tasks/{task['id']}")
    nxt = dt.datetime.fromisoformat(out["data"]["next_run_at"])
    assert later < nxt <= later + dt.timedelta(minutes=5)

    # disabled: never due
    body = {k: out["data"][k] for k in ("name", "argv", "server_ids", "schedule")}
    status, out = await api.put(f"/api/tasks/{task['id']}", {**body, "enabled": False})
    assert status == 200 and out["data"]["next_run_at"] is None
    assert await tick(app, later + dt.timedelta(days=1)) == []
    count = await db.fetchval("SELECT count(*) FROM task_runs WHERE task_id = $1", task["id"])
    assert count == 1


@pytest.mark.parametrize("path", ["/api/tasks/abc", "/api/tasks/0/runs/1"])
async def test_bad_ids(api: Api, path: str) -> None:
    await api.login()
    status, out = await api.get(path)
    assert status in (404, 422) and "error" in out


async def test_runs_of_a_replica_that_died_are_not_left_running(
        api: Api, agent_host: MakeHost, client: TestClient[Any, Any],
        db: asyncpg.Connection) -> None:
    host = await agent_host(capabilities=["exec"])
    task = await make_task(api, argv=["sleep", "30"], server_ids=[host.server_id])
    mine = await run(api, task["id"])  # running here: its heartbeat is kept up
    orphan = await db.fetchval(  # as a replica that died mid-run left it
        """INSERT INTO task_runs (task_id, trigger, command, heartbeat_at)
           VALUES ($1, 'manual', '{}', now() - interval '10 minutes') RETURNING id""",
        task["id"])
    await db.execute("INSERT INTO task_results (run_id, server_id, server_name, state) "
                     "VALUES ($1, $2, 'x', 'running')", orphan, host.server_id)
    await db.execute("UPDATE task_runs SET heartbeat_at = now() - interval '10 minutes' "
                     "WHERE id = $1", mine["id"])
    assert await keep_runs(client.app) == [orphan]
    status, out = await api.get(f"/api/tasks/{task['id']}/runs/{orphan}")
    assert out["data"]["state"] == "cancelled"
    assert "stopped before it finished" in out["data"]["results"][0]["reason"]
    status, out = await api.get(f"/api/tasks/{task['id']}/runs/{mine['id']}")
    assert out["data"]["state"] == "running"  # beaten, not abandoned
    status, out = await api.post(f"/api/tasks/{task['id']}/runs/{mine['id']}/cancel", {})
    assert status == 202

"""Docker through the API, a real agent process and a real Docker-API engine (podman,
started once for the session by tests/operations/podman.py): listings, stats,
events, each action with its effect checked against the engine, logs over the
WebSocket (tail and follow), a host without an engine, and who may do what."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from tests.conftest import Api
from tests.operations import podman as engine
from tests.operations.conftest import AgentHost, MakeHost
from tests.serverproc import clean_env

READ = ["docker_read"]
BOTH = ["docker_read", "docker_control"]
TICKER = ["sh", "-c", "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done"]


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[engine.Podman]:
    running = engine.start(tmp_path_factory.mktemp("podman"))
    yield running
    engine.stop(running)


def name() -> str:
    return f"bt-{uuid.uuid4().hex[:10]}"


def state(podman: engine.Podman, container: str) -> str:
    return str(podman.client.api.inspect_container(container)["State"]["Status"])


async def docker_host(agent_host: MakeHost, podman: engine.Podman,
                      capabilities: list[str], **kw: Any) -> AgentHost:
    return await agent_host(capabilities=capabilities, docker={"url": podman.url}, **kw)


async def read_logs(api: Api, server_id: int, **params: Any) -> tuple[bytes, dict[str, Any]]:
    """Open the logs socket, collect the binary messages up to the final text one."""
    query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
    data = bytearray()
    async with asyncio.timeout(30), api.client.ws_connect(
            f"/api/ws/docker/logs/{server_id}", params=query) as ws:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                data += msg.data
            elif msg.type == aiohttp.WSMsgType.TEXT:
                return bytes(data), json.loads(msg.data)
    raise AssertionError("the logs socket closed without its final message")


async def user_api(api: Api, new_api: Any, role: str) -> Api:
    username = f"{role}-{uuid.uuid4().hex[:6]}"
    status, body = await api.post("/api/users", {"username": username,
                                                 "password": "a long passphrase 9",
                                                 "role": role})
    assert status == 201, body
    other: Api = await new_api()
    await other.login(username, "a long passphrase 9")
    return other


async def test_reads_show_what_the_engine_has(
        api: Api, agent_host: MakeHost, podman: engine.Podman) -> None:
    t0 = int(time.time()) - 1
    cname = name()
    podman.run(cname, ["sleep", "300"], labels={"beeyard.test": "yes"})
    volume = podman.client.volumes.create(name())
    try:
        host = await docker_host(agent_host, podman, READ)
        base = f"/api/servers/{host.server_id}/docker"

        status, body = await api.get(f"{base}/containers")
        assert status == 200, body
        mine = [c for c in body["data"]["containers"] if c["name"] == cname]
        assert len(mine) == 1, body
        assert mine[0]["state"] == "running" and mine[0]["image"] == podman.image
        assert mine[0]["labels"] == {"beeyard.test": "yes"}
        assert len(mine[0]["id"]) == 64 and body["data"]["truncated"] is False

        status, body = await api.get(f"{base}/info")
        assert status == 200, body
        assert body["data"]["engine"] == "podman"
        assert body["data"]["info"]["ContainersRunning"] >= 1
        assert body["data"]["version"]["ApiVersion"]

        status, body = await api.get(f"{base}/stats", params={"container": cname})
        assert status == 200, body
        [reading] = body["data"]["stats"]
        assert reading["name"] == cname and reading["pids"] == 1
        assert reading["memory_bytes"] > 0 and reading["memory_limit_bytes"] > 0
        assert reading["cpu_percent"] is not None and 0 <= reading["cpu_percent"] <= 200
        status, body = await api.get(f"{base}/stats")
        assert status == 200, body
        assert cname in {s["name"] for s in body["data"]["stats"]}

        status, body = await api.get(f"{base}/networks")
        assert status == 200, body
        assert body["data"]["networks"], body  # podman's default network at least
        assert all(n["name"] and n["driver"] for n in body["data"]["networks"])

        status, body = await api.get(f"{base}/volumes")
        assert status == 200, body
        assert volume.name in {v["name"] for v in body["data"]["volumes"]}

        status, body = await api.get(f"{base}/events", params={"since": str(t0)})
        assert status == 200, body
        actions = {e["action"] for e in body["data"]["events"] if e["name"] == cname}
        assert {"create", "start"} <= actions, body["data"]["events"]
        assert body["data"]["until"] <= time.time() + 1  # never a follow
        status, body = await api.get(f"{base}/events", params={"since": str(t0), "limit": "1"})
        assert status == 200 and len(body["data"]["events"]) == 1
        assert body["data"]["truncated"] is True
    finally:
        podman.client.containers.get(cname).remove(force=True)
        volume.remove(force=True)


async def test_each_action_changes_the_container(
        api: Api, agent_host: MakeHost, podman: engine.Podman) -> None:
    cname = name()
    podman.run(cname, ["sleep", "300"])
    host = await docker_host(agent_host, podman, BOTH)
    url = f"/api/servers/{host.server_id}/docker/containers/{cname}/action"

    async def act(action: str, **extra: Any) -> dict[str, Any]:
        status, body = await api.post(url, {"action": action, **extra})
        assert status == 200, (action, body)
        return body["data"]  # type: ignore[no-any-return]

    assert (await act("pause"))["state"] == "paused" and state(podman, cname) == "paused"
    assert (await act("unpause"))["state"] == "running" and state(podman, cname) == "running"
    assert (await act("stop", timeout=0))["state"] == "exited"
    assert state(podman, cname) == "exited"

    status, body = await api.post(url, {"action": "pause"})  # a stopped container
    assert status == 422 and "pause" in body["error"], body

    assert (await act("start"))["state"] == "running" and state(podman, cname) == "running"
    started = podman.client.api.inspect_container(cname)["State"]["StartedAt"]
    assert (await act("restart", timeout=0))["state"] == "running"
    assert podman.client.api.inspect_container(cname)["State"]["StartedAt"] != started

    status, body = await api.post(url, {"action": "remove"})  # running, without force
    assert status == 422 and state(podman, cname) == "running", body
    result = await act("remove", force=True)
    assert result["state"] == "removed"
    assert cname not in {c.name for c in podman.client.containers.list(all=True)}

    status, body = await api.post(url, {"action": "start"})
    assert status == 404 and cname in body["error"], body

    status, body = await api.get("/api/audit-logs", params={"action": "docker.action"})
    assert status == 200, body
    records = [r for r in body["data"] if r.get("target") == f"server:{host.server_id}"]
    assert len(records) >= 9 and {r["detail"]["action"] for r in records} >= {
        "pause", "unpause", "stop", "start", "restart", "remove"}


async def test_unknown_container_is_404_everywhere(
        api: Api, agent_host: MakeHost, podman: engine.Podman) -> None:
    host = await docker_host(agent_host, podman, BOTH)
    base = f"/api/servers/{host.server_id}/docker"
    status, body = await api.get(f"{base}/stats", params={"container": "no-such-container"})
    assert status == 404 and "no-such-container" in body["error"], body
    status, body = await api.post(f"{base}/containers/no-such-container/action",
                                  {"action": "stop"})
    assert status == 404, body
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await read_logs(api, host.server_id, container="no-such-container")
    assert err.value.status == 404


async def test_logs_tail_timestamps_and_follow(
        api: Api, agent_host: MakeHost, podman: engine.Podman) -> None:
    done = name()
    podman.run(done, ["sh", "-c", "for i in $(seq 1 50); do echo out $i; done; "
                                  "echo err line >&2"])
    ticker = name()
    podman.run(ticker, TICKER)
    host = await docker_host(agent_host, podman, READ)
    podman.client.api.wait(done, timeout=30)

    data, end = await read_logs(api, host.server_id, container=done, tail=3)
    assert data.decode().splitlines() == ["out 49", "out 50", "err line"], data
    assert end == {"type": "end", "bytes": len(data)}

    data, end = await read_logs(api, host.server_id, container=done, tail=100)
    assert len(data.decode().splitlines()) == 51 and end["type"] == "end"

    data, _ = await read_logs(api, host.server_id, container=done, tail=2, timestamps=True)
    lines = data.decode().splitlines()
    assert len(lines) == 2 and lines[1].endswith(" err line") and lines[1][:2] == "20", lines

    data, end = await read_logs(api, host.server_id, container=done, tail=0)
    assert data == b"" and end == {"type": "end", "bytes": 0}

    # follow: new lines keep coming until the browser closes the socket
    seen = bytearray()
    async with asyncio.timeout(30), api.client.ws_connect(
            f"/api/ws/docker/logs/{host.server_id}",
            params={"container": ticker, "tail": "1", "follow": "true"}) as ws:
        while seen.count(b"\n") < 8:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            seen += msg.data
    numbers = [int(line.split()[1]) for line in seen.decode().splitlines()]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers

    # the agent ended its call and the thread reading from the engine
    deadline = time.monotonic() + 10
    while ("cancelled by the server" not in host.output()
           or f"the log reader of container {ticker} ended" not in host.output()):
        assert time.monotonic() < deadline, host.output()[-3000:]
        await asyncio.sleep(0.1)
    # and the agent still serves: the link and the engine client are fine
    status, body = await api.get(f"/api/servers/{host.server_id}/docker/containers")
    assert status == 200, body

    # a followed container that stops ends the stream with its end message
    stopper = name()
    podman.run(stopper, ["sh", "-c", "echo first; sleep 1; echo last"])
    data, end = await read_logs(api, host.server_id, container=stopper, follow=True)
    assert data == b"first\nlast\n" and end["type"] == "end"
    deadline = time.monotonic() + 10  # written as the server's handler ends, just after
    while True:
        status, body = await api.get("/api/audit-logs", params={"action": "docker.logs"})
        assert status == 200, body
        if any(r["detail"].get("container") == stopper and r["detail"].get("bytes") == 11
               and r["outcome"] == "success" for r in body["data"]):
            break
        assert time.monotonic() < deadline, body["data"]
        await asyncio.sleep(0.1)


async def test_no_engine_is_unavailable_quickly_and_logged_once(
        api: Api, agent_host: MakeHost, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "docker.sock"
    host = await agent_host(capabilities=READ, docker={"url": f"unix://{missing}"})
    for path in ("containers", "info", "stats", "networks", "volumes", "events") * 4:
        started = time.monotonic()
        status, body = await api.get(f"/api/servers/{host.server_id}/docker/{path}")
        assert status == 503, body
        assert body["error"].startswith(f"no Docker engine at unix://{missing}: "), body
        assert time.monotonic() - started < 3
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await read_logs(api, host.server_id, container="anything")
    assert err.value.status == 503
    # 25 refusals, one warning line: no error storm in the agent's log
    assert host.output().count("said at most once a minute") == 1, host.output()[-3000:]
    assert "Traceback" not in host.output()


async def test_capability_off_on_the_agent_wins_over_the_servers_record(
        api: Api, agent_host: MakeHost, podman: engine.Podman, db: asyncpg.Connection) -> None:
    host = await docker_host(agent_host, podman, [])
    base = f"/api/servers/{host.server_id}/docker"
    status, body = await api.get(f"{base}/containers")  # the server's own early refusal
    assert status == 403 and "docker_read" in body["error"], body

    await db.execute("UPDATE servers SET capabilities = $2 WHERE id = $1",
                     host.server_id, BOTH)  # a stale or tampered record
    status, body = await api.get(f"{base}/containers")
    assert status == 403, body
    assert "docker_read capability is off on this host" in body["error"], body
    status, body = await api.post(f"{base}/containers/whatever/action", {"action": "stop"})
    assert status == 403 and "docker_control capability is off" in body["error"], body
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await read_logs(api, host.server_id, container="whatever")
    assert err.value.status == 403


async def test_read_without_control_reads_but_cannot_act(
        api: Api, agent_host: MakeHost, podman: engine.Podman, db: asyncpg.Connection) -> None:
    cname = name()
    podman.run(cname, ["sleep", "300"])
    host = await docker_host(agent_host, podman, READ)
    base = f"/api/servers/{host.server_id}/docker"
    status, body = await api.get(f"{base}/containers")
    assert status == 200 and cname in {c["name"] for c in body["data"]["containers"]}
    status, body = await api.post(f"{base}/containers/{cname}/action", {"action": "stop"})
    assert status == 403 and "docker_control" in body["error"], body
    await db.execute("UPDATE servers SET capabilities = $2 WHERE id = $1",
                     host.server_id, BOTH)
    status, body = await api.post(f"{base}/containers/{cname}/action", {"action": "stop"})
    assert status == 403 and "docker_control capability is off on this host" in body["error"]
    assert state(podman, cname) == "running"


async def test_member_reads_viewer_does_not_and_only_admin_acts(
        api: Api, new_api: Any, agent_host: MakeHost, podman: engine.Podman) -> None:
    cname = name()
    podman.run(cname, ["sh", "-c", "echo hello; sleep 300"])
    host = await docker_host(agent_host, podman, BOTH)
    member = await user_api(api, new_api, "member")
    viewer = await user_api(api, new_api, "viewer")
    base = f"/api/servers/{host.server_id}/docker"

    status, body = await member.get(f"{base}/containers")
    assert status == 200 and cname in {c["name"] for c in body["data"]["containers"]}
    data, end = await read_logs(member, host.server_id, container=cname)
    assert data == b"hello\n" and end["type"] == "end"
    status, body = await member.post(f"{base}/containers/{cname}/action", {"action": "stop"})
    assert status == 403, body
    assert state(podman, cname) == "running"

    for path in ("containers", "info", "stats", "events", "networks", "volumes"):
        status, body = await viewer.get(f"{base}/{path}")
        assert status == 403, (path, body)
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await read_logs(viewer, host.server_id, container=cname)
    assert err.value.status == 403
    status, body = await viewer.post(f"{base}/containers/{cname}/action", {"action": "stop"})
    assert status == 403 and state(podman, cname) == "running"
    podman.client.containers.get(cname).remove(force=True)


async def test_bad_input_is_a_clear_422(
        client: TestClient[Any, Any], api: Api, agent_host: MakeHost,
        podman: engine.Podman) -> None:
    host = await docker_host(agent_host, podman, BOTH)
    base = f"/api/servers/{host.server_id}/docker"
    for cid in ("-rf", ".hidden", "a%20b", "x" * 129, "a%2Fb", "%2e%2e%2Fx"):
        status, body = await api.post(f"{base}/containers/{cid}/action", {"action": "stop"})
        assert status == 422 and "cid" in body["error"], (cid, status, body)
    # a dot-dot segment is resolved by the URL itself: no route, never the agent
    status, body = await api.post(f"{base}/containers/%2e%2e/action", {"action": "stop"})
    assert status == 404, body
    status, body = await api.post(f"{base}/containers/abc/action", {"action": "explode"})
    assert status == 422 and "action" in body["error"], body
    status, body = await api.post(f"{base}/containers/abc/action",
                                  {"action": "stop", "timeout": -1})
    assert status == 422 and "timeout" in body["error"], body
    status, body = await api.get(f"{base}/stats", params={"container": "../etc"})
    assert status == 422 and "container" in body["error"], body
    status, body = await api.get(f"{base}/events", params={"since": "20", "until": "10"})
    assert status == 422 and "since" in body["error"], body
    status, body = await api.get(f"{base}/events", params={"limit": "0"})
    assert status == 422 and "limit" in body["error"], body
    status, body = await api.get(f"{base}/containers", params={"colour": "red"})
    assert status == 422 and "colour" in body["error"], body
    for params in ({"container": "x", "tail": "-1"}, {"container": "x", "tail": "many"},
                   {"container": "x", "follow": "maybe"}, {"tail": "5"},
                   {"container": "a/b"}):
        status, body = await api.get(f"/api/ws/docker/logs/{host.server_id}", params=params)
        assert status == 422, (params, body)
    status, body = await api.get(f"/api/ws/docker/logs/{host.server_id}",
                                 params={"container": "x"})
    assert status == 426, body  # not a WebSocket upgrade
    status, body = await api.get("/api/servers/999999/docker/containers")
    assert status == 404, body


def test_the_agent_loads_the_docker_library_only_when_asked() -> None:
    """The SDK (and requests) cost ~10 MB resident: an agent that is never asked about
    Docker must not import them, whatever it loads at start."""
    code = ("import sys, beeyard.agent.cli, beeyard.agent.link, beeyard.agent.operations, "
            "beeyard.shared.operations.docker, beeyard.agent.operations.docker as d; "
            "print(sorted(m for m in ('docker', 'requests', 'urllib3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, env=clean_env())
    assert out.stdout.strip() == "[]", out.stdout + out.stderr

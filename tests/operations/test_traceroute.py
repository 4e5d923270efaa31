"""Traceroute through the API and a real agent process: loopback (one hop), a target
two hops away through a router namespace this test builds, the agent's own refusal,
and who may start or read one.

The two-hop path is three network namespaces made here (client, router, target)
joined by veth pairs on private 10.233.x addresses; the agent runs inside the
client namespace (``ip netns exec``) and reaches the test's server through a relay
on a fourth veth pair's host side. Nothing leaves the machine; all of it is removed
at the end. Without ``ip netns`` that test skips (fails under BEEYARD_REQUIRE_ALL=1).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from tests.conftest import Api
from tests.operations.conftest import MakeHost, wait_online
from tests.serverproc import REQUIRE_ALL, clean_env


async def traced(api: Api, server_id: int, body: dict[str, Any],
                 within: float = 60) -> dict[str, Any]:
    """Start a traceroute and poll it until it is no longer running."""
    status, started = await api.post(f"/api/servers/{server_id}/traceroute", body)
    assert status == 202, started
    rid = started["data"]["request_id"]
    assert started["data"]["state"] == "running"
    deadline = time.monotonic() + within
    while True:
        status, got = await api.get(f"/api/servers/{server_id}/traceroute/{rid}")
        assert status == 200, got
        if got["data"]["state"] != "running":
            return got["data"]  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.1)


async def test_loopback_is_one_hop_and_reached(api: Api, agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["traceroute"])
    for target, address in (("127.0.0.1", "127.0.0.1"), ("::1", "::1"),
                            ("localhost", "127.0.0.1")):
        result = await traced(api, host.server_id, {"target": target})
        assert result["state"] == "done" and result["reached"] is True, result
        assert result["address"] == address and result["max_hops"] == 30
        [hop] = result["hops"]
        assert hop["ttl"] == 1 and hop["address"] == address and hop["reached"] is True
        assert 0 <= hop["rtt_ms"] < 1000


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          check=check)


def in_ns(ns: str, *args: str) -> None:
    ip("netns", "exec", ns, *args)


@dataclass
class Path2:
    """client → router → target, and the client's link to the host."""

    client: str
    host_addr: str
    router_addr: str  # the router's address on the client's side
    target_addr: str


@contextlib.contextmanager
def two_hop_path() -> Any:
    probe = f"btp-{secrets.token_hex(3)}"
    if ip("netns", "add", probe, check=False).returncode != 0:
        message = "cannot create network namespaces (ip netns add failed; needs root)"
        if REQUIRE_ALL:
            pytest.fail(message + " and BEEYARD_REQUIRE_ALL=1 forbids skipping")
        pytest.skip(message)
    ip("netns", "del", probe, check=False)
    sfx = secrets.token_hex(3)
    client, router, target = f"btc-{sfx}", f"btr-{sfx}", f"btt-{sfx}"
    b = random.randrange(0, 80) * 3
    host_if = f"bth{sfx}"
    net = [f"10.233.{b}", f"10.233.{b + 1}", f"10.233.{b + 2}"]
    try:
        for ns in (client, router, target):
            ip("netns", "add", ns)
            in_ns(ns, "ip", "link", "set", "lo", "up")
        # the host ↔ client link (the agent's way to the server): a /30 on this veth only
        ip("link", "add", host_if, "type", "veth", "peer", "name", f"btH{sfx}")
        ip("link", "set", f"btH{sfx}", "netns", client)
        ip("addr", "add", f"{net[0]}.1/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        in_ns(client, "ip", "addr", "add", f"{net[0]}.2/30", "dev", f"btH{sfx}")
        in_ns(client, "ip", "link", "set", f"btH{sfx}", "up")
        # client ↔ router ↔ target
        for left, right, lif, rif, subnet in ((client, router, f"bc{sfx}", f"br{sfx}", net[1]),
                                              (router, target, f"bs{sfx}", f"bt{sfx}", net[2])):
            ip("link", "add", lif, "netns", left, "type", "veth", "peer", "name", rif,
               "netns", right)
            in_ns(left, "ip", "addr", "add", f"{subnet}.{2 if left == client else 1}/24",
                  "dev", lif)
            in_ns(right, "ip", "addr", "add", f"{subnet}.{1 if left == client else 2}/24",
                  "dev", rif)
            in_ns(left, "ip", "link", "set", lif, "up")
            in_ns(right, "ip", "link", "set", rif, "up")
        in_ns(router, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
        in_ns(client, "ip", "route", "add", f"{net[2]}.0/24", "via", f"{net[1]}.1")
        in_ns(target, "ip", "route", "add", f"{net[1]}.0/24", "via", f"{net[2]}.1")
        yield Path2(client, f"{net[0]}.1", f"{net[1]}.1", f"{net[2]}.2")
    finally:
        for ns in (client, router, target):
            ip("netns", "del", ns, check=False)  # takes its veth ends, and so the pairs
        ip("link", "del", host_if, check=False)


@contextlib.asynccontextmanager
async def relay(listen: str, port: int) -> AsyncIterator[int]:
    """A TCP relay from ``listen`` (the host side of the client's veth) to the test's
    server on 127.0.0.1:``port``; yields the relay's port."""
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        for t in (asyncio.create_task(pipe(reader, up_writer)),
                  asyncio.create_task(pipe(up_reader, writer))):
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    server = await asyncio.start_server(serve, listen, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_two_hops_through_a_router_namespace(
        client: TestClient[Any, Any], api: Api, agent_host: MakeHost) -> None:
    with two_hop_path() as path:
        async with relay(path.host_addr, client.server.port) as relay_port:
            host = await agent_host(capabilities=["traceroute"], start=False)
            host.configure(server=f"http://{path.host_addr}:{relay_port}")
            host.proc = subprocess.Popen(
                ["ip", "netns", "exec", path.client, sys.executable, "-m",
                 "beeyard.agent.cli", "run", "--config", str(host.config),
                 "--log-level", "debug"],
                stdin=subprocess.DEVNULL, stdout=host.log.open("ab"),
                stderr=subprocess.STDOUT, env=clean_env(host.env))
            try:
                await wait_online(api, host.server_id)
                result = await traced(api, host.server_id,
                                      {"target": path.target_addr, "max_hops": 8,
                                       "timeout": 2})
                assert result["state"] == "done" and result["reached"] is True, result
                hops = result["hops"]
                assert [h["address"] for h in hops] == [path.router_addr, path.target_addr]
                assert [h["reached"] for h in hops] == [False, True]
                assert all(h["rtt_ms"] is not None and h["rtt_ms"] >= 0 for h in hops)

                # a target past the router that nobody has: the router answers hop 1,
                # then silence until max_hops
                unknown = path.target_addr.rsplit(".", 1)[0] + ".99"
                result = await traced(api, host.server_id,
                                      {"target": unknown, "max_hops": 3, "timeout": 0.3})
                assert result["state"] == "done" and result["reached"] is False, result
                assert result["hops"][0]["address"] == path.router_addr
                assert len(result["hops"]) == 3

                # at most 4 at once on a host: a fifth is refused as busy (429)
                ids = []
                for _ in range(5):
                    status, body = await api.post(
                        f"/api/servers/{host.server_id}/traceroute",
                        {"target": unknown, "max_hops": 8, "timeout": 0.5})
                    assert status == 202, body
                    ids.append(body["data"]["request_id"])
                outcomes = []
                for rid in ids:
                    deadline = time.monotonic() + 30
                    while True:
                        status, got = await api.get(
                            f"/api/servers/{host.server_id}/traceroute/{rid}")
                        if got["data"]["state"] != "running":
                            break
                        assert time.monotonic() < deadline, got
                        await asyncio.sleep(0.1)
                    outcomes.append(got["data"])
                assert [o["state"] for o in outcomes] == ["done"] * 4 + ["failed"], outcomes
                assert outcomes[4]["status"] == 429 and "4 traceroutes" in outcomes[4]["error"]
            finally:
                host.stop()


async def test_capability_off_is_403_with_the_agents_reason(
        api: Api, agent_host: MakeHost, db: asyncpg.Connection) -> None:
    host = await agent_host(capabilities=[])
    status, body = await api.post(f"/api/servers/{host.server_id}/traceroute",
                                  {"target": "127.0.0.1"})
    assert status == 403 and "traceroute" in body["error"], body
    await db.execute("UPDATE servers SET capabilities = $2 WHERE id = $1",
                     host.server_id, ["traceroute"])  # the server's record says yes
    result = await traced(api, host.server_id, {"target": "127.0.0.1"})
    assert result["state"] == "failed" and result["status"] == 403, result
    assert "traceroute capability is off on this host" in result["error"]
    assert "hops" not in result


async def test_who_may_start_and_read(api: Api, new_api: Any, agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["traceroute"])
    base = f"/api/servers/{host.server_id}/traceroute"
    result = await traced(api, host.server_id, {"target": "127.0.0.1", "max_hops": 2})
    rid = result["request_id"]
    users = {}
    for role in ("member", "viewer"):
        name = f"{role}-{uuid.uuid4().hex[:6]}"
        status, body = await api.post("/api/users", {"username": name, "role": role,
                                                     "password": "a long passphrase 9"})
        assert status == 201, body
        users[role] = await new_api()
        await users[role].login(name, "a long passphrase 9")
    status, body = await users["member"].get(f"{base}/{rid}")
    assert status == 200 and body["data"]["reached"] is True
    status, body = await users["member"].post(base, {"target": "127.0.0.1"})
    assert status == 403, body
    status, body = await users["viewer"].get(f"{base}/{rid}")
    assert status == 403, body
    # another server's id does not find it
    other = await agent_host(capabilities=["traceroute"])
    status, body = await api.get(f"/api/servers/{other.server_id}/traceroute/{rid}")
    assert status == 404, body


async def test_bad_input_is_a_clear_4xx(api: Api, agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["traceroute"])
    base = f"/api/servers/{host.server_id}/traceroute"
    for body, field in (({"target": "-rf"}, "target"), ({"target": "a b"}, "target"),
                        ({"target": "x;reboot"}, "target"), ({}, "target"),
                        ({"target": "127.0.0.1", "max_hops": 0}, "max_hops"),
                        ({"target": "127.0.0.1", "max_hops": 65}, "max_hops"),
                        ({"target": "127.0.0.1", "timeout": 60}, "timeout"),
                        ({"target": "127.0.0.1", "port": 53}, "port")):
        status, got = await api.post(base, body)
        assert status == 422 and field in got["error"], (body, got)
    status, got = await api.get(f"{base}/short")
    assert status == 422 and "request_id" in got["error"], got
    status, got = await api.get(f"{base}/{'A' * 22}")
    assert status == 404, got
    status, got = await api.post("/api/servers/999999/traceroute", {"target": "127.0.0.1"})
    assert status == 404, got

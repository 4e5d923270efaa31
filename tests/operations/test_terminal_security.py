"""Who may open a terminal, and with what: channel tokens (single-use, expiring, bound to
one principal and one server), roles, the agent's own refusal when the server's record
of its capabilities is wrong, and frames from a buggy or hostile server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from tests.conftest import Api
from tests.operations.conftest import MakeHost
from tests.operations.terminal_client import connect, mint, open_terminal, refused, wait_dead

from beeyard.server.api import terminal as terminal_api
from beeyard.server.api.terminal import channel_tokens, sessions
from beeyard.server.hub.agents import HUB
from beeyard.server.hub.calls import RemoteError

PASSWORD = "terminal test passphrase 1"
SH = {"shell": "/bin/sh"}


async def user_api(api: Api, new_api: Any, name: str, role: str) -> Api:
    status, body = await api.post("/api/users", {"username": name, "password": PASSWORD,
                                                 "role": role})
    assert status == 201, body
    other: Api = await new_api()
    await other.login(name, PASSWORD)
    return other


async def test_a_token_works_only_for_the_principal_that_minted_it(
        api: Api, new_api: Any, agent_host: MakeHost, client: TestClient[Any, Any]) -> None:
    host = await agent_host(capabilities=["terminal"], terminal=SH)
    bob = await user_api(api, new_api, "bob", "admin")
    token = await mint(api, host.server_id)
    status, reason = await refused(bob, host.server_id, token)
    assert status == 403 and "another user or session" in reason  # bob cannot use it ...
    status, reason = await refused(api, host.server_id, token)
    assert status == 403 and "already used" in reason  # ... and it is spent
    # the same user in another browser session is another principal too
    alice_elsewhere: Api = await new_api()
    await alice_elsewhere.login()
    status, _ = await refused(alice_elsewhere, host.server_id, await mint(api, host.server_id))
    assert status == 403

    # Two admins at once: each sees only what their own shell prints.
    mine = await open_terminal(api, host.server_id)
    theirs = await open_terminal(bob, host.server_id)
    await mine.type("echo mine-$((40+2))\r")
    await theirs.type("echo theirs-$((50+5))\r")
    await mine.read_until(r"mine-42")
    await theirs.read_until(r"theirs-55")
    await asyncio.sleep(0.3)
    assert b"theirs" not in mine.output and b"mine" not in theirs.output
    registry = sessions(client.app)
    admin_id = (await api.get("/api/auth/me"))[1]["data"]["user"]["id"]
    bob_id = (await bob.get("/api/auth/me"))[1]["data"]["user"]["id"]
    assert [s.owner for s in registry.of(admin_id)] == [admin_id]
    assert [s.owner for s in registry.of(bob_id)] == [bob_id]
    await mine.ws.close()
    await theirs.ws.close()


async def test_tokens_are_single_use_expire_and_name_one_server(
        api: Api, agent_host: MakeHost, client: TestClient[Any, Any]) -> None:
    host = await agent_host(capabilities=["terminal"], terminal=SH)
    other = await agent_host(capabilities=["terminal"], terminal=SH)
    token = await mint(api, host.server_id)
    # a request that is not an upgrade is answered 426 and does not spend it
    async with api.client.get(f"/api/ws/terminal/{host.server_id}",
                              params={"token": token}) as resp:
        assert resp.status == 426
    term = await connect(api, host.server_id, token)
    await term.type("echo once-$((1*1))\r")
    await term.read_until(r"once-1")
    await term.ws.close()
    status, reason = await refused(api, host.server_id, token)
    assert status == 403 and "already used" in reason

    status, reason = await refused(api, other.server_id, await mint(api, host.server_id))
    assert status == 403 and f"server {host.server_id}" in reason

    store = channel_tokens(client.app)
    store.ttl = 0.3
    try:
        late = await mint(api, host.server_id)
        await asyncio.sleep(0.5)
        status, reason = await refused(api, host.server_id, late)
        assert status == 403 and "expired" in reason
    finally:
        store.ttl = 30.0
    status, reason = await refused(api, host.server_id, "bch_made-up")
    assert status == 403 and "unknown" in reason
    async with api.client.get(f"/api/ws/terminal/{host.server_id}") as resp:
        assert resp.status == 422 and "token" in (await resp.json())["error"]


async def test_the_agent_refuses_when_the_servers_record_is_wrong(
        api: Api, agent_host: MakeHost, db: asyncpg.Connection) -> None:
    host = await agent_host(capabilities=[], terminal=SH)
    status, body = await api.post(f"/api/ws/terminal/{host.server_id}/token")
    assert status == 403 and "does not allow terminal" in body["error"]  # refused early
    # The server's record says yes (stale, or tampered with): the agent still says no.
    await db.execute("UPDATE servers SET capabilities = '{terminal}' WHERE id = $1",
                     host.server_id)
    term = await open_terminal(api, host.server_id)
    end = await term.until_closed()
    assert end["code"] == "denied" and end["status"] == 403
    assert "terminal capability is off on this host" in end["error"]
    assert term.ws.close_code == 4403
    assert not term.output
    await asyncio.sleep(0.2)
    row = await db.fetchrow("SELECT outcome, status, detail FROM audit_logs WHERE action = "
                            "'terminal.end' AND target = $1", f"server:{host.server_id}")
    assert row is not None and row["outcome"] == "denied" and row["status"] == 403
    detail = json.loads(row["detail"]) if isinstance(row["detail"], str) else row["detail"]
    assert "capability is off" in detail["reason"]


async def test_members_viewers_and_read_keys_cannot_open_terminals(
        api: Api, new_api: Any, agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["terminal"], terminal=SH)
    token = await mint(api, host.server_id)
    for role in ("member", "viewer"):
        them = await user_api(api, new_api, f"t_{role}", role)
        status, body = await them.post(f"/api/ws/terminal/{host.server_id}/token")
        assert status == 403, body
        status, _ = await refused(them, host.server_id, token)  # not even with a token
        assert status == 403
    status, body = await api.post("/api/auth/api-keys", {"name": "ro", "scope": "read"})
    assert status == 201, body
    reader: Api = await new_api()
    reader.headers = {"Authorization": f"Bearer {body['data']['key']}"}
    status, body = await reader.post(f"/api/ws/terminal/{host.server_id}/token")
    assert status == 403, body


async def test_offline_and_unknown_servers_and_foreign_origins(
        api: Api, agent_host: MakeHost, db: asyncpg.Connection) -> None:
    host = await agent_host(capabilities=["terminal"], terminal=SH)
    status, body = await api.post("/api/ws/terminal/999999/token")
    assert status == 404 and "not found" in body["error"]
    token = await mint(api, host.server_id)
    try:
        await api.client.ws_connect(f"/api/ws/terminal/{host.server_id}",
                                    params={"token": token},
                                    headers={"Origin": "https://evil.example"})
        raise AssertionError("a cross-origin socket opened")
    except Exception as exc:
        assert getattr(exc, "status", None) == 403, exc
    reason = await db.fetchval("SELECT detail->>'reason' FROM audit_logs WHERE action = "
                               "'terminal.start' AND outcome = 'denied'")
    assert "cross-origin" in reason
    term = await connect(api, host.server_id, token)  # the foreign page did not spend it
    await term.type("echo own-$((4+4))\r")
    await term.read_until(r"own-8")
    await term.ws.close()
    await asyncio.to_thread(host.stop)
    for _ in range(100):
        status, body = await api.post(f"/api/ws/terminal/{host.server_id}/token")
        if status == 404:
            break
        await asyncio.sleep(0.1)
    assert status == 404 and "offline" in body["error"]


async def test_bad_frames_from_the_server_cannot_hurt_the_agent(
        client: TestClient[Any, Any], agent_host: MakeHost) -> None:
    """A buggy or hostile server: invalid open arguments, bad signals, input after eof."""
    host = await agent_host(capabilities=["terminal"], terminal=SH)
    hub = client.app[HUB]
    for args, field in [({"cols": 0}, "cols"), ({"term": "x; rm -rf /"}, "term"),
                        ({"rows": 10**9}, "rows"), ({"shell": "/bin/bash"}, "shell")]:
        bad = hub.call(host.server_id, "terminal.open", args)
        try:
            await bad.wait(10)
            raise AssertionError(f"{args} accepted")
        except RemoteError as exc:
            assert exc.code == "invalid" and field in exc.reason
    call = hub.call(host.server_id, "terminal.open", {"cols": 80, "rows": 24})
    for name, args in [("resize", {"cols": -1, "rows": 5}), ("resize", {"cols": "wide"}),
                       ("resize", {"cols": 10**6, "rows": 10**6}), ("explode", {}),
                       ("resize", {"cols": 50, "rows": 10, "extra": 1})]:
        call.signal(name, args)
    await call.send(b"stty size; echo alive-$((3*3))\r")
    out = b""
    async with asyncio.timeout(10):
        while b"alive-9" not in out:
            chunk = await call.receive()
            assert chunk is not None, out
            out += chunk
    assert b"24 80" in out  # no bad resize took effect
    await call.send(b"", eof=True)  # the server's eof ends the session
    result = await call.wait(10)
    assert result["ended"] == "input_closed"
    host_log = host.output()
    assert "ignored unknown signal 'explode'" in host_log and "ignored a resize" in host_log
    assert "Traceback" not in host_log


async def test_signing_out_ends_an_open_terminal(
        api: Api, agent_host: MakeHost, monkeypatch: pytest.MonkeyPatch,
        db: asyncpg.Connection) -> None:
    monkeypatch.setattr(terminal_api, "REAUTH", 0.2)
    host = await agent_host(capabilities=["terminal"], terminal=SH)
    term = await open_terminal(api, host.server_id)
    pids = await start_pids(term)
    status, _ = await api.post("/api/auth/logout")
    assert status == 200
    async with asyncio.timeout(10):
        while not term.ws.closed:
            await term.ws.receive()
    assert term.ws.close_code == 4001
    await wait_dead(pids, 2.0)
    for _ in range(100):
        ended = await db.fetchval("SELECT detail->>'ended' FROM audit_logs WHERE action = "
                                  "'terminal.end' AND target = $1", f"server:{host.server_id}")
        if ended:
            break
        await asyncio.sleep(0.05)
    assert ended == "credential_revoked"


async def start_pids(term: Any) -> list[int]:
    await term.type("sleep 1000 & echo PIDS:$$:$!\r")
    match = await term.read_until(r"PIDS:(\d+):(\d+)\b")
    return [int(match.group(1)), int(match.group(2))]

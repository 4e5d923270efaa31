"""The files capability's refusals, end to end with a real agent: path escapes,
deny patterns, the capability off on the host whatever the server's record says,
size caps, and frames from a malicious or buggy server that must not make the
agent act."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from tests.conftest import Api
from tests.operations.conftest import AgentHost, MakeHost, wait_online
from tests.operations.files_helpers import TEMP_GLOB, download, sha, tree, upload

from beeyard.server.hub.agents import HUB
from beeyard.server.hub.calls import Call, RemoteError
from beeyard.shared.frames import CHUNK, INPUT_WINDOW

DOTDOT = "'..' is not allowed in a path"
OUTSIDE = "the path is outside every configured root"
LINK_OUTSIDE = "a symbolic link in the path leads outside its root"


async def files_host(agent_host: MakeHost, tmp_path: Path,
                     **files: Any) -> tuple[AgentHost, Path, Path]:
    root, outside = tree(tmp_path / "data")
    (root / "out").symlink_to(outside)  # a directory link leaving the root
    (root / "secret.txt").symlink_to(outside / "secret.txt")  # a file link leaving it
    (root / "inner").symlink_to("sub")  # a link that stays inside: fine
    host = await agent_host(capabilities=["files"], files={"roots": [str(root)], **files})
    return host, root, outside


async def test_paths_that_leave_the_roots_are_refused_with_the_agents_reason(
        api: Api, agent_host: MakeHost, tmp_path: Path) -> None:
    host, root, outside = await files_host(agent_host, tmp_path)
    base = f"/api/files/{host.server_id}"
    cases = [
        ("sub/../../outside/secret.txt", DOTDOT),
        (f"{root}/../outside/secret.txt", DOTDOT),
        (str(outside / "secret.txt"), OUTSIDE),
        ("/etc/passwd", OUTSIDE),
        ("out/secret.txt", LINK_OUTSIDE),
        ("secret.txt", LINK_OUTSIDE),
    ]
    for path, reason in cases:
        for op, body in (("read", {"path": path}), ("stat", {"path": path}),
                         ("list", {"path": path}), ("download", {"path": path}),
                         ("write", {"path": path, "content": "pwned"}),
                         ("delete", {"path": path}), ("mkdir", {"path": path}),
                         ("move", {"source": "notes.txt", "destination": path})):
            if op in ("delete", "move") and path == "secret.txt":  # the link itself is
                continue  # inside: it may be deleted or replaced (below), never its target
            status, got = await api.post(f"{base}/{op}", body)
            assert status == 403, (op, path, got)
            assert got["error"] == reason, (op, path, got)
        status, got = await upload(api, host.server_id, path, b"pwned")
        assert (status, got["error"]) == (403, reason), (path, got)
    status, got = await api.post(f"{base}/list", {"path": "out"})
    assert (status, got["error"]) == (403, LINK_OUTSIDE)
    status, got = await api.post(f"{base}/read", {"path": "inner/deep.txt"})
    assert status == 200 and got["data"]["content"] == "deep"  # a link inside is followed

    assert (outside / "secret.txt").read_text() == "secret"  # nothing outside changed
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (root / "notes.txt").read_text() == "hello\nworld\n"
    status, got = await api.post(f"{base}/move", {"source": "notes.txt",
                                                  "destination": "secret.txt"})
    assert status == 409 and "exists" in got["error"]  # the link, not what it points at
    status, got = await api.post(f"{base}/delete", {"path": "secret.txt"})
    assert status == 200 and got["data"]["type"] == "link"
    assert not (root / "secret.txt").is_symlink()
    assert (outside / "secret.txt").read_text() == "secret"  # the link went, not its target


async def test_deny_patterns_refuse_every_operation(api: Api, agent_host: MakeHost,
                                                    tmp_path: Path) -> None:
    host, root, _ = await files_host(agent_host, tmp_path)
    base = f"/api/files/{host.server_id}"
    env, key = "denied by the pattern '.env*' (files.deny)", \
        "denied by the pattern '*.key' (files.deny)"
    for op, body, reason in (
        ("read", {"path": ".env"}, env),
        ("stat", {"path": str(root / "server.key")}, key),
        ("download", {"path": "server.key"}, key),
        ("write", {"path": ".env", "content": "X=1"}, env),
        ("write", {"path": "new.key", "content": "k"}, key),
        ("delete", {"path": ".env"}, env),
        ("move", {"source": ".env", "destination": "plain.txt"}, env),
        ("move", {"source": "notes.txt", "destination": "notes.key"}, key),
        ("mkdir", {"path": ".env.d"}, env),
    ):
        status, got = await api.post(f"{base}/{op}", body)
        assert (status, got["error"]) == (403, reason), (op, body, got)
    status, got = await upload(api, host.server_id, "upload.key", b"k")
    assert (status, got["error"]) == (403, key)

    (root / "box").mkdir()
    (root / "box" / ".env").write_text("S=1")
    status, got = await api.post(f"{base}/delete", {"path": "box", "recursive": True})
    assert status == 403 and ".env inside it is protected" in got["error"]
    status, got = await api.post(f"{base}/move", {"source": "box", "destination": "box2"})
    assert status == 403 and ".env inside it is protected" in got["error"]
    assert (root / "box" / ".env").read_text() == "S=1"
    assert (root / ".env").read_text() == "SECRET=1" and not (root / "new.key").exists()
    assert not list(root.rglob(TEMP_GLOB))


async def test_capability_off_on_the_agent_wins_over_the_servers_record(
        api: Api, agent_host: MakeHost, tmp_path: Path, db: asyncpg.Connection) -> None:
    root, _ = tree(tmp_path / "data")
    host = await agent_host(capabilities=[], files={"roots": [str(root)]})
    base = f"/api/files/{host.server_id}"
    status, got = await api.post(f"{base}/read", {"path": "notes.txt"})
    assert status == 403 and "does not allow files" in got["error"]  # the server's early no

    await db.execute("UPDATE servers SET capabilities = $2 WHERE id = $1", host.server_id,
                     ["files"])  # a stale or tampered record: the agent still decides
    agent_says = ("the files capability is off on this host; enable it in the agent's "
                  "config or for a while with `beeyard-agent grant files --for 30m`")
    for op, body in (("read", {"path": "notes.txt"}), ("list", {"path": "."}),
                     ("write", {"path": "notes.txt", "content": "x"}),
                     ("delete", {"path": "notes.txt"}), ("download", {"path": "notes.txt"})):
        status, got = await api.post(f"{base}/{op}", body)
        assert (status, got["error"]) == (403, agent_says), (op, got)
    status, got = await upload(api, host.server_id, "up.txt", b"data")
    assert (status, got["error"]) == (403, agent_says)
    assert (root / "notes.txt").read_text() == "hello\nworld\n" and not (root / "up.txt").exists()
    assert "refused files.read: the files capability is off" in host.output()


async def test_size_caps_are_413(api: Api, agent_host: MakeHost, tmp_path: Path) -> None:
    host, root, _ = await files_host(agent_host, tmp_path, max_read_bytes=1000,
                                     max_write_bytes=1000)
    base = f"/api/files/{host.server_id}"
    (root / "big.txt").write_text("x" * 2000)
    read_cap = "the file is larger than the limit of 1000 bytes (files.max_read_bytes)"
    write_cap = "the file is larger than the limit of 1000 bytes (files.max_write_bytes)"

    status, got = await api.post(f"{base}/read", {"path": "big.txt"})
    assert (status, got["error"]) == (413, read_cap)
    status, _, got = await download(api, host.server_id, "big.txt")
    assert (status, got["error"]) == (413, read_cap)
    status, got = await api.post(f"{base}/read", {"path": "notes.txt", "max_bytes": 5})
    assert status == 413 and "download it instead" in got["error"]
    status, got = await api.post(f"{base}/write", {"path": "w.txt", "content": "y" * 1001})
    assert (status, got["error"]) == (413, write_cap)
    status, got = await upload(api, host.server_id, "u.txt", b"z" * 1001)
    assert (status, got["error"]) == (413, write_cap)
    status, got = await api.post(f"{base}/write", {"path": "w.txt",
                                                   "content": "y" * (2 * 1024 * 1024 + 1)})
    assert status == 413 and "upload the file instead" in got["error"]  # the editor's cap
    assert not (root / "w.txt").exists() and not (root / "u.txt").exists()
    assert not list(root.rglob(TEMP_GLOB))

    status, got = await upload(api, host.server_id, "ok.txt", b"z" * 1000)
    assert status == 201 and (root / "ok.txt").read_bytes() == b"z" * 1000


# --- a malicious or buggy server, at the frame level ---------------------------


def call(client: TestClient[Any, Any], host: AgentHost, op: str, args: dict[str, Any],
         window: int | None = None) -> Call:
    return client.server.app[HUB].call(host.server_id, op, args, window)


async def _drain(pending: Call) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while await pending.receive() is not None:
            pass
        return await pending.wait(20)


async def refused(pending: Call) -> RemoteError:
    with pytest.raises(RemoteError) as err:
        await _drain(pending)
    return err.value


async def test_frames_outside_the_declarations_do_not_make_the_agent_act(
        client: TestClient[Any, Any], api: Api, agent_host: MakeHost, tmp_path: Path) -> None:
    host, root, outside = await files_host(agent_host, tmp_path)

    # arguments the declaration does not have cannot widen the policy
    err = await refused(call(client, host, "files.read", {
        "path": str(outside / "secret.txt"), "roots": [str(outside)], "deny": []}))
    assert err.code == "invalid" and "roots" in err.reason
    err = await refused(call(client, host, "files.write", {
        "path": "notes.txt", "content": "not bytes"}))
    assert err.code == "invalid" and "args.content" in err.reason
    err = await refused(call(client, host, "files.read", {"path": "notes.txt",
                                                          "max_bytes": 64 * 1024 * 1024}))
    assert err.code == "invalid" and "args.max_bytes" in err.reason
    err = await refused(call(client, host, "files.delete", {"path": ["notes.txt"]}))
    assert err.code == "invalid" and "args.path" in err.reason
    err = await refused(call(client, host, "files.read", {"path": "../outside/secret.txt"}))
    assert err.code == "denied" and err.reason == DOTDOT

    # data beyond the input window: the upload ends, its temporary file goes, nothing lands
    link = client.server.app[HUB].links[host.server_id]
    payload = b"\x00" * CHUNK
    pending = call(client, host, "files.upload", {"path": "flood.bin", "size": 64 * CHUNK,
                                                  "sha256": sha(payload * 64)})
    for _ in range(2 * INPUT_WINDOW // CHUNK + 4):  # no waiting for the agent's credit
        link.send("data", {"data": payload, "eof": False}, pending.id)
    err = await refused(pending)
    assert err.code == "invalid" and "more input than its window allows" in err.reason
    assert not (root / "flood.bin").exists()
    for _ in range(50):
        if not list(root.glob(TEMP_GLOB)):
            break
        await asyncio.sleep(0.05)
    assert not list(root.glob(TEMP_GLOB))

    # data pushed into a download (which takes none) ends that call; nothing is written
    (root / "big.bin").write_bytes(b"\x01" * (4 * CHUNK))
    pending = call(client, host, "files.download", {"path": "big.bin"}, window=1)
    async with asyncio.timeout(20):
        assert await pending.receive()  # it is under way, waiting for credit
    link.send("data", {"data": b"overwrite", "eof": True}, pending.id)
    err = await refused(pending)
    assert err.code == "invalid" and "takes no input" in err.reason
    assert (root / "big.bin").read_bytes() == b"\x01" * (4 * CHUNK)

    # a digest signal cannot replace the checksum the request carried
    good = b"checked"
    pending = call(client, host, "files.upload", {"path": "sig.txt", "size": len(good),
                                                  "sha256": sha(good)})
    pending.signal("digest", {"sha256": sha(b"other")})
    await pending.send(good, eof=True)
    assert (await pending.wait(20))["sha256"] == sha(good)
    pending = call(client, host, "files.upload", {"path": "sig2.txt", "size": 3,
                                                  "sha256": sha(b"abc")})
    pending.signal("digest", {"sha256": sha(b"xyz")})
    await pending.send(b"xyz", eof=True)
    err = await refused(pending)
    assert err.code == "invalid" and "SHA-256" in err.reason and not (root / "sig2.txt").exists()

    # the agent is still there and still answers
    await wait_online(api, host.server_id)
    status, got = await api.post(f"/api/files/{host.server_id}/read", {"path": "sig.txt"})
    assert status == 200 and got["data"]["content"] == "checked"
    assert host.proc is not None and host.proc.poll() is None

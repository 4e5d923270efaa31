"""Files through the REST API and a real agent process: browse and edit, transfers
with their content and checksums, progress and cancelling."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from tests.conftest import Api
from tests.operations.conftest import AgentHost, MakeHost
from tests.operations.files_helpers import (
    TEMP_GLOB,
    download,
    fetch,
    headers,
    sha,
    tree,
    upload,
)


async def files_host(agent_host: MakeHost, tmp_path: Path, **files: Any) -> tuple[AgentHost, Path]:
    root, _ = tree(tmp_path / "data")
    host = await agent_host(capabilities=["files"], files={"roots": [str(root)], **files})
    return host, root


async def test_list_stat_read(api: Api, agent_host: MakeHost, tmp_path: Path,
                              db: asyncpg.Connection) -> None:
    host, root = await files_host(agent_host, tmp_path)
    base = f"/api/files/{host.server_id}"

    status, body = await api.post(f"{base}/list", {"path": str(root)})
    assert status == 200, body
    listing = body["data"]
    assert [e["name"] for e in listing["entries"]] == ["bin.dat", "notes.txt", "sub"]
    assert listing["hidden"] == 2  # .env and server.key match the default deny patterns
    by_name = {e["name"]: e for e in listing["entries"]}
    assert by_name["sub"]["type"] == "dir" and by_name["notes.txt"]["type"] == "file"
    assert by_name["notes.txt"]["size"] == 12 and by_name["bin.dat"]["size"] == 256

    status, body = await api.post(f"{base}/list", {"path": "sub"})  # relative: first root
    assert status == 200 and [e["name"] for e in body["data"]["entries"]] == ["deep.txt"]

    status, body = await api.post(f"{base}/stat", {"path": str(root / "notes.txt")})
    assert status == 200, body
    assert body["data"]["type"] == "file" and body["data"]["size"] == 12
    assert body["data"]["uid"] == os.getuid()

    status, body = await api.post(f"{base}/read", {"path": str(root / "notes.txt")})
    assert status == 200, body
    assert body["data"]["encoding"] == "utf-8" and body["data"]["content"] == "hello\nworld\n"

    status, body = await api.post(f"{base}/read", {"path": "bin.dat"})
    assert status == 200 and body["data"]["encoding"] == "base64"
    assert base64.b64decode(body["data"]["content"]) == bytes(range(256))

    status, body = await api.post(f"{base}/read", {"path": "missing.txt"})
    assert status == 404 and "no such file" in body["error"]
    status, body = await api.post(f"{base}/list", {"path": "notes.txt"})
    assert status == 422 and "not a directory" in body["error"]

    rows = await db.fetch("SELECT action, outcome, target, detail FROM audit_logs "
                          "WHERE action LIKE 'files.%' ORDER BY id")
    assert [r["action"] for r in rows][:3] == ["files.list", "files.list", "files.stat"]
    assert all(r["target"] == f"server:{host.server_id}" for r in rows)
    assert rows[-2]["detail"]["path"] == "missing.txt"
    assert rows[-2]["detail"]["op"] == "files.read"
    assert [r["outcome"] for r in rows][-2:] == ["failure", "failure"]


async def test_write_mkdir_move_delete(api: Api, agent_host: MakeHost, tmp_path: Path) -> None:
    host, root = await files_host(agent_host, tmp_path)
    base = f"/api/files/{host.server_id}"

    status, body = await api.post(f"{base}/write", {"path": "new.txt", "content": "né\n"})
    assert status == 200, body
    assert (root / "new.txt").read_text() == "né\n" and body["data"]["size"] == 4
    assert (root / "new.txt").stat().st_mode & 0o777 == 0o644
    os.chmod(root / "notes.txt", 0o600)
    status, body = await api.post(f"{base}/write", {"path": "notes.txt", "content": "AAEC",
                                                    "encoding": "base64"})
    assert status == 200, body
    assert (root / "notes.txt").read_bytes() == b"\x00\x01\x02"
    assert (root / "notes.txt").stat().st_mode & 0o777 == 0o600  # the file keeps its mode
    status, body = await api.post(f"{base}/write", {"path": "notes.txt", "content": "x",
                                                    "overwrite": False})
    assert status == 409 and "exists" in body["error"]
    status, body = await api.post(f"{base}/write", {"path": "sub", "content": "x"})
    assert status == 422 and "not a regular file" in body["error"]
    status, body = await api.post(f"{base}/write", {"path": "x", "content": "%%",
                                                    "encoding": "base64"})
    assert status == 422 and "base64" in body["error"]

    status, body = await api.post(f"{base}/mkdir", {"path": "a/b/c"})
    assert status == 404, body  # parents missing
    status, body = await api.post(f"{base}/mkdir", {"path": "a/b/c", "parents": True})
    assert status == 201, body
    assert (root / "a" / "b" / "c").is_dir()
    status, body = await api.post(f"{base}/mkdir", {"path": "a"})
    assert status == 409

    status, body = await api.post(f"{base}/move", {"source": "new.txt",
                                                   "destination": "a/b/moved.txt"})
    assert status == 200, body
    assert not (root / "new.txt").exists() and (root / "a/b/moved.txt").read_text() == "né\n"
    status, body = await api.post(f"{base}/move", {"source": "a/b/moved.txt",
                                                   "destination": "notes.txt"})
    assert status == 409 and "exists" in body["error"]
    status, body = await api.post(f"{base}/move", {"source": "a/b/moved.txt",
                                                   "destination": "notes.txt",
                                                   "overwrite": True})
    assert status == 200 and (root / "notes.txt").read_text() == "né\n"
    status, body = await api.post(f"{base}/move", {"source": "a", "destination": "a/b/a"})
    assert status == 422 and "into itself" in body["error"]
    status, body = await api.post(f"{base}/move", {"source": "a", "destination": "z"})
    assert status == 200 and (root / "z" / "b" / "c").is_dir()

    status, body = await api.post(f"{base}/delete", {"path": "z"})
    assert status == 422 and "not empty" in body["error"]
    status, body = await api.post(f"{base}/delete", {"path": "z", "recursive": True})
    assert status == 200 and not (root / "z").exists()
    (root / "link").symlink_to(root / "bin.dat")
    status, body = await api.post(f"{base}/delete", {"path": "link"})
    assert status == 200 and body["data"]["type"] == "link"
    assert not (root / "link").is_symlink() and (root / "bin.dat").exists()  # not its target
    status, body = await api.post(f"{base}/delete", {"path": str(root)})
    assert status == 403 and "root itself" in body["error"]
    assert not list(root.rglob(TEMP_GLOB))


async def test_download_and_upload_round_trip(api: Api, agent_host: MakeHost,
                                              tmp_path: Path) -> None:
    host, root = await files_host(agent_host, tmp_path)
    sid = host.server_id
    big = os.urandom(5 * 1024 * 1024 + 12345)  # several MB, not a multiple of a chunk

    status, body = await upload(api, sid, "up/big.bin", big, sha256=sha(big))
    assert status == 404, body  # the directory does not exist
    (root / "up").mkdir()
    status, body = await upload(api, sid, "up/big.bin", big, sha256=sha(big))
    assert status == 201, body
    done = body["data"]
    assert done["state"] == "done" and done["sha256"] == sha(big)
    assert done["bytes_done"] == done["size"] == len(big) and done["progress"] == 1.0
    assert (root / "up" / "big.bin").read_bytes() == big

    other = os.urandom(3 * 1024 * 1024)  # no sha256 given: the server computes it
    status, body = await upload(api, sid, "up/big.bin", other)
    assert status == 201 and body["data"]["sha256"] == sha(other)
    assert (root / "up" / "big.bin").read_bytes() == other

    status, body = await upload(api, sid, "up/big.bin", big, sha256=sha(b"other"))
    assert status == 422 and "SHA-256" in body["error"]
    assert (root / "up" / "big.bin").read_bytes() == other  # untouched
    status, body = await upload(api, sid, "up/big.bin", b"x", overwrite=False)
    assert status == 409
    status, body = await upload(api, sid, "up/empty", b"", mode=0o600)
    assert status == 201, body
    assert (root / "up" / "empty").read_bytes() == b""
    assert (root / "up" / "empty").stat().st_mode & 0o777 == 0o600
    assert not list(root.rglob(TEMP_GLOB))

    async def chunked() -> AsyncIterator[bytes]:
        yield b"no length"

    status, body = await upload(api, sid, "up/chunked.txt", chunked())
    assert status == 411 and "Content-Length" in body["error"]
    assert not (root / "up" / "chunked.txt").exists()

    status, data, got = await download(api, sid, "up/big.bin")
    assert status == 200, got
    assert data == other and got["Content-Length"] == str(len(other))
    assert got["Content-Disposition"].startswith('attachment; filename="big.bin"')
    status, data, got = await download(api, sid, "up/empty")
    assert status == 200 and data == b""

    status, body = await api.post(f"/api/files/{sid}/download", {"path": "notes.txt"})
    assert status == 201 and body["data"]["state"] == "ready"
    url = body["data"]["download_url"]
    status, data, _ = await fetch(api, url)
    assert status == 200 and data == b"hello\nworld\n"
    status, _, err = await fetch(api, url)
    assert status == 409 and "create a new one" in err["error"]  # fetched once

    status, body = await api.get("/api/files/transfers")
    assert status == 200
    states = {(t["kind"], t["path"], t["state"]) for t in body["data"]}
    assert ("download", "notes.txt", "done") in states
    assert ("upload", "up/big.bin", "failed") in states  # the one with the wrong checksum
    last = next(t for t in body["data"] if t["path"] == "notes.txt")
    assert last["sha256"] == sha(b"hello\nworld\n") and last["bytes_done"] == 12

    status, body = await api.post(f"/api/files/{sid}/download", {"path": "sub"})
    assert status == 422 and "not a regular file" in body["error"]


async def _slow(data: bytes, first: int, gate: asyncio.Event) -> AsyncIterator[bytes]:
    yield data[:first]
    await gate.wait()
    yield data[first:]


async def test_cancelled_upload_leaves_no_temp_file(api: Api, agent_host: MakeHost,
                                                    tmp_path: Path) -> None:
    host, root = await files_host(agent_host, tmp_path)
    payload = os.urandom(2 * 1024 * 1024)
    gate = asyncio.Event()
    sending = asyncio.create_task(upload(api, host.server_id, "notes.txt",
                                         _slow(payload, 600 * 1024, gate),
                                         length=len(payload), sha256=sha(payload)))
    transfer = None
    for _ in range(200):
        status, body = await api.get("/api/files/transfers")
        running = [t for t in body["data"] if t["state"] == "running" and t["bytes_done"]]
        if running and list(root.glob(TEMP_GLOB)):
            transfer = running[0]
            break
        await asyncio.sleep(0.05)
    assert transfer is not None, "the upload never got under way"
    assert transfer["size"] == len(payload) and 0 < transfer["progress"] < 1

    status, body = await api.delete(f"/api/files/transfers/{transfer['id']}")
    assert status == 200 and body["data"]["state"] == "cancelled"
    gate.set()
    status, body = await asyncio.wait_for(sending, 10)
    assert status == 409 and "cancelled by admin" in body["error"]
    for _ in range(100):
        if not list(root.glob(TEMP_GLOB)):
            break
        await asyncio.sleep(0.05)
    assert not list(root.glob(TEMP_GLOB)), "the temporary file was left behind"
    assert (root / "notes.txt").read_text() == "hello\nworld\n"  # untouched
    status, body = await api.delete(f"/api/files/transfers/{transfer['id']}")
    assert status == 409 and "already cancelled" in body["error"]

    # the client goes away mid-body: the same clean-up
    gate = asyncio.Event()
    sending = asyncio.create_task(upload(api, host.server_id, "notes.txt",
                                         _slow(payload, 600 * 1024, gate),
                                         length=len(payload), sha256=sha(payload)))
    for _ in range(200):
        if list(root.glob(TEMP_GLOB)):
            break
        await asyncio.sleep(0.05)
    assert list(root.glob(TEMP_GLOB)), "the second upload never got under way"
    sending.cancel()  # closes the client's connection
    for _ in range(100):
        status, body = await api.get("/api/files/transfers")
        if body["data"][0]["state"] != "running" and not list(root.glob(TEMP_GLOB)):
            break
        await asyncio.sleep(0.05)
    assert (body["data"][0]["state"], body["data"][0]["error"]) == (
        "cancelled", "the client went away")
    assert not list(root.glob(TEMP_GLOB)), "the temporary file was left behind"
    assert (root / "notes.txt").read_text() == "hello\nworld\n"

    # the agent stopped (SIGTERM) mid-upload: it removes the temporary file as it goes
    gate = asyncio.Event()
    sending = asyncio.create_task(upload(api, host.server_id, "notes.txt",
                                         _slow(payload, 600 * 1024, gate),
                                         length=len(payload), sha256=sha(payload)))
    for _ in range(200):
        if list(root.glob(TEMP_GLOB)):
            break
        await asyncio.sleep(0.05)
    assert list(root.glob(TEMP_GLOB)), "the third upload never got under way"
    assert await asyncio.to_thread(host.stop) == 0
    status, body = await asyncio.wait_for(sending, 10)
    assert status == 502 and "disconnected" in body["error"], body
    assert not list(root.glob(TEMP_GLOB)), "the temporary file was left behind"
    assert (root / "notes.txt").read_text() == "hello\nworld\n"
    assert "cancelled by the server: cancelled by admin" in host.output()


async def test_transfers_belong_to_their_owner(api: Api, new_api: Any, agent_host: MakeHost,
                                               tmp_path: Path, client: TestClient[Any, Any],
                                               ) -> None:
    host, root = await files_host(agent_host, tmp_path)
    from tests.conftest import ADMIN_PASSWORD
    for name, role in (("mia", "member"), ("vic", "viewer"), ("ada", "admin")):
        status, body = await api.post("/api/users", {"username": name, "role": role,
                                                     "password": ADMIN_PASSWORD})
        assert status == 201, body
    member, viewer, admin2 = await new_api(), await new_api(), await new_api()
    await member.login("mia")
    await viewer.login("vic")
    await admin2.login("ada")
    base = f"/api/files/{host.server_id}"

    status, body = await member.post(f"{base}/read", {"path": "notes.txt"})
    assert status == 200 and body["data"]["content"] == "hello\nworld\n"
    status, body = await member.post(f"{base}/list", {"path": "."})
    assert status == 200
    for op, payload in (("write", {"path": "notes.txt", "content": "x"}),
                        ("delete", {"path": "notes.txt"}), ("mkdir", {"path": "d"}),
                        ("move", {"source": "notes.txt", "destination": "n2"}),
                        ("download", {"path": "notes.txt"})):
        status, body = await member.post(f"{base}/{op}", payload)
        assert status == 403, (op, body)
    status, body = await upload(member, host.server_id, "up.txt", b"x")
    assert status == 403
    status, body = await viewer.post(f"{base}/read", {"path": "notes.txt"})
    assert status == 403
    status, body = await viewer.post(f"{base}/list", {"path": "."})
    assert status == 403
    assert (root / "notes.txt").read_text() == "hello\nworld\n"

    status, body = await api.post(f"{base}/download", {"path": "notes.txt"})
    assert status == 201
    mine = body["data"]
    status, _, err = await fetch(member, mine["download_url"])
    assert status == 404, err  # another user's transfer does not exist for them
    status, body = await member.get("/api/files/transfers")
    assert status == 200 and body["data"] == []
    status, body = await admin2.get("/api/files/transfers")
    assert [t["id"] for t in body["data"]] == [mine["id"]]  # an admin sees all
    status, data, _ = await fetch(api, mine["download_url"])
    assert status == 200 and data == b"hello\nworld\n"


async def test_curl_as_documented(api: Api, agent_host: MakeHost, tmp_path: Path,
                                  client: TestClient[Any, Any]) -> None:
    """The examples of docs/files.md, with the real curl: upload with -T (which sends
    Expect: 100-continue for a large file), download with -OJ, an API key as auth."""
    host, root = await files_host(agent_host, tmp_path)
    status, body = await api.post("/api/auth/api-keys", {"name": "script", "scope": "full"})
    assert status == 201, body
    key = body["data"]["key"]
    base = f"http://127.0.0.1:{client.server.port}"
    local = tmp_path / "site.tar"
    local.write_bytes(os.urandom(3 * 1024 * 1024 + 7))

    async def curl(*args: str, cwd: Path = tmp_path) -> str:
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--fail-with-body", "-H", f"X-API-Key: {key}", *args, cwd=cwd,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()
        return out.decode()

    digest = sha(local.read_bytes())
    out = await curl("-T", str(local),
                     f"{base}/api/files/{host.server_id}/upload?path=site.tar&sha256={digest}")
    assert json.loads(out)["data"]["state"] == "done"
    assert (root / "site.tar").read_bytes() == local.read_bytes()

    out = await curl("-H", "Content-Type: application/json", "-d", '{"path": "site.tar"}',
                     f"{base}/api/files/{host.server_id}/download")
    url = json.loads(out)["data"]["download_url"]
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    await curl("-OJ", f"{base}{url}", cwd=fetched)
    assert (fetched / "site.tar").read_bytes() == local.read_bytes()


async def test_a_download_that_fails_midway_is_cut_short(api: Api, agent_host: MakeHost,
                                                         tmp_path: Path) -> None:
    """The status was sent with the first bytes: a failure after them closes the
    connection early, so the client sees less than Content-Length, never a short file
    that looks complete; a client that goes away cancels the agent's side."""
    host, root = await files_host(agent_host, tmp_path)
    size = 48 * 1024 * 1024
    with (root / "big.bin").open("wb") as f:
        f.truncate(size)
    status, body = await api.post(f"/api/files/{host.server_id}/download", {"path": "big.bin"})
    assert status == 201
    got = [0]

    async def shrink_midway() -> None:
        async with api.client.get(body["data"]["download_url"], headers=headers(api)) as resp:
            assert resp.status == 200 and resp.headers["Content-Length"] == str(size)
            got[0] += len(await resp.content.readexactly(1024 * 1024))
            os.truncate(root / "big.bin", 2 * 1024 * 1024)  # the agent is paused on credit
            async for data in resp.content.iter_chunked(1024 * 1024):
                got[0] += len(data)

    with pytest.raises(aiohttp.ClientPayloadError):
        await shrink_midway()
    assert 0 < got[0] < size
    status, listed = await api.get("/api/files/transfers")
    failed = listed["data"][0]
    assert failed["state"] == "failed" and "shrank while it was read" in failed["error"]

    with (root / "big.bin").open("wb") as f:
        f.truncate(size)
    status, body = await api.post(f"/api/files/{host.server_id}/download", {"path": "big.bin"})
    async with api.client.get(body["data"]["download_url"], headers=headers(api)) as resp:
        await resp.content.readexactly(1024 * 1024)
        resp.close()  # the client goes away mid-transfer
    for _ in range(100):
        status, listed = await api.get("/api/files/transfers")
        if listed["data"][0]["state"] != "running":
            break
        await asyncio.sleep(0.05)
    assert listed["data"][0]["state"] == "cancelled", listed["data"][0]
    for _ in range(100):
        if "cancelled by the server: the client went away" in host.output():
            break
        await asyncio.sleep(0.05)
    assert "cancelled by the server: the client went away" in host.output()

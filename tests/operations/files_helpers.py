"""Shared pieces of the files tests: a tree on disk and raw HTTP helpers for the
streaming endpoints (the ``Api`` helper only speaks JSON)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from tests.conftest import Api

TEMP_GLOB = ".beeyard-upload.*"


def tree(base: Path) -> tuple[Path, Path]:
    """root/{notes.txt, bin.dat, sub/deep.txt, .env, server.key} and outside/secret.txt."""
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    (root / "notes.txt").write_text("hello\nworld\n")
    (root / "bin.dat").write_bytes(bytes(range(256)))
    (root / "sub" / "deep.txt").write_text("deep")
    (root / ".env").write_text("SECRET=1")
    (root / "server.key").write_text("-----BEGIN KEY-----")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    return root, outside


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def headers(api: Api) -> dict[str, str]:
    sent = dict(api.headers)
    if api.csrf:
        sent["X-CSRF-Token"] = api.csrf
    return sent


async def upload(api: Api, server_id: int, path: str, data: Any, *,
                 length: int | None = None, **query: Any) -> tuple[int, dict[str, Any]]:
    """POST the bytes (or an async iterator of them, with ``length``) as curl -T would."""
    sent = headers(api) | {"Content-Type": "application/octet-stream"}
    if length is not None:
        sent["Content-Length"] = str(length)
    params = {"path": path, **{k: str(v).lower() if isinstance(v, bool) else str(v)
                               for k, v in query.items()}}
    async with api.client.post(f"/api/files/{server_id}/upload", params=params, data=data,
                               headers=sent) as resp:
        assert resp.content_type == "application/json", await resp.text()
        return resp.status, await resp.json()


async def download(api: Api, server_id: int, path: str) -> tuple[int, bytes, dict[str, Any]]:
    """Create a download transfer and fetch it: (status, bytes, headers or error body)."""
    status, body = await api.post(f"/api/files/{server_id}/download", {"path": path})
    if status != 201:
        return status, b"", body
    return await fetch(api, body["data"]["download_url"])


async def fetch(api: Api, url: str) -> tuple[int, bytes, dict[str, Any]]:
    client: TestClient[Any, Any] = api.client
    async with client.get(url, headers=headers(api)) as resp:
        if resp.content_type == "application/json":
            return resp.status, b"", await resp.json()
        return resp.status, await resp.read(), dict(resp.headers)

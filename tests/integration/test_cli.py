"""``beeyard-server`` as an operator meets it: flags, environment, exit codes and
messages, the admin bootstrap and where its password goes."""

from __future__ import annotations

import asyncio
import os
import resource
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from beeyard.server.db.embedded import EmbeddedPostgres
from serverproc import (
    admin_password_matches,
    assert_admin_signs_in,
    clean_env,
    free_port,
    postgres_processes,
    request,
    run_cli,
    running_server,
    start_server,
    stop_postgres,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def data_dir(scratch: Path) -> Iterator[Path]:
    path = scratch / f"cli-{secrets.token_hex(4)}" / "data"
    path.parent.mkdir(mode=0o711)
    yield path
    stop_postgres(path)


def assert_clean_failure(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """Exit ``code``, a ``beeyard-server: ...`` line naming the problem, no traceback."""
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("beeyard-server: "), done.stderr
    for needle in needles:
        assert needle in last, done.stderr


def test_versions() -> None:
    done = run_cli(["--version"])
    assert done.returncode == 0 and done.stdout.startswith("beeyard-server ")
    agent = subprocess.run(
        [sys.executable, "-m", "beeyard.agent.cli", "--version"],
        capture_output=True, text=True, check=False, env=clean_env(),
    )
    assert agent.returncode == 0 and agent.stdout.startswith("beeyard-agent ")


def test_flags_beat_environment_beat_defaults(data_dir: Path, scratch: Path) -> None:
    env_port, flag_port = free_port(), free_port()
    env_dir = data_dir
    other_dir = scratch / f"cli-unused-{secrets.token_hex(4)}"
    server = start_server(
        env_dir,
        port=flag_port,
        data_dir_flag=False,  # the data directory comes from the environment
        env={
            "BEEYARD_PORT": str(env_port),
            "BEEYARD_DATA_DIR": str(env_dir),
            "BEEYARD_HOST": "127.0.0.1",
            "BEEYARD_ADMIN_PASSWORD": "flags beat the environment",
        },
    )
    try:
        server.wait_ready()  # on the flag's port
        with pytest.raises(ConnectionRefusedError):
            request(env_port, "GET", "/api/health", timeout=2)
        assert (env_dir / "secret.key").exists()
        assert not other_dir.exists()
        assert f"serving at http://127.0.0.1:{flag_port}/" in server.output()
        assert server.stop() == 0
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("args", "env", "needles"),
    [
        ([], {"BEEYARD_PORT": "eighty"}, ["BEEYARD_PORT must be an integer", "'eighty'"]),
        ([], {"BEEYARD_PORT": "70000"}, ["port must be between 0 and 65535"]),
        ([], {"BEEYARD_SECRET_KEY": "too-short"}, ["BEEYARD_SECRET_KEY", "at least 32"]),
        ([], {"BEEYARD_LOG_LEVEL": "loud"}, ["BEEYARD_LOG_LEVEL must be one of"]),
        ([], {"BEEYARD_SHUTDOWN_TIMEOUT": "soon"}, ["BEEYARD_SHUTDOWN_TIMEOUT"]),
        (["--data-dir", "/proc/beeyard/data"], {}, ["cannot create data directory"]),
        (["--data-dir", "FILE"], {}, ["exists and is not a directory"]),
    ],
    ids=["port-text", "port-range", "short-secret", "log-level", "shutdown-timeout",
         "uncreatable-dir", "dir-is-a-file"],
)
def test_bad_settings_exit_2_with_a_clear_message(
    data_dir: Path, args: list[str], env: dict[str, str], needles: list[str]
) -> None:
    data_dir.parent.joinpath("FILE").touch()
    args = [str(data_dir.parent / a) if a == "FILE" else a for a in args]
    if "--data-dir" not in args:
        args += ["--data-dir", str(data_dir)]
    if "BEEYARD_PORT" not in env:
        args += ["--port", str(free_port())]  # never the default port of a real install
    done = run_cli(["serve", *args], env=env, timeout=60)
    assert_clean_failure(done, 2, *needles)
    assert postgres_processes(data_dir) == []


def test_bad_port_flag_is_a_usage_error() -> None:
    done = run_cli(["serve", "--port", "eighty"])
    assert done.returncode == 2
    assert "invalid int value" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to any directory")
def test_unwritable_data_dir_exits_2(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o500)
    done = run_cli(["serve", "--data-dir", str(data_dir)])
    assert_clean_failure(done, 2, "not writable")


def test_port_in_use_exits_1_and_stops_postgres(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli(["serve", "--data-dir", str(data_dir), "--port", str(port)])
    assert_clean_failure(done, 1, f"cannot listen on 127.0.0.1:{port}")
    assert postgres_processes(data_dir) == []


def test_unreachable_database_exits_1_without_the_password(data_dir: Path) -> None:
    url = f"postgresql://beeyard:hunter2-secret@127.0.0.1:{free_port()}/beeyard"
    done = run_cli(
        ["serve", "--data-dir", str(data_dir), "--database-url", url],
        env={"BEEYARD_DATABASE_WAIT": "0"},
    )
    assert_clean_failure(done, 1, "cannot connect to the database", "beeyard:***@127.0.0.1")
    assert "hunter2" not in done.stderr + done.stdout


def test_admin_password_from_env_weak_refused_good_used_once(data_dir: Path) -> None:
    weak = run_cli(
        ["serve", "--data-dir", str(data_dir), "--port", str(free_port())],
        env={"BEEYARD_ADMIN_PASSWORD": "short"},
    )
    assert_clean_failure(weak, 2, "BEEYARD_ADMIN_PASSWORD", "at least 10 characters")
    assert postgres_processes(data_dir) == []

    good = "a passphrase of five words"
    with running_server(data_dir, env={"BEEYARD_ADMIN_PASSWORD": good}) as server:
        assert not (data_dir / "initial-admin-password").exists()
        assert good not in server.output()
        assert_admin_signs_in(server, good, EmbeddedPostgres(data_dir).dsn)
    # At the second start the admin exists: the variable (even a weak one) is ignored.
    with running_server(data_dir, env={"BEEYARD_ADMIN_PASSWORD": "other"}) as server:
        dsn = EmbeddedPostgres(data_dir).dsn
        assert_admin_signs_in(server, good, dsn)
        assert not asyncio.run(admin_password_matches(dsn, "other"))
        assert "created user 'admin'" not in server.output()


def test_generated_password_is_shown_on_a_terminal_and_kept_0600(data_dir: Path) -> None:
    port = free_port()
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "beeyard.server.cli", "serve", "--data-dir", str(data_dir),
         "--port", str(port)],
        stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=clean_env(),
    )
    os.close(slave)
    seen = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while b"is serving at" not in seen:
            assert proc.poll() is None and time.monotonic() < deadline, seen.decode()
            time.sleep(0.05)
        pw_file = data_dir / "initial-admin-password"
        password = pw_file.read_text().strip()
        assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
        assert f"Created user 'admin' with password: {password}" in seen.decode()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        reader.join(10)
        os.close(master)


def test_demo_prints_how_to_sign_in(data_dir: Path) -> None:
    with running_server(data_dir, command="demo") as server:
        password = (data_dir / "initial-admin-password").read_text().strip()
        out = server.output()
        assert f"Sign in at http://127.0.0.1:{server.port}/ as admin, password: {password}" in out
        assert "swagger-ui" in out
        # Once the admin changes the password, the file is stale and is not shown again.
        resp = server.login(password)
        assert resp.status == 200
        cookie = resp.headers["Set-Cookie"].split(";", 1)[0]
        changed = request(
            server.port, "PUT", "/api/auth/password",
            {"current_password": password, "new_password": "a brand new passphrase"},
            {"Cookie": cookie, "X-CSRF-Token": resp.json()["data"]["csrf_token"]},
        )
        assert changed.status == 200, changed.body
    with running_server(data_dir, command="demo") as server:
        out = server.output()
        assert "as admin, password: (the password you set)" in out
        assert password not in out


def test_serve_lifts_the_open_files_soft_limit_to_the_hard_one(data_dir: Path) -> None:
    """One socket per agent: started under a soft limit of 1,024 (a common default), the
    server raises it to the hard limit, which the administrator allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip(f"the hard limit here is only {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # inherited by the server
    try:
        server = start_server(data_dir, env={"BEEYARD_ADMIN_PASSWORD": "open files galore!"})
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        server.wait_ready()
        limits = Path(f"/proc/{server.proc.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        got_soft, got_hard = line.split()[3:5]
        assert got_soft == got_hard == ("unlimited" if hard == resource.RLIM_INFINITY
                                        else str(hard)), line
        assert server.stop() == 0
    finally:
        server.stop()

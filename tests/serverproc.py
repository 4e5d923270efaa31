"""Run ``beeyard-server`` as a real process in tests: free ports, readiness, RSS, clean stop.

Every process started here is stopped by its PID: use ``running_server`` (a
context manager) or call ``ServerProcess.stop`` in a ``finally`` block.
Output goes to a log file, not a pipe, so a chatty server can never block on
a full pipe while a test waits for it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REQUIRE_ALL = os.environ.get("BEEYARD_REQUIRE_ALL") == "1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any BEEYARD_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEEYARD_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> Response:
    """One HTTP request to 127.0.0.1:port; ``body`` is JSON-encoded unless bytes."""
    sent = dict(headers or {})
    data: bytes | None = None
    if isinstance(body, bytes):
        data = body
    elif body is not None:
        data = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=sent)
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path
    _log: Any = field(repr=False, default=None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90) -> None:
        """Until GET /api/health answers 200; fail with the log if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.proc.returncode} before it was ready:\n"
                    + self.output()
                )
            try:
                if request(self.port, "GET", "/api/health", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.output()}")

    def wait_exit(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server still running after {timeout} s:\n"
                                 + self.output()) from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        """Signal the process (by PID) and wait; SIGKILL if it does not go. Idempotent."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def rss(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def login(self, password: str, username: str = "admin") -> Response:
        return request(
            self.port, "POST", "/api/auth/login", {"username": username, "password": password}
        )


def start_server(
    data_dir: Path,
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    args: Iterable[str] = (),
    command: str = "serve",
    log_name: str | None = None,
    port_flag: bool = True,
    data_dir_flag: bool = True,
) -> ServerProcess:
    """Start ``beeyard-server <command> --data-dir D --port P`` with a clean environment
    (``data_dir`` is still where the log goes when ``data_dir_flag`` is false)."""
    port = free_port() if port is None else port
    argv = [sys.executable, "-m", "beeyard.server.cli", command]
    if data_dir_flag:
        argv += ["--data-dir", str(data_dir)]
    if port_flag:
        argv += ["--port", str(port)]
    argv += list(args)
    log_path = data_dir.parent / (log_name or f"{data_dir.name}-{port}.log")
    log = log_path.open("wb")
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=clean_env(env)
    )
    return ServerProcess(proc, port, data_dir, log_path, log)


@contextlib.contextmanager
def running_server(data_dir: Path, **kwargs: Any) -> Iterator[ServerProcess]:
    """A started and ready server, stopped (SIGTERM, then SIGKILL) on the way out."""
    server = start_server(data_dir, **kwargs)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def run_cli(
    args: Iterable[str], env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``beeyard-server ARGS`` to completion (for commands that exit on their own)."""
    return subprocess.run(
        [sys.executable, "-m", "beeyard.server.cli", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=clean_env(env),
        timeout=timeout, check=False,
    )


# -- the embedded PostgreSQL of a data directory ---------------------------------


def postmaster_pid(data_dir: Path) -> int | None:
    """The PID in ``postmaster.pid`` of the data dir's embedded PostgreSQL, if any."""
    try:
        first = (data_dir / "postgres" / "data" / "postmaster.pid").read_text().split("\n", 1)[0]
    except OSError:
        return None
    return int(first) if first.strip().isdigit() else None


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    """Every live postgres process whose command line names this data dir."""
    pgdata = str(data_dir / "postgres" / "data")
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            cmd = p.info["cmdline"] or []
            if p.info["status"] != psutil.STATUS_ZOMBIE and pgdata in cmd:
                found.append(p)
    return found


def stop_process(proc: subprocess.Popen[bytes], grace: float = 15) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds: a process a test started, by its PID."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def stop_postgres(data_dir: Path) -> None:
    """Last-resort clean-up after a failed test: kill what runs from this data dir."""
    for p in postgres_processes(data_dir):
        with contextlib.suppress(psutil.Error):
            p.kill()


# -- signing in ---------------------------------------------------------------------


def login_available() -> bool:
    """Whether ``POST /api/auth/login`` is declared in this checkout."""
    from beeyard.server.api import auth

    return any(getattr(r, "path", None) == "/api/auth/login" for r in auth.ROUTES)


async def admin_password_matches(dsn: str, password: str) -> bool:
    """Checked in the database: the ``admin`` row exists and its hash verifies."""
    import asyncpg

    from beeyard.server.auth import passwords

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT password_hash FROM users WHERE username = 'admin'")
    finally:
        await conn.close()
    return len(rows) == 1 and passwords.verify_sync(password, rows[0]["password_hash"])


def assert_admin_signs_in(server: ServerProcess, password: str, dsn: str) -> None:
    """Sign in as admin through the API (or, until the login route exists, check
    the stored hash in the server's database)."""
    import asyncio

    if login_available():
        resp = server.login(password)
        assert resp.status == 200, resp.body
        assert resp.json()["data"]["user"]["username"] == "admin"
    else:
        assert asyncio.run(admin_password_matches(dsn, password))


# -- memory while refusing large uploads ----------------------------------------------

MB = 1024 * 1024


class PeakRss:
    """Samples a process's RSS every few milliseconds; ``peak`` is the largest seen."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.peak = server.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.rss())
            time.sleep(0.002)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def send_huge(
    port: int, method: str, path: str, chunked: bool, size: int = 200 * MB
) -> tuple[int, dict[str, Any], bool, int]:
    """Send ``size`` bytes (as a hostile client would: all of it, whatever the server says).
    Returns the status, the JSON body, whether the answer was already there after
    the first 2 MB (before the body could have been read), and how many body bytes
    went out before the server closed the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {size}\r\n"
        sock.sendall((head + "\r\n").encode())
        block = b" " * MB
        frame = f"{MB:x}\r\n".encode() + block + b"\r\n" if chunked else block
        early = False
        sent = 0
        try:
            while sent < size:
                sock.sendall(frame)
                sent += MB
                if sent == 2 * MB:
                    early = bool(select.select([sock], [], [], 5)[0])
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close on us once it has answered
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        body = json.loads(resp.read())
        return resp.status, body, early, sent
    finally:
        sock.close()

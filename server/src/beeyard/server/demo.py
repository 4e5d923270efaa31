"""The demo's own agent: ``beeyard-server demo`` enrolls this machine and runs
``beeyard-agent`` beside itself, so that the very first command of the README
shows a live host rather than an empty fleet.

Why child processes and not the agent in-process: the agent is a separate
distribution with its own exit codes, signal handling and memory budget;
running the real ``beeyard-agent enroll`` and ``beeyard-agent run`` is what a
user would do on another host, so the demo exercises exactly that path.

Everything the agent writes (config, token, spool) lives in ``<data-dir>/agent``,
never in /etc or ~/.config. A later ``demo`` reuses that enrollment while the
server record and its token still match, so restarts do not pile up servers.
The agent is started once the socket listens (it must reach ``/api/agent/register``)
and stopped by PID in ``on_shutdown``, before the hub says goodbye and before
the database stops, so that its last minute summary is committed. ``serve`` never
does any of this: production agents run on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import importlib.util
import logging
import secrets
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from beeyard.server import context
from beeyard.server.api.enrollments import CODE_BYTES, PREFIX_LENGTH
from beeyard.server.auth import tokens
from beeyard.server.config import Settings
from beeyard.server.db import enrollments, servers

log = logging.getLogger("beeyard.server.demo")

STOP_TIMEOUT = 10.0  # seconds the agent has to send its last summary before SIGKILL
ENROLL_TIMEOUT = 60.0
LIVE_TIMEOUT = 30.0  # how long to wait for the first sample before saying so anyway
CODE_TTL = 120  # seconds; the code is used within a second or two
EXIT_REASONS = {
    1: "enrollment failed",
    2: "configuration error",
    3: "the server refused it",
}
_PR_SET_PDEATHSIG = 1


def agent_installed() -> bool:
    """Whether ``beeyard-agent`` can run with this interpreter (it is a separate package)."""
    with contextlib.suppress(ImportError, ValueError):
        return importlib.util.find_spec("beeyard.agent.cli") is not None
    return False


def local_url(settings: Settings) -> str:
    """The address this machine's agent uses: a wildcard listen address is reached
    through loopback."""
    host = settings.host
    if host in ("", "0.0.0.0"):  # noqa: S104 - mapping a wildcard, not binding one
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Linux: the agent gets SIGTERM if the server dies without stopping it (kill -9),
    so no orphan keeps reconnecting to a server that is gone."""
    with contextlib.suppress(Exception):
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def _load_prctl() -> Callable[[int, int], int] | None:
    """Loaded before any fork: the child must not import or allocate much."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return fn


_prctl_fn = _load_prctl()


def _prctl(option: int, value: int) -> int:
    return _prctl_fn(option, value) if _prctl_fn is not None else 0


class DemoAgent:
    """Enrolls (or re-uses) and runs this machine's agent for one ``demo`` process."""

    def __init__(self, app: web.Application, ui_url: str,
                 say: Callable[[str], None]) -> None:
        settings = app[context.SETTINGS]
        self.app = app
        self.ui_url = ui_url
        self.say = say
        self.url = local_url(settings)
        self.dir = settings.data_dir / "agent"
        self.config_path = self.dir / "agent.toml"
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.relay: asyncio.Task[None] | None = None
        self.stopping = False
        self.last_line = ""

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Called once the socket listens (the agent's enrollment needs it)."""
        self.task = asyncio.get_running_loop().create_task(self._run(), name="demo-agent")

    async def stop(self, _app: web.Application | None = None) -> None:
        """SIGTERM the agent by its PID, wait for its goodbye, SIGKILL after a timeout."""
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("the demo agent (PID %d) did not stop in %g s; killing it",
                            proc.pid, STOP_TIMEOUT)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in (self.task, self.relay):
            if task is not None:
                if proc is None or proc.returncode is None:
                    task.cancel()  # no agent yet (still enrolling): nothing to wait for
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5.0)

    async def _run(self) -> None:
        try:
            await self._enroll_and_run()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not take the demo server down
            log.exception("the demo agent failed; the demo keeps serving without it")

    async def _enroll_and_run(self) -> None:
        if not agent_installed():
            log.warning("beeyard-agent is not installed (pip install ./shared ./agent), so "
                        "this machine is not shown; the demo keeps serving")
            return
        pool = self.app[context.POOL]
        server_id = await self._current_enrollment(pool)
        if server_id is None:
            server_id = await self._enroll(pool)
            if server_id is None or self.stopping:
                return
        else:
            log.info("re-using the demo agent's enrollment as server %d", server_id)
        await self._start_agent()
        if await self._wait_live(server_id):
            self.say(f"This machine ({socket.gethostname()}) is enrolled as server {server_id} "
                     f"and live at {self.ui_url}")
            # Remote operations stay off unless the host turns them on: say how, once.
            agent = Path(sys.executable).with_name("beeyard-agent")
            self.say(f"Its terminal, files, Docker and commands are off (the agent's own "
                     f"policy). To try the web terminal for half an hour: {agent} grant "
                     f"terminal --for 30m --config {self.config_path}")
        assert self.proc is not None
        code = await self.proc.wait()
        if self.stopping:
            return
        if code == 0 or code == -signal.SIGINT:  # Ctrl-C reaches the whole process group
            log.info("the demo agent (PID %d) stopped", self.proc.pid)
        else:
            reason = EXIT_REASONS.get(code, "unexpected exit")
            if code < 0:
                reason = f"killed by {signal.Signals(-code).name}"
            log.error("the demo agent (PID %d) exited with code %d (%s)%s; the demo keeps "
                      "serving without it", self.proc.pid, code, reason,
                      f": {self.last_line}" if self.last_line else "")

    # -- enrollment ------------------------------------------------------------------

    async def _current_enrollment(self, pool: Any) -> int | None:
        """The server id of an earlier demo's agent, if its config loads and its token is
        still the server record's. A changed port is written into the config."""
        if not self.config_path.exists():
            return None
        from beeyard.agent import config as agent_config
        from beeyard.agent.atomic import write_atomic
        from beeyard.agent.token import TokenError, read_token

        try:
            config = agent_config.load(self.config_path)
            token = read_token(config.token_file)
        except (agent_config.ConfigError, TokenError) as exc:
            log.warning("the demo agent's config is unusable (%s); enrolling it again", exc)
            return None
        if not await servers.token_is_current(pool, config.server_id, tokens.digest(token)):
            log.info("server %d of the demo agent was deleted or its token revoked; "
                     "enrolling it again", config.server_id)
            return None
        if config.server != self.url:  # e.g. the demo now runs on another port
            config = dataclasses.replace(config, server=self.url)
            write_atomic(self.config_path, config.to_toml().encode(), mode=0o644)
        return config.server_id

    async def _enroll(self, pool: Any) -> int | None:
        """Mint a code through the db layer (no HTTP round trip, no admin session needed),
        then run the real ``beeyard-agent enroll`` with paths inside the data dir."""
        code = secrets.token_urlsafe(CODE_BYTES)
        await enrollments.create(pool, prefix=code[:PREFIX_LENGTH], digest=tokens.digest(code),
                                 created_by=None, ttl_seconds=CODE_TTL)
        self.dir.mkdir(mode=0o700, exist_ok=True)
        # "--code=" because a URL-safe code may begin with "-", which argparse would take
        # for an option.
        argv = ["enroll", "--server", self.url, f"--code={code}", "--config",
                str(self.config_path), "--spool-dir", str(self.dir / "spool"), "--force"]
        self.proc = await self._spawn(argv, relay=False)
        try:
            _, err = await asyncio.wait_for(self.proc.communicate(), ENROLL_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
            log.error("beeyard-agent enroll did not finish in %g s; the demo keeps serving "
                      "without this machine", ENROLL_TIMEOUT)
            return None
        if self.proc.returncode != 0:
            if not self.stopping:
                why = err.decode(errors="replace").strip().splitlines()
                log.error("beeyard-agent enroll exited with code %d (%s)%s; the demo keeps "
                          "serving without this machine", self.proc.returncode,
                          EXIT_REASONS.get(self.proc.returncode or 0, "unexpected exit"),
                          f": {why[-1]}" if why else "")
            return None
        from beeyard.agent import config as agent_config

        server_id = agent_config.load(self.config_path).server_id
        log.info("enrolled this machine as server %d; config in %s", server_id, self.dir)
        return server_id

    # -- the agent process -----------------------------------------------------------

    async def _spawn(self, args: list[str], *, relay: bool) -> asyncio.subprocess.Process:
        """``python -m beeyard.agent.cli ARGS`` with this interpreter; output is piped
        (and relayed line by line to our stderr for ``run``) so its last words are known."""
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "beeyard.agent.cli", *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT if relay else asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent if _prctl_fn is not None else None,
        )

    async def _start_agent(self) -> None:
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        level = level if level in ("debug", "info", "warning", "error") else "error"
        self.proc = await self._spawn(
            ["run", "--config", str(self.config_path), "--log-level", level], relay=True)
        log.info("started the demo agent (PID %d)", self.proc.pid)
        self.relay = asyncio.get_running_loop().create_task(self._relay(self.proc),
                                                            name="demo-agent-log")

    async def _relay(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.last_line = line
                print(line, file=sys.stderr, flush=True)

    async def _wait_live(self, server_id: int) -> bool:
        """Until the hub has a sample from this machine; False if the agent exited."""
        live = self.app[context.LIVE]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LIVE_TIMEOUT
        assert self.proc is not None
        while self.proc.returncode is None and not self.stopping:
            if live.online(server_id) and live.latest(server_id) is not None:
                return True
            if loop.time() > deadline:
                log.warning("the demo agent (server %d) has not sent a sample in %g s",
                            server_id, LIVE_TIMEOUT)
                return False
            await asyncio.sleep(0.1)
        return False


def install(app: web.Application, ui_url: str, say: Callable[[str], None]) -> DemoAgent:
    """Wire the demo agent into ``app``; call ``start()`` on the result once listening.

    Its stop goes first in ``on_shutdown``: the agent's goodbye and last summary
    must reach the hub and the ingest writer while both (and the database) are up.
    """
    agent = DemoAgent(app, ui_url, say)
    app.on_shutdown.insert(0, agent.stop)
    return agent


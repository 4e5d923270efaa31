"""``beeyard-agent grant`` / ``revoke`` as real processes (the installed entry point), and a
real ``beeyard-agent run`` whose ``hello`` carries the granted capabilities."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.agent.peer import AgentPeer, AgentProcess, write_config
from tests.agent.test_cli import one_line_error

from beeyard.agent import cli
from beeyard.agent.grants import GrantStore, grants_path
from beeyard.shared.frames import CAPABILITIES

NOBODY = 65534
_SCRIPT = Path(sys.executable).parent / "beeyard-agent"
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "beeyard.agent.cli"]


def agent(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEEYARD_")}
    env["TZ"] = "UTC"
    proc = subprocess.run([*COMMAND, *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=60, check=False)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, "http://127.0.0.1:9", "bag_" + "x" * 43,
                        capabilities=("docker_read",))


def test_grant_list_revoke(config: Path) -> None:
    code, out, err = agent("grant", "terminal", "--for", "30m", "--config", str(config))
    assert code == 0, err
    [line] = out.splitlines()
    assert line.startswith("granted terminal for 30m, until ")
    assert line.endswith(" UTC; allowed now: terminal, docker_read")
    path = grants_path(config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [entry] = json.loads(path.read_text())["grants"]
    assert entry["capability"] == "terminal" and entry["who"]
    expires = GrantStore.for_config(config).active()["terminal"]
    assert 29 * 60 < expires - time.time() <= 30 * 60

    code, out, err = agent("grant", "--list", "--config", str(config))
    assert code == 0, err
    first, last = out.splitlines()
    assert first.startswith("terminal until ") and " left, granted by " in first
    assert last == "allowed now: terminal, docker_read (config: docker_read)"

    code, out, err = agent("revoke", "terminal", "--config", str(config))
    assert (code, out) == (0, "revoked terminal; allowed now: docker_read\n"), err
    assert GrantStore.for_config(config).active() == {}
    code, out, _ = agent("revoke", "terminal", "--config", str(config))
    assert (code, out) == (0, "no grant of terminal; allowed now: docker_read\n")
    code, out, _ = agent("revoke", "docker_read", "--config", str(config))
    assert out == ("no grant of docker_read (still allowed by the config); "
                   "allowed now: docker_read\n")
    code, out, _ = agent("grant", "--list", "--config", str(config))
    assert out == "allowed now: docker_read (config: docker_read)\n"
    actions = [e["action"] for e in GrantStore.for_config(config).audit()]
    assert actions == ["grant", "revoke"]


@pytest.mark.parametrize(("duration", "message"), [
    ("30", "bad duration '30'"), ("half an hour", "bad duration"), ("30s", "too short"),
    ("25h", "too long: at most 24h"),
])
def test_bad_durations(config: Path, duration: str, message: str) -> None:
    code, _, err = agent("grant", "exec", "--for", duration, "--config", str(config))
    assert code == cli.EXIT_CONFIG
    assert message in one_line_error(err)
    assert not grants_path(config).exists()


def test_unknown_capability(config: Path) -> None:
    for args in (["grant", "shell", "--for", "30m"], ["revoke", "shell"]):
        code, _, err = agent(*args, "--config", str(config))
        assert code == cli.EXIT_CONFIG
        line = one_line_error(err)
        assert "unknown capability 'shell'" in line
        assert all(cap in line for cap in CAPABILITIES)
    assert not grants_path(config).exists()


@pytest.mark.parametrize("args", [
    ["grant", "exec"], ["grant", "--for", "30m"], ["grant"], ["grant", "exec", "--list"],
])
def test_incomplete_commands_are_one_line(config: Path, args: list[str]) -> None:
    code, _, err = agent(*args, "--config", str(config))
    assert code == cli.EXIT_CONFIG
    one_line_error(err)


def test_no_config_no_grant(tmp_path: Path) -> None:
    code, _, err = agent("grant", "exec", "--for", "1h", "--config", str(tmp_path / "none.toml"))
    assert code == cli.EXIT_CONFIG
    assert "enroll this host first" in one_line_error(err)


def test_an_expired_grant_disappears_by_itself(config: Path) -> None:
    store = GrantStore.for_config(config)
    now = time.time()
    store.grant("exec", 3600, who="alice", now=now)
    store.grant("terminal", 1800, who="alice", now=now - 1801)  # ended a second ago
    code, out, _ = agent("grant", "--list", "--config", str(config))
    assert code == 0
    assert "terminal" not in out and out.startswith("exec until ")
    assert out.splitlines()[-1] == "allowed now: exec, docker_read (config: docker_read)"
    # still in the file until the next write, which prunes it
    assert [g["capability"] for g in json.loads(grants_path(config).read_text())["grants"]] == [
        "exec", "terminal"]
    code, _, _ = agent("grant", "files", "--for", "1m", "--config", str(config))
    assert code == 0
    assert [g["capability"] for g in json.loads(grants_path(config).read_text())["grants"]] == [
        "exec", "files"]
    # and what the CLI granted is over once its time is up
    assert store.active(now + 3601 + 60) == {}


def test_an_unsafe_grants_file_is_refused_by_the_cli_and_by_run(config: Path) -> None:
    code, _, _ = agent("grant", "exec", "--for", "1h", "--config", str(config))
    assert code == 0
    grants_path(config).chmod(0o666)
    for args in (["grant", "--list"], ["grant", "files", "--for", "1h"], ["run"]):
        code, _, err = agent(*args, "--config", str(config))
        assert code == cli.EXIT_CONFIG, args
        assert "writable by other users" in one_line_error(err)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="beeyard-grants-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def as_nobody(*args: str) -> tuple[int, str]:
    """``cli.main(args)`` in a forked child that really runs as nobody; (exit, stderr)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            sys.stderr = open(write_end, "w")  # noqa: SIM115 - closed by _exit
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            code = cli.main(list(args))
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        err = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_only_root_or_the_configs_owner_may_grant(shared_dir: Path) -> None:
    config = write_config(shared_dir, "http://127.0.0.1:9", "bag_" + "x" * 43)
    config.chmod(0o644)  # readable by nobody, owned by root: a root agent's config
    code, err = as_nobody("grant", "exec", "--for", "1h", "--config", str(config))
    assert code == cli.EXIT_CONFIG
    line = one_line_error(err)
    assert "only root (the owner of" in line and "whoever can change the config may grant" in line
    code, err = as_nobody("revoke", "exec", "--config", str(config))
    assert code == cli.EXIT_CONFIG and "only root" in err
    assert not grants_path(config).exists()

    # a user's own agent: its owner may grant, and root's grant is handed over to it
    os.chown(shared_dir, NOBODY, NOBODY)
    os.chown(config, NOBODY, NOBODY)
    code, err = as_nobody("grant", "exec", "--for", "1h", "--config", str(config))
    assert code == 0, err
    assert grants_path(config).stat().st_uid == NOBODY
    code, _, err = agent("grant", "files", "--for", "1h", "--config", str(config))
    assert code == 0, err
    info = grants_path(config).stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (NOBODY, 0o600)
    assert set(GrantStore.for_config(config).active()) == {"exec", "files"}


@pytest.mark.slow
async def test_hello_carries_the_granted_capabilities(tmp_path: Path) -> None:
    peer = AgentPeer()
    await peer.start()
    config = write_config(tmp_path, peer.url, peer.token, capabilities=("docker_read",))
    code, _, err = agent("grant", "terminal", "--for", "10m", "--config", str(config))
    assert code == 0, err
    process = AgentProcess(config, tmp_path / "agent.log")
    try:
        [hello] = await peer.wait_for("hello", conn=1)
        assert hello.frame.body["capabilities"] == ["terminal", "docker_read"]
        assert "capabilities granted locally: terminal until" in process.output()
        # a revoke is reported at the next connection
        code, _, err = agent("revoke", "terminal", "--config", str(config))
        assert code == 0, err
        assert peer.current is not None
        await peer.current.close()
        [hello] = await peer.wait_for("hello", conn=2)
        assert hello.frame.body["capabilities"] == ["docker_read"]
    finally:
        process.stop()
        await peer.stop()


@pytest.mark.slow
async def test_a_grant_while_connected_reaches_the_server_at_once(tmp_path: Path) -> None:
    """No reconnect needed: the agent sends the new set in a capabilities frame."""
    peer = AgentPeer()
    await peer.start()
    config = write_config(tmp_path, peer.url, peer.token, capabilities=("docker_read",))
    process = AgentProcess(config, tmp_path / "agent.log")
    try:
        [hello] = await peer.wait_for("hello", conn=1)
        assert hello.frame.body["capabilities"] == ["docker_read"]
        code, _, err = agent("grant", "exec", "--for", "10m", "--config", str(config))
        assert code == 0, err
        [changed] = await peer.wait_for("capabilities", conn=1, timeout=10)
        assert changed.frame.body == {"capabilities": ["exec", "docker_read"]}
        code, _, err = agent("revoke", "exec", "--config", str(config))
        assert code == 0, err
        changes = await peer.wait_for("capabilities", conn=1, count=2, timeout=10)
        assert changes[-1].frame.body == {"capabilities": ["docker_read"]}
        assert len(await peer.wait_for("hello")) == 1  # all on the first connection
    finally:
        process.stop()
        await peer.stop()

"""``beeyard-agent`` as a real process: enroll against a real local server, and every
expected failure as one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
from pathlib import Path

import pytest
from tests.agent.peer import AgentPeer

from beeyard.agent import config as config_module
from beeyard.agent.token import read_token
from beeyard.shared.frames import HOST


async def cli(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEEYARD_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "beeyard.agent.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("beeyard-agent: error: ")
    return lines[0]


async def test_enroll_writes_config_and_private_token(peer: AgentPeer, tmp_path: Path) -> None:
    peer.enroll_codes["good-code"] = 42
    config_path = tmp_path / "etc" / "agent.toml"
    code, out, err = await cli("enroll", "--server", peer.url + "/", "--code", "good-code",
                               "--config", str(config_path), "--name", "web-1",
                               "--spool-dir", str(tmp_path / "spool"))
    assert code == 0, err
    assert "enrolled as server 42" in out
    config = config_module.load(config_path)
    assert config.server == peer.url
    assert config.server_id == 42
    assert config.capabilities == ()  # everything off until the operator turns it on
    assert config.token_file == tmp_path / "etc" / "agent.token"
    assert config.spool.dir == tmp_path / "spool"
    assert stat.S_IMODE(config.token_file.stat().st_mode) == 0o600
    assert read_token(config.token_file) == peer.token
    [request] = peer.registrations
    assert request["code"] == "good-code" and request["name"] == "web-1"
    HOST.validate(request["host"])  # the host facts of hello, checked by the same schema


async def test_a_refused_code_is_the_servers_message(peer: AgentPeer, tmp_path: Path) -> None:
    config_path = tmp_path / "agent.toml"
    code, _, err = await cli("enroll", "--server", peer.url, "--code", "used",
                             "--config", str(config_path))
    assert code == 1
    assert one_line_error(err) == ("beeyard-agent: error: the server refused the enrollment "
                                   "(HTTP 400): invalid or expired enrollment code")
    assert not config_path.exists() and not (tmp_path / "agent.token").exists()


async def test_an_unreachable_server(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = await cli("enroll", "--server", f"http://127.0.0.1:{port}", "--code", "x",
                             "--config", str(tmp_path / "agent.toml"))
    assert code == 1
    assert f"cannot reach http://127.0.0.1:{port}: Connection refused" in one_line_error(err)


async def test_an_existing_config_is_kept_without_force(peer: AgentPeer, tmp_path: Path) -> None:
    config_path = tmp_path / "agent.toml"
    config_path.write_text("# enrolled before\n")
    peer.enroll_codes["c1"] = 5
    code, _, err = await cli("enroll", "--server", peer.url, "--code", "c1",
                             "--config", str(config_path))
    assert code == 1
    assert "already exists" in one_line_error(err) and "--force" in err
    assert peer.registrations == []  # the code was not spent
    assert config_path.read_text() == "# enrolled before\n"
    code, _, err = await cli("enroll", "--server", peer.url, "--code", "c1",
                             "--config", str(config_path), "--force")
    assert code == 0, err
    assert config_module.load(config_path).server_id == 5


@pytest.mark.parametrize(("args", "message"), [
    (["--server", "ftp://x", "--code", "c"], "http:// or https://"),
    (["--server", "http://x", "--code", " "], "enrollment code is empty"),
    (["--server", "http://x", "--code", "c", "--interval", "0.1"], "between 1 and 60"),
    (["--server", "https://x", "--code", "c", "--ca-file", "/nonexistent.pem"], "no CA file"),
])
async def test_enroll_argument_errors(tmp_path: Path, args: list[str], message: str) -> None:
    code, _, err = await cli("enroll", *args, "--config", str(tmp_path / "agent.toml"))
    assert code == 1
    assert message in one_line_error(err)


async def test_run_without_a_config_says_enroll_first(tmp_path: Path) -> None:
    code, _, err = await cli("run", "--config", str(tmp_path / "agent.toml"))
    assert code == 2
    assert "enroll this host first" in one_line_error(err)


async def test_run_with_a_readable_token_refuses(tmp_path: Path) -> None:
    token = tmp_path / "agent.token"
    token.write_text("bag_" + "x" * 43)
    token.chmod(0o644)
    config_path = tmp_path / "agent.toml"
    config_path.write_text('server = "http://127.0.0.1:1"\nserver_id = 1\n'
                           'token_file = "agent.token"\n')
    code, _, err = await cli("run", "--config", str(config_path))
    assert code == 2
    assert "chmod 600" in one_line_error(err)


async def test_no_command_prints_help() -> None:
    code, out, _ = await cli()
    assert code == 2
    assert "enroll" in out and "run" in out
    code, out, _ = await cli("--version")
    assert code == 0 and out.startswith("beeyard-agent ")

"""exec.run on a real agent process, asked through the server's hub: argv and shell,
exit codes, streaming, the output cap, timeouts and cancels that kill the whole
process group, the concurrency cap, and the agent's own refusals."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from tests.operations.conftest import MakeHost, pids_alive

from beeyard.agent.config import ExecConfig
from beeyard.server.hub.agents import HUB
from beeyard.server.hub.calls import Call, RemoteError

PY = sys.executable


def start(client: TestClient[Any, Any], server_id: int, **args: Any) -> Call:
    return client.app[HUB].call(server_id, "exec.run", args)


async def collect(call: Call, within: float = 30) -> tuple[bytes, dict[str, Any]]:
    out = bytearray()
    async with asyncio.timeout(within):
        while (chunk := await call.receive()) is not None:
            out += chunk
        return bytes(out), await call.wait(within)


async def test_argv_runs_without_a_shell_and_reports_its_exit_code(
        client: TestClient[Any, Any], agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["exec"])
    out, result = await collect(start(client, host.server_id,
                                      argv=["/bin/echo", "$HOME", "a b", ";", "id"]))
    assert out == b"$HOME a b ; id\n"  # no expansion, no second command
    assert result["exit_code"] == 0 and result.get("signal") is None
    assert result["bytes"] == len(out) and not result["truncated"] and not result["timed_out"]
    assert result["duration"] >= 0

    out, result = await collect(start(client, host.server_id,
                                      argv=[PY, "-c", "import sys; print('err', file=sys.stderr);"
                                                      " sys.exit(3)"]))
    assert out == b"err\n"  # stderr is merged into the stream
    assert result["exit_code"] == 3

    call = start(client, host.server_id, argv=["/nonexistent/program"])
    with pytest.raises(RemoteError) as err:
        await collect(call)
    assert err.value.code == "not_found" and "/nonexistent/program" in err.value.reason


async def test_shell_is_refused_unless_the_agent_allows_it(
        client: TestClient[Any, Any], agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["exec"])
    with pytest.raises(RemoteError) as err:
        await collect(start(client, host.server_id, **{"shell": "echo hi"}))
    assert err.value.code == "denied" and "exec.allow_shell" in err.value.reason

    shelly = await agent_host(capabilities=["exec"], exec={"allow_shell": True})
    out, result = await collect(start(client, shelly.server_id,
                                      **{"shell": "echo $((6*7)); exit 5", "env": {"X": "y"}}))
    assert out == b"42\n" and result["exit_code"] == 5

    with pytest.raises(RemoteError) as err:  # both, or neither
        await collect(start(client, shelly.server_id, **{"shell": "true", "argv": ["/bin/true"]}))
    assert err.value.code == "invalid"


async def test_environment_is_clean_and_bounded(
        client: TestClient[Any, Any], agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["exec"], env={"AGENT_SECRET": "s3cret"})
    out, _ = await collect(start(client, host.server_id, argv=["/usr/bin/env"],
                                 env={"GREETING": "hello"}, cwd="/tmp"))
    env = dict(line.split("=", 1) for line in out.decode().splitlines())
    assert env["GREETING"] == "hello" and "AGENT_SECRET" not in env and "PATH" in env
    for bad, code in [({"LD_PRELOAD": "/x.so"}, "denied"), ({"1BAD": "x"}, "invalid")]:
        with pytest.raises(RemoteError) as err:
            await collect(start(client, host.server_id, argv=["/bin/true"], env=bad))
        assert err.value.code == code
    with pytest.raises(RemoteError) as err:
        await collect(start(client, host.server_id, argv=["/bin/true"], cwd="/no/such/dir"))
    assert err.value.code == "not_found"


async def test_output_streams_while_the_command_runs(
        client: TestClient[Any, Any], agent_host: MakeHost, tmp_path: Path) -> None:
    host = await agent_host(capabilities=["exec"])
    gate = tmp_path / "gate"
    script = ("import os, sys, time\nprint('first', flush=True)\n"
              f"while not os.path.exists({str(gate)!r}): time.sleep(0.02)\nprint('second')\n")
    call = start(client, host.server_id, argv=[PY, "-c", script])
    async with asyncio.timeout(20):
        first = await call.receive()
    assert first == b"first\n" and not call.done  # arrived while the command still runs
    gate.touch()
    rest, result = await collect(call)
    assert rest == b"second\n" and result["exit_code"] == 0


async def test_output_beyond_the_cap_is_cut_and_the_command_still_finishes(
        client: TestClient[Any, Any], agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["exec"], exec={"max_output_bytes": 10_000})
    # the request asks for more than the agent allows: the agent's cap wins
    out, result = await collect(start(client, host.server_id, max_output=10**6,
                                      argv=[PY, "-c", "print('x' * 499999)"]))
    assert len(out) == 10_000 and result["truncated"] and result["exit_code"] == 0
    assert result["bytes"] == 500_000  # drained to the end, not blocked on a full pipe
    out, result = await collect(start(client, host.server_id, max_output=100,
                                      argv=[PY, "-c", "print('y' * 1000)"]))
    assert len(out) == 100 and result["truncated"]


async def _pids_from(path: Path, count: int) -> list[int]:
    async with asyncio.timeout(20):
        while len(lines := path.read_text().split()) < count if path.exists() else True:
            await asyncio.sleep(0.05)
    return [int(p) for p in lines]


SPAWN_SLEEP = ("import subprocess, os, sys, time\n"
               "child = subprocess.Popen(['sleep', '300'])\n"
               "open(sys.argv[1], 'w').write(f'{os.getpid()} {child.pid}')\n"
               "time.sleep(300)\n")


async def test_timeout_kills_the_whole_process_group(
        client: TestClient[Any, Any], agent_host: MakeHost, tmp_path: Path) -> None:
    host = await agent_host(capabilities=["exec"], exec={"max_timeout": 2})
    pids_file = tmp_path / "pids"
    began = time.monotonic()
    call = start(client, host.server_id, argv=[PY, "-c", SPAWN_SLEEP, str(pids_file)],
                 timeout=600)  # more than the agent's max_timeout: capped at 2 s
    pids = await _pids_from(pids_file, 2)
    _, result = await collect(call)
    assert result["timed_out"] and result.get("exit_code") is None
    assert result.get("signal") is not None
    assert time.monotonic() - began < 15
    await _gone(pids)


async def _gone(pids: list[int]) -> None:
    async with asyncio.timeout(10):
        while pids_alive(pids):
            await asyncio.sleep(0.05)
    assert not pids_alive(pids)


async def test_cancel_kills_the_whole_process_group(
        client: TestClient[Any, Any], agent_host: MakeHost, tmp_path: Path) -> None:
    host = await agent_host(capabilities=["exec"])
    pids_file = tmp_path / "pids"
    call = start(client, host.server_id, argv=[PY, "-c", SPAWN_SLEEP, str(pids_file)])
    pids = await _pids_from(pids_file, 2)
    assert len(pids_alive(pids)) == 2
    call.cancel("a test cancelled it")
    await _gone(pids)


async def test_a_command_that_ignores_sigterm_is_killed(
        client: TestClient[Any, Any], agent_host: MakeHost, tmp_path: Path) -> None:
    host = await agent_host(capabilities=["exec"])
    pids_file = tmp_path / "pids"
    script = ("import os, signal, sys, time\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
              "time.sleep(300)\n")
    call = start(client, host.server_id, argv=[PY, "-c", script, str(pids_file)], timeout=1)
    pids = await _pids_from(pids_file, 1)
    _, result = await collect(call)
    assert result["timed_out"] and result.get("signal") == 9  # SIGKILL after the grace
    await _gone(pids)


async def test_children_left_behind_are_killed_when_the_command_exits(
        client: TestClient[Any, Any], agent_host: MakeHost, tmp_path: Path) -> None:
    host = await agent_host(capabilities=["exec"])
    pids_file = tmp_path / "pids"
    script = ("import subprocess, sys\n"
              "c = subprocess.Popen(['sleep', '300'], stdout=subprocess.DEVNULL)\n"
              "open(sys.argv[1], 'w').write(str(c.pid))\n")
    _, result = await collect(start(client, host.server_id,
                                    argv=[PY, "-c", script, str(pids_file)]))
    assert result["exit_code"] == 0
    await _gone(await _pids_from(pids_file, 1))


async def test_at_most_max_concurrent_commands(
        client: TestClient[Any, Any], agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["exec"], exec={"max_concurrent": 1})
    first = start(client, host.server_id, argv=["sleep", "30"])
    await asyncio.sleep(0.5)
    with pytest.raises(RemoteError) as err:
        await collect(start(client, host.server_id, argv=["/bin/true"]))
    assert err.value.code == "busy" and "exec.max_concurrent" in err.value.reason
    first.cancel("done")
    async with asyncio.timeout(10):  # the slot frees once the first is gone
        while True:
            try:
                _, result = await collect(start(client, host.server_id, argv=["/bin/true"]))
                break
            except RemoteError as exc:
                assert exc.code == "busy"
                await asyncio.sleep(0.1)
    assert result["exit_code"] == 0


async def test_exec_off_on_the_agent_is_denied_with_its_reason(
        client: TestClient[Any, Any], agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["files"], files={"roots": ["/tmp"]})
    with pytest.raises(RemoteError) as err:
        await collect(start(client, host.server_id, argv=["/bin/true"]))
    assert err.value.code == "denied" and "exec capability is off" in err.value.reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root can switch users")
async def test_another_user_without_root_is_refused(
        client: TestClient[Any, Any], agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["exec"], exec={"user": "nobody"})
    with pytest.raises(RemoteError) as err:
        await collect(start(client, host.server_id, argv=["/usr/bin/id"]))
    assert err.value.code == "denied" and "cannot switch users" in err.value.reason


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_runs_as_the_configured_user(
        client: TestClient[Any, Any], agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["exec"], exec={"user": "nobody"})
    out, result = await collect(start(client, host.server_id, argv=["/usr/bin/id"]))
    assert result["exit_code"] == 0
    text = out.decode()
    assert "uid=65534(nobody)" in text and "groups=" in text and "(root)" not in text


BAD_ARGS = [
    {"argv": "/bin/true"},  # not a list
    {"argv": [1, 2]},
    {"argv": []},
    {"argv": ["/bin/true"], "timeout": -1},
    {"argv": ["/bin/true"], "timeout": True},
    {"argv": ["/bin/true"], "env": {"X": 1}},
    {"argv": ["/bin/true"], "env": {"X=Y": "1"}},
    {"argv": ["/bin/true"], "cwd": "relative/dir"},
    {"argv": ["/bin/true"], "run_as": "root"},  # unknown keys are refused, not ignored
    {"shell": ["echo", "hi"]},
    {"argv": ["x" * 5000]},
]


async def test_bad_requests_are_refused_and_the_agent_carries_on(
        client: TestClient[Any, Any], agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["exec"], exec={"allow_shell": True})
    for args in BAD_ARGS:
        with pytest.raises(RemoteError) as err:
            await collect(start(client, host.server_id, **args))
        assert err.value.code == "invalid", (args, err.value.reason)
    out, result = await collect(start(client, host.server_id, argv=["/bin/echo", "still here"]))
    assert out == b"still here\n" and result["exit_code"] == 0
    assert host.proc is not None and host.proc.poll() is None


def test_the_documented_exec_defaults_are_the_real_ones() -> None:
    """docs/agent.md lists the [exec] keys with their defaults; they must be the code's."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "agent.md").read_text()
    rows = dict(re.findall(r"^\| `\[exec\] (\w+)` \| `([^`]*)`", docs, re.M))
    defaults = {f.name: f.default for f in dataclasses.fields(ExecConfig)}
    assert set(rows) == set(defaults)
    for name, shown in rows.items():
        value = defaults[name]
        want = str(value).lower() if isinstance(value, bool) else str(value)
        assert shown.strip('"') == want, (name, shown, value)


async def test_output_still_unsent_when_the_command_exits_is_not_lost(
        client: TestClient[Any, Any], agent_host: MakeHost) -> None:
    """A slow link (here: a reader that takes its time, so credit comes late) may leave
    the end of the output in the pipe after the command exited; it is all still sent."""
    host = await agent_host(capabilities=["exec"])
    size = 300_000
    call = client.app[HUB].call(host.server_id, "exec.run",
                                {"argv": [PY, "-c", f"import sys; sys.stdout.write('z' * {size})"]},
                                window=4096)
    await asyncio.sleep(4)  # longer than the agent waits for an escaped writer's pipe
    out, result = await collect(call)
    assert result["exit_code"] == 0 and not result["truncated"]
    assert len(out) == size and result["bytes"] == size


async def test_a_writer_that_escaped_the_group_does_not_hold_the_call(
        client: TestClient[Any, Any], agent_host: MakeHost, tmp_path: Path) -> None:
    host = await agent_host(capabilities=["exec"])
    pids_file = tmp_path / "pids"
    script = ("import subprocess, sys\n"  # a new session holding stdout, the pipe, open
              "c = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
              "open(sys.argv[1], 'w').write(str(c.pid))\n"
              "print('bye', flush=True)\n")
    began = time.monotonic()
    try:
        out, result = await collect(start(client, host.server_id,
                                          argv=[PY, "-c", script, str(pids_file)]))
        assert out == b"bye\n" and result["exit_code"] == 0
        assert time.monotonic() - began < 15
    finally:
        for pid in pids_alive(await _pids_from(pids_file, 1)):
            os.kill(pid, 9)

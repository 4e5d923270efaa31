"""The agent config's [terminal], [exec] and [docker] tables: strict, bounded, and
written back complete by ``to_toml`` (what ``enroll`` puts on disk)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from beeyard.agent import config

BASE: dict[str, Any] = {"server": "http://127.0.0.1:1", "server_id": 1, "token_file": "token"}


def test_defaults_are_the_safe_ones() -> None:
    parsed = config.parse(dict(BASE), Path("/tmp"))
    assert parsed.exec.allow_shell is False
    assert parsed.terminal.max_sessions == 4 and parsed.terminal.idle_timeout == 900
    assert parsed.docker.url == "unix:///var/run/docker.sock"


def test_tables_round_trip_through_the_written_file() -> None:
    parsed = config.parse({**BASE, "terminal": {"max_sessions": 2, "shell": "/bin/sh"},
                           "exec": {"allow_shell": True, "max_output_bytes": 4096},
                           "docker": {"url": "unix:///run/podman/podman.sock"}}, Path("/tmp"))
    text = parsed.to_toml()
    assert "[terminal]" in text and "[exec]" in text and "[docker]" in text
    assert config.parse(tomllib.loads(text), Path("/tmp")) == parsed


@pytest.mark.parametrize(("table", "message"), [
    ({"terminal": {"shel": "/bin/sh"}}, "unknown key 'terminal.shel'"),
    ({"exec": {"allow_shell": "yes"}}, "exec.allow_shell must be true or false"),
    ({"exec": {"max_timeout": 0}}, "exec.max_timeout must be between 1 and"),
    ({"terminal": {"max_sessions": True}}, "terminal.max_sessions must be an integer"),
    ({"docker": {"url": 5}}, "docker.url must be a string"),
    ({"docker": "unix:///x"}, "docker"),
])
def test_bad_tables_are_refused_with_the_key_named(table: dict[str, Any], message: str) -> None:
    with pytest.raises(config.ConfigError, match=message.replace(".", r"\.")):
        config.parse({**BASE, **table}, Path("/tmp"))

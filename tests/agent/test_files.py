"""The agent's files: atomic 0600 token, config round trip, the TOML writer, config errors."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beeyard.agent import config as config_module
from beeyard.agent import paths, tomlwriter
from beeyard.agent.atomic import write_atomic
from beeyard.agent.config import AgentConfig, ConfigError, SpoolConfig
from beeyard.agent.token import TokenError, read_token, write_token

TOKEN = "bag_" + "x" * 43


def test_token_is_written_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "agent.token"
    old_umask = os.umask(0)  # even with a permissive umask the file is private
    try:
        write_token(path, TOKEN)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == TOKEN + "\n"
    assert read_token(path) == TOKEN
    assert [p.name for p in path.parent.iterdir()] == ["agent.token"]  # no temp file left


def test_token_replacement_is_atomic_rename(tmp_path: Path) -> None:
    """The new token arrives by rename: a reader holding the old file keeps the old
    content whole, and the path never shows a partial token."""
    path = tmp_path / "agent.token"
    write_token(path, TOKEN)
    before = path.stat().st_ino
    with path.open() as held:
        write_token(path, "bag_" + "y" * 43)
        assert held.read() == TOKEN + "\n"
    assert path.stat().st_ino != before
    assert read_token(path) == "bag_" + "y" * 43


def test_write_atomic_never_leaves_a_torn_file(tmp_path: Path) -> None:
    """A writer killed at random points leaves the old or the new content, never a mix."""
    path = tmp_path / "f"
    write_atomic(path, b"A" * 100_000)
    script = (
        "import sys; from pathlib import Path; from beeyard.agent.atomic import write_atomic\n"
        "p = Path(sys.argv[1])\n"
        "while True: write_atomic(p, b'B' * 100_000); write_atomic(p, b'A' * 100_000)\n"
    )
    for delay in (0.05, 0.1, 0.15, 0.2, 0.3):
        proc = subprocess.Popen([sys.executable, "-c", script, str(path)])
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert path.read_bytes() in (b"A" * 100_000, b"B" * 100_000)


def test_token_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.token"
    write_token(path, TOKEN)
    path.chmod(0o644)
    with pytest.raises(TokenError, match=r"accessible by other users.*chmod 600"):
        read_token(path)


@pytest.mark.parametrize("content", [b"", b"\n", b"two words\n", b"bad\x00token"])
def test_token_file_without_a_token_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "agent.token"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(TokenError, match="does not hold a token"):
        read_token(path)


def test_missing_token_file_says_enroll(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="enroll this host first"):
        read_token(tmp_path / "nope")


def _config(tmp_path: Path, **kw: object) -> AgentConfig:
    values: dict[str, object] = {
        "server": "https://beeyard.example.com/base", "server_id": 42,
        "token_file": tmp_path / "agent.token",
        "spool": SpoolConfig(tmp_path / "spool dir", max_entries=10, replay_rate=5.0),
        "interval": 2.5, "capabilities": ("files", "exec"), "ca_file": tmp_path / "ca.pem",
        "log_level": "debug",
    }
    values.update(kw)
    return AgentConfig(**values)  # type: ignore[arg-type]


def test_config_round_trip(tmp_path: Path) -> None:
    config = _config(tmp_path)
    path = tmp_path / "agent.toml"
    path.write_text(config.to_toml())
    loaded = config_module.load(path)
    assert loaded == config
    assert loaded.path == path
    assert loaded.ws_url == "wss://beeyard.example.com/base/api/agent/ws"
    text = path.read_text()
    assert "# remote operations this host allows, all off by default" in text


def test_config_defaults_are_safe(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('server = "http://127.0.0.1:8420/"\nserver_id = 1\ntoken_file = "t"\n')
    loaded = config_module.load(path)
    assert loaded.capabilities == ()
    assert loaded.interval == 1.0
    assert loaded.spool.max_entries == 1440
    assert loaded.spool.dir == paths.default_spool_dir()
    assert loaded.token_file == tmp_path / "t"  # relative to the config's directory
    assert loaded.ws_url == "ws://127.0.0.1:8420/api/agent/ws"


@pytest.mark.parametrize(("text", "message"), [
    ("server_id = 1\ntoken_file = 't'\n", "missing key 'server'"),
    ("server = 'ftp://x'\nserver_id = 1\ntoken_file = 't'\n", "http:// or https://"),
    ("server = 'http://x'\nserver_id = 0\ntoken_file = 't'\n", "server_id must be a positive"),
    ("server = 'http://x'\nserver_id = true\ntoken_file = 't'\n", "server_id has the wrong type"),
    ("server = 'http://x'\nserver_id = 1\ntoken_file = 't'\ninterval = 0.5\n",
     "interval must be between 1 and 60"),
    ("server = 'http://x'\nserver_id = 1\ntoken_file = 't'\ncapabilites = []\n",
     "unknown key 'capabilites'"),
    ("server = 'http://x'\nserver_id = 1\ntoken_file = 't'\ncapabilities = ['root']\n",
     "unknown capability 'root'"),
    ("server = 'http://x'\nserver_id = 1\ntoken_file = 't'\n[spool]\nmax = 3\n",
     "unknown key 'spool.max'"),
    ("server = 'http://x'\nserver_id = 1\ntoken_file = 't'\n[spool]\nmax_entries = 0\n",
     "spool.max_entries must be between"),
    ("server = 'http://x'\nserver_id = 1\ntoken_file = 't'\nlog_level = 'loud'\n",
     "log_level must be one of"),
    ("server = 'http://x\nserver_id = 1\n", "not valid TOML"),
])
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        config_module.load(path)
    assert str(caught.value).startswith(str(path))
    assert "\n" not in str(caught.value)


def test_missing_config_says_enroll(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="enroll this host first"):
        config_module.load(tmp_path / "agent.toml")


_toml_values = st.recursive(
    st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=8,
)


@given(st.dictionaries(st.text(min_size=1), _toml_values, max_size=5),
       st.dictionaries(st.text(min_size=1), _toml_values, max_size=3))
def test_toml_writer_round_trips_through_tomllib(top: dict[str, object],
                                                 table: dict[str, object]) -> None:
    data: dict[str, object] = dict(top)
    data["table"] = table
    assert tomllib.loads(tomlwriter.dumps(data)) == data


def test_toml_writer_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ValueError, match="finite"):
        tomlwriter.dumps({"x": float("nan")})
    with pytest.raises(TypeError):
        tomlwriter.dumps({"x": object()})
    with pytest.raises(TypeError, match="one level"):
        tomlwriter.dumps({"a": {"b": {"c": 1}}})


def test_default_paths_for_root_and_users(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert paths.default_config() == Path("/etc/beeyard/agent.toml")
    assert paths.default_token_file(paths.default_config()) == Path("/etc/beeyard/agent.token")
    assert paths.default_spool_dir() == Path("/var/lib/beeyard-agent/spool")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    assert paths.default_config() == tmp_path / ".config/beeyard/agent.toml"
    assert paths.default_spool_dir() == tmp_path / ".local/state/beeyard-agent/spool"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert paths.default_config() == tmp_path / "cfg/beeyard/agent.toml"

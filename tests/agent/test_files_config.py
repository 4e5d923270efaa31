"""The agent config's [files] table: safe defaults, round trip, errors naming the key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from beeyard.agent import config as config_module
from beeyard.agent.config import (
    DEFAULT_DENY,
    DEFAULT_MAX_READ_BYTES,
    DEFAULT_MAX_WRITE_BYTES,
    AgentConfig,
    ConfigError,
    FilesConfig,
    SpoolConfig,
)

HEAD = "server = 'http://127.0.0.1:8420'\nserver_id = 1\ntoken_file = 't'\n"


def _load(tmp_path: Path, text: str) -> AgentConfig:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return config_module.load(path)


def test_without_a_files_table_nothing_is_reachable_and_secrets_are_denied(
    tmp_path: Path,
) -> None:
    files = _load(tmp_path, HEAD).files
    assert files.roots == ()
    assert files.deny == DEFAULT_DENY
    for pattern in ("*.key", "*.pem", ".env*", "id_rsa*", "id_ed25519*", "*.kdbx", "shadow",
                    "gshadow", ".ssh"):
        assert pattern in files.deny
    assert files.max_read_bytes == DEFAULT_MAX_READ_BYTES
    assert files.max_write_bytes == DEFAULT_MAX_WRITE_BYTES


def test_files_table_round_trips_through_to_toml(tmp_path: Path) -> None:
    config = AgentConfig(
        server="https://beeyard.example.com", server_id=3, token_file=tmp_path / "agent.token",
        spool=SpoolConfig(tmp_path / "spool"), capabilities=("files",),
        files=FilesConfig(roots=(Path("/srv/www"), Path("/var/log")), deny=("*.key", "a/b*"),
                          max_read_bytes=1000, max_write_bytes=2000),
    )
    path = tmp_path / "agent.toml"
    path.write_text(config.to_toml())
    assert config_module.load(path) == config
    text = path.read_text()
    assert "[files]" in text
    assert "# absolute directories the files capability may reach" in text


def test_an_enrolled_config_lists_the_default_deny_patterns(tmp_path: Path) -> None:
    """enroll writes a complete file, so the operator sees (and edits) the defaults."""
    config = AgentConfig(server="http://x", server_id=1, token_file=tmp_path / "t",
                         spool=SpoolConfig(tmp_path / "spool"))
    path = tmp_path / "agent.toml"
    path.write_text(config.to_toml())
    loaded = config_module.load(path)
    assert loaded.files == FilesConfig()
    assert '"*.key"' in path.read_text()


def test_an_empty_deny_list_is_the_operators_choice(tmp_path: Path) -> None:
    assert _load(tmp_path, HEAD + "[files]\ndeny = []\n").files.deny == ()


def test_roots_are_deduplicated_and_kept_as_written(tmp_path: Path) -> None:
    files = _load(tmp_path, HEAD + "[files]\nroots = ['/srv/', '/srv', '/var/www']\n").files
    assert files.roots == (Path("/srv"), Path("/var/www"))


@pytest.mark.parametrize(("table", "message"), [
    ("files = 3\n", "files has the wrong type"),
    ("[files]\nroot = ['/srv']\n", "unknown key 'files.root'"),
    ("[files]\nroots = '/srv'\n", "files.roots has the wrong type"),
    ("[files]\nroots = [1]\n", "files.roots must be a list of strings"),
    ("[files]\nroots = ['srv']\n", "files.roots entries must be absolute paths"),
    ("[files]\nroots = ['/srv/../etc']\n", "files.roots entries must not contain '..'"),
    ("[files]\nroots = ['']\n", "files.roots entries must be non-empty"),
    ('[files]\nroots = ["/srv\\u0000x"]\n', "without NUL"),
    ("[files]\ndeny = ['']\n", "files.deny entries must be non-empty"),
    ("[files]\ndeny = [true]\n", "files.deny must be a list of strings"),
    ("[files]\nmax_read_bytes = 0\n", "files.max_read_bytes must be between 1 and"),
    ("[files]\nmax_write_bytes = 1099511627777\n", "files.max_write_bytes must be between"),
    ("[files]\nmax_read_bytes = true\n", "files.max_read_bytes has the wrong type"),
    ("[files]\nmax_write_bytes = 1.5\n", "files.max_write_bytes has the wrong type"),
])
def test_files_errors_name_the_key(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(HEAD + table)
    with pytest.raises(ConfigError, match=message) as caught:
        config_module.load(path)
    assert str(caught.value).startswith(str(path))


def test_too_many_roots_or_patterns_are_refused(tmp_path: Path) -> None:
    roots = ", ".join(f"'/r{i}'" for i in range(config_module.MAX_ROOTS + 1))
    with pytest.raises(ConfigError, match="at most"):
        _load(tmp_path, HEAD + f"[files]\nroots = [{roots}]\n")
    deny = ", ".join(f"'p{i}'" for i in range(config_module.MAX_DENY_PATTERNS + 1))
    with pytest.raises(ConfigError, match="at most"):
        _load(tmp_path, HEAD + f"[files]\ndeny = [{deny}]\n")


def test_the_documented_example_shows_the_default_deny_list() -> None:
    """docs/agent.md shows the defaults an operator edits; they must be the real ones."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "agent.md"
    match = re.search(r"```toml\n(.*?)```", docs.read_text(), re.S)
    assert match is not None
    files = config_module.parse_files(tomllib.loads(match.group(1))["files"])
    assert files.deny == DEFAULT_DENY
    assert files.max_read_bytes == DEFAULT_MAX_READ_BYTES
    assert files.max_write_bytes == DEFAULT_MAX_WRITE_BYTES

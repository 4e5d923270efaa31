"""Settings: flags beat env beat defaults, validation messages, the secret key file,
and the redaction of database URLs in logs."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from beeyard.server import config
from beeyard.server.config import ConfigError, Settings, load
from beeyard.server.db.pool import redact


def test_defaults(tmp_path: Path) -> None:
    s = load(data_dir=str(tmp_path), env={})
    assert (s.host, s.port, s.database_url, s.admin_password) == ("127.0.0.1", 8420, None, None)
    assert s.embedded
    assert s.secure_cookies is False
    assert s.shutdown_timeout == 10.0
    assert s.database_wait == 30.0
    assert s.data_dir == tmp_path


def test_environment_beats_defaults(tmp_path: Path) -> None:
    env = {
        "BEEYARD_HOST": "192.0.2.1",
        "BEEYARD_PORT": "9000",
        "BEEYARD_DATA_DIR": str(tmp_path / "from-env"),
        "BEEYARD_DATABASE_URL": "postgresql://u@db/beeyard",
        "BEEYARD_ADMIN_PASSWORD": "a long enough password",
        "BEEYARD_SECURE_COOKIES": "true",
        "BEEYARD_SESSION_TTL": "3600",
        "BEEYARD_SHUTDOWN_TIMEOUT": "2.5",
        "BEEYARD_DATABASE_WAIT": "0",
    }
    s = load(env=env)
    assert s.host == "192.0.2.1"
    assert s.port == 9000
    assert s.data_dir == tmp_path / "from-env"
    assert s.database_url == "postgresql://u@db/beeyard"
    assert not s.embedded
    assert s.admin_password == "a long enough password"
    assert s.secure_cookies is True
    assert s.session_ttl == 3600
    assert s.shutdown_timeout == 2.5
    assert s.database_wait == 0


def test_flags_beat_environment(tmp_path: Path) -> None:
    env = {
        "BEEYARD_HOST": "192.0.2.1",
        "BEEYARD_PORT": "9000",
        "BEEYARD_DATA_DIR": str(tmp_path / "from-env"),
        "BEEYARD_DATABASE_URL": "postgresql://env@db/beeyard",
    }
    s = load(
        host="::1", port=9001, data_dir=str(tmp_path / "from-flag"),
        database_url="postgresql://flag@db/beeyard", env=env,
    )
    assert (s.host, s.port) == ("::1", 9001)
    assert s.data_dir == tmp_path / "from-flag"
    assert s.database_url == "postgresql://flag@db/beeyard"
    assert not (tmp_path / "from-env").exists()


def test_port_zero_from_a_flag_is_kept(tmp_path: Path) -> None:
    assert load(port=0, data_dir=str(tmp_path), env={"BEEYARD_PORT": "9000"}).port == 0


def test_empty_variables_count_as_unset(tmp_path: Path) -> None:
    env = {"BEEYARD_HOST": "", "BEEYARD_PORT": "", "BEEYARD_DATABASE_URL": "",
           "BEEYARD_ADMIN_PASSWORD": "", "BEEYARD_SECRET_KEY": ""}
    s = load(data_dir=str(tmp_path), env=env)
    assert (s.host, s.port, s.database_url, s.admin_password) == ("127.0.0.1", 8420, None, None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BEEYARD_PORT": "http"}, "BEEYARD_PORT must be an integer, got 'http'"),
        ({"BEEYARD_PORT": "65536"}, "port must be between 0 and 65535"),
        ({"BEEYARD_PORT": "-1"}, "port must be between 0 and 65535"),
        ({"BEEYARD_SESSION_TTL": "1d"}, "BEEYARD_SESSION_TTL must be an integer"),
        ({"BEEYARD_SESSION_TTL": "-5"}, "BEEYARD_SESSION_TTL must be between 60 and"),
        ({"BEEYARD_SESSION_TTL": "1000000000000"}, "BEEYARD_SESSION_TTL must be between 60"),
        ({"BEEYARD_SHUTDOWN_TIMEOUT": "x"}, "BEEYARD_SHUTDOWN_TIMEOUT must be a number"),
        ({"BEEYARD_DATABASE_WAIT": "-3"}, "BEEYARD_DATABASE_WAIT must be between 0 and 3600"),
        ({"BEEYARD_SECRET_KEY": "x" * 31}, "BEEYARD_SECRET_KEY must be at least 32 characters"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load(data_dir=str(tmp_path), env=env)


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").touch()
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        load(data_dir=str(tmp_path / "f"), env={})


def test_data_dir_is_created_private(tmp_path: Path) -> None:
    s = load(data_dir=str(tmp_path / "a" / "b"), env={})
    assert s.data_dir.is_dir()
    assert stat.S_IMODE(s.data_dir.stat().st_mode) & 0o077 == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to any directory")
def test_unwritable_data_dir(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="not writable"):
        load(data_dir=str(tmp_path / "ro"), env={})


def test_secret_key_is_generated_once_0600_and_kept(tmp_path: Path) -> None:
    first = load(data_dir=str(tmp_path), env={}).secret_key
    path = tmp_path / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 32
    assert load(data_dir=str(tmp_path), env={}).secret_key == first


def test_secret_key_file_is_private_even_with_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        config.write_private(tmp_path / "f", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o600


def test_given_secret_key_wins_and_writes_nothing(tmp_path: Path) -> None:
    key = "k" * 40
    s = load(data_dir=str(tmp_path), env={"BEEYARD_SECRET_KEY": key})
    assert s.secret_key == key.encode()
    assert not (tmp_path / "secret.key").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [("not base64 !!!\n", "not a valid secret key file"),
     (base64.urlsafe_b64encode(b"short").decode(), "shorter than 32 bytes")],
)
def test_damaged_secret_key_file_is_reported(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "secret.key").write_text(content)
    with pytest.raises(ConfigError, match=message):
        load(data_dir=str(tmp_path), env={})


def test_default_data_dir_for_a_normal_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", "/home/u/.data")
    assert config.default_data_dir() == Path("/home/u/.data/beeyard")
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", "/home/u")
    assert config.default_data_dir() == Path("/home/u/.local/share/beeyard")


def test_default_data_dir_for_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert config.default_data_dir() == Path("/var/lib/beeyard")


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p%40ss%3Aw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db?password=secret&sslmode=require",
         "postgresql://u@h/db?password=***&sslmode=require"),
        ("postgresql://postgres@/beeyard?host=/run/pg&port=5432",
         "postgresql://postgres@/beeyard?host=/run/pg&port=5432"),
        ("postgresql://h/db", "postgresql://h/db"),
        ("host=/run/pg user=u password=secret dbname=b",
         "host=/run/pg user=u password=*** dbname=b"),
        ("host=h password = 'sec ret' user=u", "host=h password = *** user=u"),
    ],
)
def test_database_urls_are_logged_without_passwords(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert "secret" not in redact(url)


def test_trusted_proxies_are_parsed(tmp_path: Path) -> None:
    s = load(data_dir=str(tmp_path), env={"BEEYARD_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8 ::1"})
    assert [str(n) for n in s.trusted_proxies] == ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
    with pytest.raises(ConfigError, match="BEEYARD_TRUSTED_PROXIES: 'nginx' is not an IP"):
        load(data_dir=str(tmp_path), env={"BEEYARD_TRUSTED_PROXIES": "nginx"})


@pytest.mark.parametrize(
    ("proxies", "remote", "forwarded", "seen"),
    [
        ("", "127.0.0.1", "203.0.113.9", "127.0.0.1"),  # no proxy trusted: header ignored
        ("127.0.0.1", "127.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", "198.51.100.1", "203.0.113.9", "198.51.100.1"),  # not from the proxy
        ("127.0.0.1 10.0.0.0/8", "127.0.0.1", "6.6.6.6, 203.0.113.9, 10.1.2.3", "203.0.113.9"),
        ("127.0.0.1", "127.0.0.1", "garbage", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1", None, "127.0.0.1"),
    ],
)
def test_client_ip_behind_a_proxy(
    tmp_path: Path, proxies: str, remote: str, forwarded: str | None, seen: str
) -> None:
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from beeyard.server import context

    app = web.Application()
    app[context.SETTINGS] = load(data_dir=str(tmp_path),
                                 env={"BEEYARD_TRUSTED_PROXIES": proxies})
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    request = make_mocked_request("GET", "/", headers=headers, app=app).clone(remote=remote)
    assert context.client_ip(request) == seen


def test_concurrent_first_starts_agree_on_one_secret_key(tmp_path: Path) -> None:
    """Servers starting together on one empty data dir must not each keep their own key."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: config.load_secret(tmp_path, None), range(32)))
    assert len(keys) == 1
    assert config.load_secret(tmp_path, None) in keys
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]  # no temporary files left


def test_a_secret_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    load(data_dir=str(tmp_path), env={})
    key = tmp_path / "secret.key"
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by other users .*chmod 600"):
        load(data_dir=str(tmp_path), env={})
    key.chmod(0o600)
    assert load(data_dir=str(tmp_path), env={}).secret_key

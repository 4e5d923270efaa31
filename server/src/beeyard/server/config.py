"""One frozen settings object, from CLI flags, then ``BEEYARD_*`` env, then defaults.

Everything the server reads from its environment is read here, once, so the
rest of the code takes a ``Settings`` and never looks at ``os.environ``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(Exception):
    """A setting is wrong; the message says which and how to fix it."""


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/beeyard")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "beeyard"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8420
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    secret_key: bytes = b""
    admin_password: str | None = None
    session_ttl: int = 7 * 24 * 3600  # browser session lifetime, seconds
    access_token_ttl: int = 15 * 60  # mobile access token
    refresh_token_ttl: int = 30 * 24 * 3600  # mobile refresh token
    login_max_failures: int = 5  # per IP and per account within the window
    login_window: int = 60
    login_lockout: int = 300
    audit_retention_days: int = 365  # housekeeping deletes older audit records
    # Metric tiers (services/rollups.py drops whole partitions past these).
    metrics_minute_retention_days: int = 30
    metrics_hour_retention_days: int = 400
    metrics_day_retention_days: int = 5 * 365 + 1
    secure_cookies: bool = False  # set when served over HTTPS (directly or behind a proxy)
    shutdown_timeout: float = 10.0  # how long in-flight requests may take to finish on stop
    database_wait: float = 30.0  # how long to wait at start for an external database
    agent_heartbeat: float = 5.0  # seconds between pings each way on the agent link
    # Reverse proxies whose X-Forwarded-For names the client (audit log, sign-in throttle).
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @property
    def embedded(self) -> bool:
        return self.database_url is None


def _env_int(env: Mapping[str, str], name: str, value: int | None, default: int) -> int:
    if value is not None:
        return value
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _bounded(value: int, name: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high} seconds, got {value}")
    return value


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 <= value <= 3600:
        raise ConfigError(f"{name} must be between 0 and 3600 seconds, got {raw!r}")
    return value


def _networks(
    env: Mapping[str, str], name: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for item in env.get(name, "").replace(",", " ").split():
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(
                f"{name}: {item!r} is not an IP address or network (e.g. 127.0.0.1, 10.0.0.0/8)"
            ) from None
    return tuple(out)


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def load_secret(data_dir: Path, given: str | None) -> bytes:
    """The server secret: given, or generated once and kept 0600 in the data directory.

    Several replicas sharing a database must be given the same key.
    """
    if given:
        if len(given) < 32:
            raise ConfigError("BEEYARD_SECRET_KEY must be at least 32 characters")
        return given.encode()
    path = data_dir / "secret.key"
    if path.exists():
        try:
            raw = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the secret key {path}: {exc.strerror}") from None
        try:
            key = base64.urlsafe_b64decode(raw)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{path} is not a valid secret key file") from None
        if len(key) < 32:
            raise ConfigError(f"{path} holds a key shorter than 32 bytes")
        mode = path.stat().st_mode & 0o077
        if mode:
            raise ConfigError(
                f"{path} is readable by other users (mode {path.stat().st_mode & 0o777:o}): "
                f"anyone who reads it can forge sessions; run chmod 600 {path}"
            )
        return key
    key = secrets.token_bytes(32)
    try:
        write_private(path, base64.urlsafe_b64encode(key).decode() + "\n", exclusive=True)
    except FileExistsError:  # a server starting at the same moment wrote it first
        return load_secret(data_dir, None)
    except OSError as exc:
        raise ConfigError(f"cannot write the secret key to {path}: {exc.strerror}") from None
    return key


def write_private(path: Path, text: str, *, exclusive: bool = False) -> None:
    """Write a file that only its owner can read, never briefly readable by others and
    never seen half-written. ``exclusive``: fail with FileExistsError if it exists."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)  # atomic, and refuses to replace
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def load(
    *,
    host: str | None = None,
    port: int | None = None,
    data_dir: str | None = None,
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Build settings; flags win over env, env over defaults. Creates the data directory."""
    env = os.environ if env is None else env
    directory = Path(data_dir or env.get("BEEYARD_DATA_DIR") or default_data_dir()).absolute()
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"data directory {directory} exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create data directory {directory}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(
            f"data directory {directory} is not writable by this user (uid {os.geteuid()})"
        )
    port_value = _env_int(env, "BEEYARD_PORT", port, 8420)
    if not 0 <= port_value <= 65535:
        raise ConfigError(f"port must be between 0 and 65535, got {port_value}")
    retention = _env_int(env, "BEEYARD_AUDIT_RETENTION_DAYS", None, 365)
    if retention < 1:
        raise ConfigError(f"BEEYARD_AUDIT_RETENTION_DAYS must be at least 1 day, got {retention}")
    metric_days = {
        tier: _env_int(env, f"BEEYARD_METRICS_{tier.upper()}_RETENTION_DAYS", None, default)
        for tier, default in (("minute", 30), ("hour", 400), ("day", 5 * 365 + 1))
    }
    for tier, days in metric_days.items():
        if not 2 <= days <= 36500:
            raise ConfigError(f"BEEYARD_METRICS_{tier.upper()}_RETENTION_DAYS must be between "
                              f"2 and 36500 days, got {days}")
    return Settings(
        host=host or env.get("BEEYARD_HOST") or "127.0.0.1",
        port=port_value,
        data_dir=directory,
        database_url=database_url or env.get("BEEYARD_DATABASE_URL") or None,
        secret_key=load_secret(directory, env.get("BEEYARD_SECRET_KEY")),
        admin_password=env.get("BEEYARD_ADMIN_PASSWORD") or None,
        secure_cookies=_flag(env, "BEEYARD_SECURE_COOKIES"),
        session_ttl=_bounded(
            _env_int(env, "BEEYARD_SESSION_TTL", None, 7 * 24 * 3600),
            "BEEYARD_SESSION_TTL", 60, 366 * 24 * 3600,
        ),
        shutdown_timeout=_env_float(env, "BEEYARD_SHUTDOWN_TIMEOUT", 10.0),
        database_wait=_env_float(env, "BEEYARD_DATABASE_WAIT", 30.0),
        trusted_proxies=_networks(env, "BEEYARD_TRUSTED_PROXIES"),
        audit_retention_days=retention,
        metrics_minute_retention_days=metric_days["minute"],
        metrics_hour_retention_days=metric_days["hour"],
        metrics_day_retention_days=metric_days["day"],
        agent_heartbeat=_heartbeat(env),
    )


def _heartbeat(env: Mapping[str, str]) -> float:
    value = _env_float(env, "BEEYARD_AGENT_HEARTBEAT", 5.0)
    if not 1 <= value <= 300:
        raise ConfigError(
            f"BEEYARD_AGENT_HEARTBEAT must be between 1 and 300 seconds, got {value:g}"
        )
    return value

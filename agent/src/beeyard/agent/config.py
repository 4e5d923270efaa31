"""The agent's config file: one TOML file, read with ``tomllib``, checked strictly.

Strict because this file is the agent's local security policy: the
capabilities listed here are the only operations the agent will ever allow,
and a typo such as ``capabilites = [...]`` must be an error, not a silently
ignored key. Everything has a safe default; ``enroll`` writes a complete file
so an operator sees every key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from beeyard.agent import paths, tomlwriter
from beeyard.shared.frames import CAPABILITIES

DEFAULT_INTERVAL = 1.0
DEFAULT_SPOOL_ENTRIES = 1440  # 24 h of minute summaries
DEFAULT_REPLAY_RATE = 20.0  # summaries per second after a reconnect
DEFAULT_SUMMARY_SPREAD = 30.0  # seconds: each agent sends its minute summary 0-30 s late
MAX_SUMMARY_SPREAD = 50.0  # a summary must go out before the next minute closes
LOG_LEVELS = ("debug", "info", "warning", "error")

# [files]: what the files capability may touch. Secrets are denied by default
# because a root is usually a broad directory (/srv, /var/www, a home) in which
# keys, dotenv files and password stores sit beside the files one does want to
# reach; the operator may edit the list (it replaces, not extends, this one).
DEFAULT_DENY: tuple[str, ...] = (
    "*.key", "*.pem", "*.p12", "*.pfx", "*.jks", "*.kdbx",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", ".ssh", ".gnupg",
    ".env*", ".netrc", ".pgpass", ".git-credentials", ".aws",
    "shadow", "shadow-", "gshadow", "gshadow-",
)
DEFAULT_MAX_READ_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_WRITE_BYTES = 64 * 1024 * 1024
MAX_TRANSFER_BYTES = 1024**4  # 1 TiB: a bound that catches a typo'd exponent
MAX_ROOTS = 64
MAX_DENY_PATTERNS = 256


class ConfigError(ValueError):
    """The config file is missing, unreadable or invalid; the message says which key."""


@dataclass(frozen=True)
class SpoolConfig:
    dir: Path
    max_entries: int = DEFAULT_SPOOL_ENTRIES
    replay_rate: float = DEFAULT_REPLAY_RATE


@dataclass(frozen=True)
class FilesConfig:
    """The files capability's local policy; ``beeyard.agent.files.confine`` enforces it.

    With no roots nothing is reachable, even with ``files`` in the capabilities:
    turning the capability on must be a second, explicit decision about *where*.
    """

    roots: tuple[Path, ...] = ()
    deny: tuple[str, ...] = DEFAULT_DENY
    max_read_bytes: int = DEFAULT_MAX_READ_BYTES
    max_write_bytes: int = DEFAULT_MAX_WRITE_BYTES


@dataclass(frozen=True)
class TerminalConfig:
    """The terminal capability's local policy (operations/terminal.py).

    ``user`` empty means the agent's own user; an agent running as root should
    name a less privileged one unless root shells are really wanted."""

    shell: str = ""  # empty: the user's login shell from the password database
    user: str = ""
    idle_timeout: int = 900  # seconds without input or output before a session ends
    max_sessions: int = 4


@dataclass(frozen=True)
class ExecConfig:
    """The exec capability's local policy (operations/exec.py): commands are argv
    lists unless ``allow_shell`` lets a shell line through ``/bin/sh -c``."""

    allow_shell: bool = False
    user: str = ""
    max_timeout: int = 3600  # seconds; a task's own timeout is capped by this
    max_output_bytes: int = 1024 * 1024  # per run; beyond, output is cut and marked
    max_concurrent: int = 4


@dataclass(frozen=True)
class DockerConfig:
    """Where the Docker API is (operations/docker.py); a missing socket means docker
    is reported unavailable, not an error on every request."""

    url: str = "unix:///var/run/docker.sock"
    timeout: int = 30


@dataclass(frozen=True)
class AgentConfig:
    server: str
    server_id: int
    token_file: Path
    spool: SpoolConfig
    interval: float = DEFAULT_INTERVAL
    summary_spread: float = DEFAULT_SUMMARY_SPREAD
    capabilities: tuple[str, ...] = ()
    ca_file: Path | None = None
    log_level: str = "info"
    files: FilesConfig = field(default_factory=FilesConfig)
    terminal: TerminalConfig = field(default_factory=TerminalConfig)
    exec: ExecConfig = field(default_factory=ExecConfig)
    docker: DockerConfig = field(default_factory=DockerConfig)
    path: Path | None = field(default=None, compare=False)

    @property
    def ws_url(self) -> str:
        """``{server}/api/agent/ws`` with http→ws and https→wss."""
        parts = urlsplit(self.server)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = parts.path.rstrip("/") + "/api/agent/ws"
        return urlunsplit((scheme, parts.netloc, path, "", ""))

    def to_toml(self) -> str:
        data: dict[str, Any] = {
            "server": self.server,
            "server_id": self.server_id,
            "token_file": str(self.token_file),
            "interval": float(self.interval),
            "summary_spread": float(self.summary_spread),
            "capabilities": list(self.capabilities),
            "log_level": self.log_level,
        }
        if self.ca_file is not None:
            data["ca_file"] = str(self.ca_file)
        data["spool"] = {
            "dir": str(self.spool.dir),
            "max_entries": self.spool.max_entries,
            "replay_rate": float(self.spool.replay_rate),
        }
        data["files"] = {
            "roots": [str(root) for root in self.files.roots],
            "deny": list(self.files.deny),
            "max_read_bytes": self.files.max_read_bytes,
            "max_write_bytes": self.files.max_write_bytes,
        }
        for name in _SECTIONS:
            data[name] = dict(vars(getattr(self, name)))
        comments = {
            "server": "Beeyard agent configuration (written by `beeyard-agent enroll`)",
            "token_file": "the run token (0600); rotated by the server over the link",
            "interval": "seconds between live samples, 1 to 60",
            "summary_spread": "a closed minute's summary is sent at a point this agent picks "
            "in the next 0 to this many seconds (0 to 50), so that a fleet's summaries do not "
            "all reach the server at once",
            "capabilities": "remote operations this host allows, all off by default: "
            + ", ".join(CAPABILITIES),
            "log_level": "one of " + ", ".join(LOG_LEVELS),
            "ca_file": "PEM bundle to verify the server's certificate (default: system CAs)",
            "spool.dir": "unacknowledged minute summaries, kept across restarts",
            "spool.max_entries": "bound of the spool (1440 = 24 h); the oldest are dropped",
            "spool.replay_rate": "summaries per second replayed after a reconnect",
            "files.roots": "absolute directories the files capability may reach; "
            "none = nothing (the agent's own config, token and spool never are)",
            "files.deny": "glob patterns denied in every root, matched against each path "
            "component and the path below its root; this list replaces the defaults",
            "files.max_read_bytes": "largest file the agent will read or send, in bytes",
            "files.max_write_bytes": "largest file the agent will write or receive, in bytes",
            "terminal.shell": "program run in a web terminal (empty: the user's login shell)",
            "terminal.user": "user the shell runs as (empty: the agent's own user)",
            "terminal.idle_timeout": "seconds without input or output before a session ends",
            "terminal.max_sessions": "concurrent terminal sessions on this host",
            "exec.allow_shell": "let tasks run a shell line (/bin/sh -c) instead of argv only",
            "exec.user": "user commands run as (empty: the agent's own user)",
            "exec.max_timeout": "longest a command may run, in seconds",
            "exec.max_output_bytes": "output kept per command; beyond, it is cut",
            "exec.max_concurrent": "commands running at once",
            "docker.url": "the Docker API (a unix socket, e.g. podman's)",
            "docker.timeout": "seconds to wait for the Docker API",
        }
        return tomlwriter.dumps(data, comments)


def check_server_url(url: str) -> str:
    """An http(s) URL without query or fragment; the trailing slash is dropped."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"server must be an http:// or https:// URL, not {url!r}")
    if parts.query or parts.fragment:
        raise ConfigError("server URL must not have a query or fragment")
    return url.rstrip("/")


_TOP = {"terminal", "exec", "docker",
        "server", "server_id", "token_file", "interval", "summary_spread", "capabilities",
        "ca_file", "log_level",
        "spool", "files"}
_SPOOL = {"dir", "max_entries", "replay_rate"}
_FILES = {"roots", "deny", "max_read_bytes", "max_write_bytes"}


def load(path: Path) -> AgentConfig:
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"no config at {path}: enroll this host first (beeyard-agent enroll)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse(raw, base=path.parent, path=path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _get(raw: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    value = raw[key]
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{where}{key} has the wrong type")
    if not isinstance(value, kind):
        raise ConfigError(f"{where}{key} has the wrong type")
    return value


def parse(raw: dict[str, Any], base: Path, path: Path | None = None) -> AgentConfig:
    """Build a config from parsed TOML; relative paths are relative to ``base``."""
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}")
    for key in ("server", "server_id", "token_file"):
        if key not in raw:
            raise ConfigError(f"missing key {key!r}")
    server = check_server_url(_get(raw, "server", str))
    server_id = _get(raw, "server_id", int)
    if server_id < 1:
        raise ConfigError("server_id must be a positive integer")
    token_file = base / _get(raw, "token_file", str)
    interval = float(_get(raw, "interval", (int, float))) if "interval" in raw else 1.0
    if not 1 <= interval <= 60:
        raise ConfigError("interval must be between 1 and 60 seconds")
    spread = (float(_get(raw, "summary_spread", (int, float))) if "summary_spread" in raw
              else DEFAULT_SUMMARY_SPREAD)
    if not 0 <= spread <= MAX_SUMMARY_SPREAD:
        raise ConfigError(f"summary_spread must be between 0 and {MAX_SUMMARY_SPREAD:g} seconds")
    caps_raw = _get(raw, "capabilities", list) if "capabilities" in raw else []
    for cap in caps_raw:
        if cap not in CAPABILITIES:
            raise ConfigError(
                f"unknown capability {cap!r} (known: {', '.join(CAPABILITIES)})"
            )
    ca_file = base / _get(raw, "ca_file", str) if raw.get("ca_file") else None
    log_level = _get(raw, "log_level", str) if "log_level" in raw else "info"
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")

    spool_raw = _get(raw, "spool", dict) if "spool" in raw else {}
    unknown = sorted(set(spool_raw) - _SPOOL)
    if unknown:
        raise ConfigError(f"unknown key 'spool.{unknown[0]}'")
    spool_dir = (
        base / _get(spool_raw, "dir", str, "spool.") if "dir" in spool_raw
        else paths.default_spool_dir()
    )
    max_entries = (
        _get(spool_raw, "max_entries", int, "spool.") if "max_entries" in spool_raw
        else DEFAULT_SPOOL_ENTRIES
    )
    if not 1 <= max_entries <= 1_000_000:
        raise ConfigError("spool.max_entries must be between 1 and 1000000")
    replay_rate = (
        float(_get(spool_raw, "replay_rate", (int, float), "spool."))
        if "replay_rate" in spool_raw else DEFAULT_REPLAY_RATE
    )
    if not 0.1 <= replay_rate <= 10_000:
        raise ConfigError("spool.replay_rate must be between 0.1 and 10000 per second")
    files = parse_files(_get(raw, "files", dict) if "files" in raw else {})
    sections = {name: _section(raw, name, kind) for name, kind in _SECTIONS.items()}
    return AgentConfig(
        server=server,
        server_id=server_id,
        token_file=token_file,
        spool=SpoolConfig(spool_dir, max_entries, replay_rate),
        interval=interval,
        summary_spread=spread,
        capabilities=tuple(dict.fromkeys(caps_raw)),
        ca_file=ca_file,
        log_level=log_level,
        files=files,
        path=path,
        **sections,
    )


# Plain tables: each key's type is its default's, ints must be positive (and at most
# the bound given here); files has rules of its own (parse_files).
_SECTIONS: dict[str, type] = {"terminal": TerminalConfig, "exec": ExecConfig,
                              "docker": DockerConfig}
_INT_BOUNDS = {"idle_timeout": 7 * 86400, "max_sessions": 1024, "max_timeout": 7 * 86400,
               "max_output_bytes": 1024**3, "max_concurrent": 1024, "timeout": 3600}


def _section(raw: dict[str, Any], name: str, kind: type) -> Any:
    table = _get(raw, name, dict) if name in raw else {}
    defaults = kind()
    known = vars(defaults)
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"unknown key '{name}.{unknown[0]}'")
    values: dict[str, Any] = {}
    for key, value in table.items():
        default = known[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{name}.{key} must be true or false")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name}.{key} must be an integer")
            if not 1 <= value <= _INT_BOUNDS[key]:
                raise ConfigError(f"{name}.{key} must be between 1 and {_INT_BOUNDS[key]}")
        elif not isinstance(value, str) or "\0" in value:
            raise ConfigError(f"{name}.{key} must be a string")
        values[key] = value
    return kind(**values)


def _string_list(raw: dict[str, Any], key: str) -> list[str]:
    """A list of non-empty strings without NUL (which no path or pattern can hold)."""
    values: list[str] = _get(raw, key, list, "files.")
    for item in values:
        if not isinstance(item, str):
            raise ConfigError(f"files.{key} must be a list of strings")
        if not item or "\0" in item:
            raise ConfigError(f"files.{key} entries must be non-empty and without NUL")
    return values


def _roots(raw: dict[str, Any]) -> tuple[Path, ...]:
    """Absolute paths only: a root relative to the config file's directory would be
    a surprise in a security policy. Existence is checked when the policy is built,
    not here, so that a root on a not-yet-mounted disk does not stop the agent."""
    roots = _string_list(raw, "roots") if "roots" in raw else []
    if len(roots) > MAX_ROOTS:
        raise ConfigError(f"files.roots may list at most {MAX_ROOTS} directories")
    for root in roots:
        if not root.startswith("/"):
            raise ConfigError(f"files.roots entries must be absolute paths, not {root!r}")
        if ".." in root.split("/"):
            raise ConfigError(f"files.roots entries must not contain '..': {root!r}")
    return tuple(dict.fromkeys(Path(root) for root in roots))


def _size(raw: dict[str, Any], key: str, default: int) -> int:
    value: int = _get(raw, key, int, "files.") if key in raw else default
    if not 1 <= value <= MAX_TRANSFER_BYTES:
        raise ConfigError(f"files.{key} must be between 1 and {MAX_TRANSFER_BYTES}")
    return value


def parse_files(raw: dict[str, Any]) -> FilesConfig:
    """The ``[files]`` table; every key optional, unknown keys an error."""
    unknown = sorted(set(raw) - _FILES)
    if unknown:
        raise ConfigError(f"unknown key 'files.{unknown[0]}'")
    deny = _string_list(raw, "deny") if "deny" in raw else list(DEFAULT_DENY)
    if len(deny) > MAX_DENY_PATTERNS:
        raise ConfigError(f"files.deny may list at most {MAX_DENY_PATTERNS} patterns")
    return FilesConfig(
        roots=_roots(raw),
        deny=tuple(dict.fromkeys(deny)),
        max_read_bytes=_size(raw, "max_read_bytes", DEFAULT_MAX_READ_BYTES),
        max_write_bytes=_size(raw, "max_write_bytes", DEFAULT_MAX_WRITE_BYTES),
    )

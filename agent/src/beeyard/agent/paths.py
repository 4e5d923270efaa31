"""Where the agent keeps its files by default.

As root (a system service) the config and token live under /etc/beeyard and
the spool under /var/lib/beeyard-agent, as a packaged daemon's would. As a
normal user everything stays in that user's XDG directories, so trying the
agent needs no privileges and touches nothing outside the home directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def is_root() -> bool:
    return os.geteuid() == 0


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable, "")
    return Path(value) if value and os.path.isabs(value) else Path.home() / fallback


def config_dir() -> Path:
    return Path("/etc/beeyard") if is_root() else _xdg("XDG_CONFIG_HOME", ".config") / "beeyard"


def default_config() -> Path:
    return config_dir() / "agent.toml"


def default_token_file(config: Path) -> Path:
    """The token sits beside its config: ``agent.toml`` → ``agent.token``."""
    return config.with_suffix(".token")


def default_spool_dir() -> Path:
    if is_root():
        return Path("/var/lib/beeyard-agent/spool")
    return _xdg("XDG_STATE_HOME", ".local/state") / "beeyard-agent" / "spool"

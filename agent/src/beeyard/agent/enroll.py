"""``beeyard-agent enroll``: trade a one-time code for a run token, write config and token.

The contract with the server (``POST {server}/api/agent/register``):

    request   {"code": "...", "name": "..." (optional), "host": <Host map of hello>}
    201       {"data": {"server_id": <int>, "token": "<run token>"}}
    4xx       {"error": "<why>"}   (bad, used or expired code, invalid body)

Every failure is an ``EnrollError`` with one line for the operator. Local
checks (an existing config, an unwritable directory) run before the request,
because the request consumes the code: failing after it would waste it.
The token is written before the config, atomically and 0600, so a config
never points at a token that is not there.

The HTTP client is the standard library's urllib, loaded only for this
command: enrollment runs once, and the daemon should not carry it.
"""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path
from typing import Any

from beeyard.agent import __version__, paths
from beeyard.agent.atomic import write_atomic
from beeyard.agent.config import (
    DEFAULT_INTERVAL,
    AgentConfig,
    ConfigError,
    SpoolConfig,
    check_server_url,
)
from beeyard.agent.token import write_token

TIMEOUT = 20.0
_MAX_BODY = 1 << 20


class EnrollError(Exception):
    """Enrollment failed; the message is the one line the operator sees."""


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as exc:
        raise EnrollError(f"cannot create {directory}: {exc.strerror or exc}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise EnrollError(f"cannot write to {directory} (run as root, or choose --config)")


def register(
    server: str, code: str, name: str | None, host: dict[str, Any], ca_file: Path | None = None
) -> tuple[int, str]:
    """POST the code; returns (server_id, token) or raises ``EnrollError``."""
    import http.client
    import urllib.error
    import urllib.request

    body: dict[str, Any] = {"code": code, "host": host}
    if name is not None:
        body["name"] = name
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked to be http(s)
        f"{server}/api/agent/register",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json",
                 "User-Agent": f"beeyard-agent/{__version__}"},
    )
    context = None
    if server.startswith("https:"):
        try:
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise EnrollError(f"cannot load the CA file {ca_file}: {exc}") from None
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:  # noqa: S310
            status = response.status
            raw = response.read(_MAX_BODY)
    except urllib.error.HTTPError as exc:
        message = _error_text(exc.read(_MAX_BODY)) or exc.reason or "refused"
        raise EnrollError(f"the server refused the enrollment (HTTP {exc.code}): {message}") \
            from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        text = getattr(reason, "strerror", None) or str(reason)
        raise EnrollError(f"cannot reach {server}: {text}") from None
    except (TimeoutError, http.client.HTTPException, OSError) as exc:
        raise EnrollError(f"cannot reach {server}: {exc or type(exc).__name__}") from None
    if status not in (200, 201):
        raise EnrollError(f"unexpected answer from {server}: HTTP {status}")
    try:
        data = json.loads(raw)["data"]
        server_id, token = data["server_id"], data["token"]
    except (ValueError, KeyError, TypeError):
        raise EnrollError(f"unexpected answer from {server}: not an enrollment result") from None
    if isinstance(server_id, bool) or not isinstance(server_id, int) or server_id < 1:
        raise EnrollError(f"unexpected answer from {server}: bad server_id")
    if (not isinstance(token, str) or not 16 <= len(token) <= 512 or not token.isascii()
            or not token.isprintable() or any(c.isspace() for c in token)):
        raise EnrollError(f"unexpected answer from {server}: bad token")
    return server_id, token


def _error_text(raw: bytes) -> str | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return " ".join(data["error"].split())[:500]
    return None


def enroll(
    *,
    server: str,
    code: str,
    config_path: Path,
    name: str | None = None,
    force: bool = False,
    token_file: Path | None = None,
    spool_dir: Path | None = None,
    ca_file: Path | None = None,
    interval: float = DEFAULT_INTERVAL,
) -> AgentConfig:
    try:
        server = check_server_url(server)
    except ConfigError as exc:
        raise EnrollError(str(exc)) from None
    code = code.strip()
    if not code:
        raise EnrollError("the enrollment code is empty")
    if name is not None and not 1 <= len(name) <= 255:
        raise EnrollError("--name must have 1 to 255 characters")
    if not 1 <= interval <= 60:
        raise EnrollError("--interval must be between 1 and 60 seconds")
    if ca_file is not None and not ca_file.is_file():
        raise EnrollError(f"no CA file at {ca_file}")
    config_path = config_path.absolute()
    if config_path.exists() and not force:
        raise EnrollError(
            f"{config_path} already exists: this host is enrolled (use --force to replace it)"
        )
    token_path = (token_file or paths.default_token_file(config_path)).absolute()
    _check_writable(config_path.parent)
    _check_writable(token_path.parent)

    from beeyard.agent.hostfacts import host_facts

    server_id, token = register(server, code, name, host_facts(), ca_file)
    config = AgentConfig(
        server=server,
        server_id=server_id,
        token_file=token_path,
        spool=SpoolConfig((spool_dir or paths.default_spool_dir()).absolute()),
        interval=float(interval),
        ca_file=ca_file.absolute() if ca_file else None,
        path=config_path,
    )
    try:
        write_token(token_path, token)
        write_atomic(config_path, config.to_toml().encode(), mode=0o644)
    except OSError as exc:
        raise EnrollError(f"enrolled as server {server_id}, but cannot write the files: "
                          f"{exc}") from None
    return config

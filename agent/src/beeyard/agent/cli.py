"""Command line of ``beeyard-agent``: ``enroll``, ``run``, ``grant``, ``revoke``, ``--version``.

Each command imports what it needs only when chosen, so the long-running
``run`` never carries the HTTP client of ``enroll`` (the daemon's memory is
a budget). Every expected failure is one line on stderr and a non-zero exit:
2 for a usage or configuration problem, 1 for a failed enrollment, 3 when
the server refused this agent for good (a restart will not help).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from beeyard.agent import __version__

EXIT_CONFIG = 2
EXIT_ENROLL = 1


def _parser() -> argparse.ArgumentParser:
    from beeyard.agent import paths

    default_config = paths.default_config()
    parser = argparse.ArgumentParser(
        prog="beeyard-agent",
        description="Beeyard host agent: one outbound WebSocket to a Beeyard server.",
    )
    parser.add_argument("--version", action="version", version=f"beeyard-agent {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    enroll = commands.add_parser(
        "enroll", help="register this host with a one-time code; writes config and token",
        description="Register this host with a server using a one-time enrollment code.",
    )
    enroll.add_argument("--server", required=True, metavar="URL",
                        help="the server's address, e.g. https://beeyard.example.com")
    enroll.add_argument("--code", required=True, help="the one-time enrollment code")
    enroll.add_argument("--config", type=Path, default=default_config, metavar="PATH",
                        help=f"config file to write (default: {default_config})")
    enroll.add_argument("--name", help="display name on the server (default: the hostname)")
    enroll.add_argument("--force", action="store_true", help="replace an existing config")
    enroll.add_argument("--token-file", type=Path, metavar="PATH",
                        help="where to keep the token (default: beside the config, .token)")
    enroll.add_argument("--spool-dir", type=Path, metavar="PATH",
                        help="where unacknowledged summaries wait (default: "
                        f"{paths.default_spool_dir()})")
    enroll.add_argument("--ca-file", type=Path, metavar="PATH",
                        help="PEM bundle to verify an https server (default: system CAs)")
    enroll.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                        help="seconds between samples, 1 to 60 (default: 1)")

    run = commands.add_parser(
        "run", help="run the agent in the foreground (as systemd does)",
        description="Connect to the server and stream metrics until stopped.",
    )
    run.add_argument("--config", type=Path, default=default_config, metavar="PATH",
                     help=f"config file (default: {default_config})")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                     help="overrides the config's log_level")

    grant = commands.add_parser(
        "grant", help="allow a capability for a limited time (or --list the grants)",
        description="Allow a capability on this host for a limited time, on top of the "
        "config file; it ends by itself. Only root or the config's owner may grant, since "
        "they could as well add it to the config. A running agent reports the new set at "
        "its next connection.",
    )
    grant.add_argument("capability", nargs="?", metavar="CAP",
                       help="one of: " + ", ".join(_capabilities()))
    grant.add_argument("--for", dest="duration", metavar="DURATION",
                       help="how long, e.g. 90s, 30m, 2h, 1h30m (1m to 24h)")
    grant.add_argument("--list", action="store_true", help="show the grants in force")
    grant.add_argument("--config", type=Path, default=default_config, metavar="PATH",
                       help=f"the agent's config file (default: {default_config})")

    revoke = commands.add_parser(
        "revoke", help="end a capability's grant now",
        description="End the time-boxed grant of a capability now.",
    )
    revoke.add_argument("capability", metavar="CAP", help="one of: " + ", ".join(_capabilities()))
    revoke.add_argument("--config", type=Path, default=default_config, metavar="PATH",
                        help=f"the agent's config file (default: {default_config})")
    return parser


def _capabilities() -> tuple[str, ...]:
    from beeyard.shared.frames import CAPABILITIES

    return CAPABILITIES


def _fail(message: str, code: int) -> int:
    print(f"beeyard-agent: error: {message}", file=sys.stderr)
    return code


def _setup_logging(level: str) -> None:
    import logging

    # Under systemd the journal stamps each line itself.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format=f"{stamp}%(levelname)s %(name)s: %(message)s")


def _enroll(args: argparse.Namespace) -> int:
    from beeyard.agent.enroll import EnrollError, enroll

    try:
        config = enroll(
            server=args.server, code=args.code, config_path=args.config, name=args.name,
            force=args.force, token_file=args.token_file, spool_dir=args.spool_dir,
            ca_file=args.ca_file, interval=args.interval,
        )
    except EnrollError as exc:
        return _fail(str(exc), EXIT_ENROLL)
    print(f"enrolled as server {config.server_id} of {config.server}")
    print(f"config: {config.path}\ntoken:  {config.token_file} (0600)")
    print(f"start it with: beeyard-agent run --config {config.path}")
    return 0


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from beeyard.agent import config as config_module
    from beeyard.agent import grants
    from beeyard.agent.daemon import run_agent
    from beeyard.agent.spool import Spool
    from beeyard.agent.token import TokenError, read_token

    try:
        config = config_module.load(args.config)
        read_token(config.token_file)  # fail now, not at the first connection
        if config.ca_file is not None and not config.ca_file.is_file():
            raise config_module.ConfigError(f"{args.config}: no CA file at {config.ca_file}")
        grants.check(config)  # an unsafe grants file is refused now, loudly
        spool = Spool(config.spool.dir, config.spool.max_entries, exclusive=True)
    except (config_module.ConfigError, TokenError, grants.GrantError) as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except OSError as exc:  # the spool directory cannot be created, or is in use
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(f"spool: {exc.strerror or exc}{where}", EXIT_CONFIG)
    _setup_logging(args.log_level or config.log_level)
    return asyncio.run(run_agent(config, spool))


def _when(ts: float) -> str:
    """An expiry in local time and UTC: ``2026-11-22 12:41:02 CET (11:41:02 UTC)``."""
    from datetime import UTC, datetime

    local = datetime.fromtimestamp(ts).astimezone()
    utc = datetime.fromtimestamp(ts, UTC)
    if not local.utcoffset():
        return f"{utc:%Y-%m-%d %H:%M:%S} UTC"  # the host's local time is UTC
    return f"{local:%Y-%m-%d %H:%M:%S %Z} ({utc:%H:%M:%S} UTC)"


def _allowed(caps: frozenset[str]) -> str:
    return ", ".join(c for c in _capabilities() if c in caps) or "none"


def _check_grantor(config_path: Path) -> None:
    """Only root or the config's owner may grant or revoke: a grant is as powerful as
    an edit of the config, so it is theirs to make; anyone else (even one who may
    read the config) is refused, whoever the agent runs as."""
    from beeyard.agent.grants import GrantError

    owner = config_path.stat().st_uid
    euid = os.geteuid()
    if euid not in (0, owner):
        who = "root" if owner == 0 else f"root or uid {owner}"
        raise GrantError(
            f"only {who} (the owner of {config_path}) may change this agent's grants: "
            "whoever can change the config may grant"
        )


def _grant(args: argparse.Namespace) -> int:
    from beeyard.agent import config as config_module
    from beeyard.agent import grants

    if args.list and (args.capability or args.duration):
        return _fail("grant --list takes no capability or --for", EXIT_CONFIG)
    if not args.list and (not args.capability or not args.duration):
        return _fail("usage: beeyard-agent grant CAP --for DURATION (or grant --list)",
                     EXIT_CONFIG)
    try:
        config = config_module.load(args.config)
        store = grants.GrantStore.for_config(args.config)
        if args.list:
            now = time.time()
            active = store.grants(now)
            for g in active:
                print(f"{g.capability} until {_when(g.expires_at)}, "
                      f"{grants.format_duration(g.expires_at - now)} left, "
                      f"granted by {g.who or 'unknown'}")
            print(f"allowed now: {_allowed(store.effective(config, now))} "
                  f"(config: {_allowed(frozenset(config.capabilities))})")
            return 0
        grants.check_capability(args.capability)
        seconds = grants.parse_duration(args.duration)
        _check_grantor(args.config)
        new = store.grant(args.capability, seconds)
        allowed = _allowed(store.effective(config))
    except (config_module.ConfigError, grants.GrantError) as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except OSError as exc:
        return _fail(f"{exc.filename or args.config}: {exc.strerror or exc}", EXIT_CONFIG)
    standing = " (the config allows it anyway)" if new.capability in config.capabilities else ""
    print(f"granted {new.capability} for {grants.format_duration(seconds)}, until "
          f"{_when(new.expires_at)}{standing}; allowed now: {allowed}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from beeyard.agent import config as config_module
    from beeyard.agent import grants

    try:
        config = config_module.load(args.config)
        grants.check_capability(args.capability)
        _check_grantor(args.config)
        store = grants.GrantStore.for_config(args.config)
        ended = store.revoke(args.capability)
        allowed = _allowed(store.effective(config))
    except (config_module.ConfigError, grants.GrantError) as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except OSError as exc:
        return _fail(f"{exc.filename or args.config}: {exc.strerror or exc}", EXIT_CONFIG)
    what = "revoked" if ended else "no grant of"
    standing = (" (still allowed by the config)"
                if args.capability in config.capabilities else "")
    print(f"{what} {args.capability}{standing}; allowed now: {allowed}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "enroll":
        return _enroll(args)
    if args.command == "run":
        return _run(args)
    if args.command == "grant":
        return _grant(args)
    if args.command == "revoke":
        return _revoke(args)
    parser.print_help()
    return EXIT_CONFIG


if __name__ == "__main__":
    raise SystemExit(main())

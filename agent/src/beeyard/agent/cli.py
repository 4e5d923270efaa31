"""Command line of ``beeyard-agent``: ``enroll``, ``run``, ``--version``.

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
    return parser


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
    from beeyard.agent.daemon import run_agent
    from beeyard.agent.spool import Spool
    from beeyard.agent.token import TokenError, read_token

    try:
        config = config_module.load(args.config)
        read_token(config.token_file)  # fail now, not at the first connection
        if config.ca_file is not None and not config.ca_file.is_file():
            raise config_module.ConfigError(f"{args.config}: no CA file at {config.ca_file}")
        spool = Spool(config.spool.dir, config.spool.max_entries, exclusive=True)
    except (config_module.ConfigError, TokenError) as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except OSError as exc:  # the spool directory cannot be created, or is in use
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(f"spool: {exc.strerror or exc}{where}", EXIT_CONFIG)
    _setup_logging(args.log_level or config.log_level)
    return asyncio.run(run_agent(config, spool))


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "enroll":
        return _enroll(args)
    if args.command == "run":
        return _run(args)
    parser.print_help()
    return EXIT_CONFIG


if __name__ == "__main__":
    raise SystemExit(main())

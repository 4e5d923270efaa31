"""Command line of ``beeyard-server``: ``serve`` for production, ``demo`` to try it.

Exit codes: 0 after a clean stop (SIGTERM or Ctrl-C), 2 for a configuration
error (bad flag or environment variable, unusable data directory, weak admin
password), 1 when the server cannot run (port taken, database unreachable,
PostgreSQL failed to start). Every failure is one line on stderr, never a
traceback, except for a genuine bug.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from beeyard.server import __version__, config, context, demo
from beeyard.server.app import create_app
from beeyard.server.db import bootstrap
from beeyard.server.db.embedded import EmbeddedError
from beeyard.server.db.pool import DatabaseUnavailable
from beeyard.server.services import background, memory

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="beeyard-server", description="Beeyard control plane")
    parser.add_argument("--version", action="version", version=f"beeyard-server {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "run the control plane"),
        ("demo", "run a throw-away control plane on this machine, to try Beeyard"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--host", help="address to listen on (BEEYARD_HOST, default 127.0.0.1)")
        p.add_argument("--port", type=int, help="port to listen on (BEEYARD_PORT, default 8420)")
        p.add_argument("--data-dir", help="state directory (BEEYARD_DATA_DIR)")
        p.add_argument(
            "--database-url",
            help="PostgreSQL URL (BEEYARD_DATABASE_URL); without it a private PostgreSQL runs "
            "in the data directory",
        )
        p.add_argument(
            "--log-level",
            type=str.upper,
            choices=_LEVELS,
            default=None,
            help="DEBUG, INFO, WARNING or ERROR (BEEYARD_LOG_LEVEL, default INFO)",
        )
    return parser


def _demo_data_dir() -> Path:
    return config.default_data_dir().with_name("beeyard-demo")


def raise_open_files_limit() -> None:
    """Lift the soft limit on open files to the hard one, as Go programs and nginx do.

    Every connected agent holds one socket; the usual soft limit of 1,024 would make
    the thousandth agent's connection fail with "too many open files" although the
    hard limit (what an administrator allowed) is far higher. Said once if it stays low.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft != resource.RLIM_INFINITY and soft < 4096:
        logging.getLogger("beeyard.server").warning(
            "open files are limited to %d: fewer than %d agents can connect "
            "(raise LimitNOFILE / ulimit -n)", soft, soft - 64)


def _fail(message: str, code: int) -> int:
    print(f"beeyard-server: {message}", file=sys.stderr, flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = args.log_level or (os.environ.get("BEEYARD_LOG_LEVEL") or "INFO").upper()
    if level not in _LEVELS:
        return _fail(f"BEEYARD_LOG_LEVEL must be one of {', '.join(_LEVELS)}, got {level!r}", 2)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    data_dir = args.data_dir
    if args.command == "demo" and data_dir is None and not os.environ.get("BEEYARD_DATA_DIR"):
        data_dir = str(_demo_data_dir())
    try:
        settings = config.load(
            host=args.host, port=args.port, data_dir=data_dir, database_url=args.database_url
        )
        app = create_app(settings)
    except config.ConfigError as exc:
        return _fail(str(exc), 2)

    app.cleanup_ctx.append(background(memory.job()))  # this process's collector policy
    raise_open_files_limit()
    demo_password: list[str | None] = [None]

    async def note_demo_password(app: web.Application) -> None:
        demo_password[0] = await bootstrap.initial_password(app[context.POOL], settings)

    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{settings.port}/"
    demo_agent: demo.DemoAgent | None = None
    if args.command == "demo":
        app.on_startup.append(note_demo_password)  # runs after the database is up
        # This machine's own agent, so that the demo shows a live host (serve never does).
        demo_agent = demo.install(app, url, lambda line: print(line, file=sys.stderr,
                                                               flush=True))

    def ready(_banner: str) -> None:
        """Called by aiohttp once the socket listens (in place of its own banner)."""
        print(f"Beeyard {__version__} is serving at {url}", file=sys.stderr, flush=True)
        if args.command == "demo":
            secret = demo_password[0] or "(the password you set)"
            print(
                f"Sign in at {url} as admin, password: {secret}\n"
                f"API docs at {url}swagger-ui/ · data in {settings.data_dir} · Ctrl-C stops",
                file=sys.stderr,
                flush=True,
            )
        if demo_agent is not None:
            demo_agent.start()  # its enrollment needs the socket that now listens

    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            shutdown_timeout=settings.shutdown_timeout,
            print=ready,
            access_log=logging.getLogger("aiohttp.access"),
            loop=_event_loop(),
        )
    except config.ConfigError as exc:
        return _fail(str(exc), 2)
    except (EmbeddedError, DatabaseUnavailable) as exc:
        return _fail(str(exc), 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return _fail(f"cannot listen on {settings.host}:{settings.port}: {reason}", 1)
    logging.getLogger("beeyard.server").info("stopped")
    return 0


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it is a dependency; the fallback keeps odd platforms
    working): every agent frame crosses the event loop, and libuv's transports and
    scheduling cost about half of asyncio's pure-Python ones per frame."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


if __name__ == "__main__":
    raise SystemExit(main())

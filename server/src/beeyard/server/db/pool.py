"""The asyncpg pool and how it is opened, against embedded or external PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg

log = logging.getLogger("beeyard.server.db.pool")

# Failures worth waiting out at start (the database is still starting, or the
# network is not up yet); anything else (wrong password, no such database) is
# reported at once.
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached at start; the message names it (without secrets)."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 10, wait: float = 0.0
) -> asyncpg.Pool:
    """Open the pool; retry transient failures for up to ``wait`` seconds.

    Raises ``DatabaseUnavailable`` with a message that names the server but
    never its password.
    """
    deadline = time.monotonic() + wait
    delay = 0.25
    while True:
        try:
            return await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                command_timeout=60,
                timeout=10,
                server_settings={"application_name": "beeyard-server"},
            )
        except _TRANSIENT as exc:
            if time.monotonic() + delay > deadline:
                raise DatabaseUnavailable(
                    f"cannot connect to the database at {redact(dsn)}: {_reason(exc)}"
                ) from None
            log.warning("database at %s not reachable yet (%s); retrying", redact(dsn),
                        _reason(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise DatabaseUnavailable(
                f"cannot use the database at {redact(dsn)}: {_reason(exc)}"
            ) from None


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.strip().splitlines()[0]


async def ensure_database(admin_dsn: str, name: str) -> None:
    """Create the database on the embedded server the first time."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            # A concurrent start may create it first.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


_SECRET_PARAMS = {"password", "passfile", "sslpassword", "sslkey"}


def redact(dsn: str) -> str:
    """The URL without its password (in the user part or the query), for logs."""
    if "://" not in dsn:  # libpq keyword form: host=... password=...
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn, flags=re.I)
    try:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, sep, _password = userinfo.partition(":")
            netloc = f"{user}{':***' if sep else ''}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="/:*"
            )
        return parts._replace(netloc=netloc, query=query).geturl()
    except ValueError:
        return "(an unparsable database URL)"

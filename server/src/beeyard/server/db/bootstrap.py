"""First start: create the ``admin`` user so the operator can sign in at all."""

from __future__ import annotations

import logging
import secrets
import sys

import asyncpg

from beeyard.server.auth import passwords
from beeyard.server.config import ConfigError, Settings, write_private
from beeyard.server.db import users

log = logging.getLogger("beeyard.server.bootstrap")

ADMIN = "admin"
PASSWORD_FILE = "initial-admin-password"  # noqa: S105 - a file name


async def ensure_admin(conn: asyncpg.Connection, settings: Settings) -> None:
    """Create ``admin`` if there are no users: with BEEYARD_ADMIN_PASSWORD, or a
    generated password printed once and written 0600 to the data directory."""
    async with conn.transaction():
        # Serialise replicas racing through their first start.
        await conn.execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
        if await users.count(conn):
            return
        password = settings.admin_password
        generated = password is None
        if password is None:
            password = secrets.token_urlsafe(18)
        else:
            try:
                passwords.check_policy(password, ADMIN)
            except passwords.PolicyError as exc:
                raise ConfigError(f"BEEYARD_ADMIN_PASSWORD: {exc}") from None
        await users.create(conn, ADMIN, await passwords.hash_password(password), "admin")
    if generated:
        path = settings.data_dir / PASSWORD_FILE
        write_private(path, password + "\n")
        if sys.stderr.isatty():
            # Shown once on a terminal; never sent to a log or the journal.
            print(f"Created user 'admin' with password: {password}", file=sys.stderr, flush=True)
        log.warning(
            "created user 'admin'; its generated password is in %s (readable by this user "
            "only): sign in, change it, then delete the file", path,
        )
    else:
        log.info("created user 'admin' with the password from BEEYARD_ADMIN_PASSWORD")


async def initial_password(pool: asyncpg.Pool, settings: Settings) -> str | None:
    """The generated admin password from its file, if it still signs in; None once the
    admin has changed it (the file is then only a stale note the operator may delete)."""
    path = settings.data_dir / PASSWORD_FILE
    try:
        password = path.read_text().strip()
    except OSError:
        return None
    user = await users.for_login(pool, ADMIN)
    if user is None or not await passwords.verify_password(password, user["password_hash"]):
        return None
    return password

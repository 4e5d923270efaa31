"""Mobile devices and their bearer tokens: plain SQL for mobile_devices and mobile_tokens.

A device is one refresh-token family. Every refresh exchanges the presented
refresh token for a new access + refresh pair and stamps the old one
``rotated_at``; rotated tokens are kept (until the housekeeping purge after
they expire) precisely so that a second presentation can be recognised as
reuse. Reuse means two parties hold the same token, one of them not the
owner, and we cannot tell which: the whole device is revoked. Every lookup of
a device token joins the device and requires ``revoked_at IS NULL``, so
revoking the device ends every token of the family in the same instant.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Pair:
    """Digests of a new access + refresh token pair and how long each lives, in seconds."""

    access_digest: bytes
    refresh_digest: bytes
    access_ttl: int
    refresh_ttl: int


class Reason(enum.Enum):
    """Why a refresh token was not exchanged."""

    INVALID = "invalid"  # unknown, not a refresh token, or its user is disabled
    EXPIRED = "expired"
    SIGNED_OUT = "signed out"  # the device was revoked already
    REUSED = "reused"  # rotated before: the device has now been revoked


@dataclass(frozen=True)
class Refused:
    reason: Reason
    device_id: int | None = None  # for the audit record, when the token was known
    username: str | None = None  # whose device, likewise


@dataclass(frozen=True)
class Refreshed:
    device_id: int
    user_id: int
    username: str
    role: str
    totp_enabled: bool


async def _insert_pair(conn: asyncpg.Connection, device_id: int, pair: Pair) -> None:
    await conn.execute(
        """INSERT INTO mobile_tokens (device_id, kind, token_digest, expires_at)
           VALUES ($1, 'access', $2, now() + make_interval(secs => $4)),
                  ($1, 'refresh', $3, now() + make_interval(secs => $5))""",
        device_id, pair.access_digest, pair.refresh_digest,
        float(pair.access_ttl), float(pair.refresh_ttl),
    )


async def create_device(
    pool: asyncpg.Pool, user_id: int, device_name: str, ip: str | None, pair: Pair
) -> dict[str, Any]:
    """A new device with its first token pair, in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """INSERT INTO mobile_devices (user_id, device_name, ip) VALUES ($1, $2, $3)
               RETURNING id, device_name, created_at""",
            user_id, device_name, ip,
        )
        await _insert_pair(conn, row["id"], pair)
    return dict(row)


# One statement decides whether this presentation wins: the row lock taken by
# the UPDATE makes a concurrent presentation of the same token wait, and once
# the winner commits PostgreSQL re-checks ``rotated_at IS NULL`` against the
# new row version, finds it false, and updates nothing. At most one refresh
# per token can ever succeed.
_ROTATE = """
UPDATE mobile_tokens t SET rotated_at = now()
  FROM mobile_devices d JOIN users u ON u.id = d.user_id
 WHERE t.token_digest = $1 AND t.kind = 'refresh' AND t.rotated_at IS NULL
   AND t.expires_at > now() AND d.id = t.device_id AND d.revoked_at IS NULL
   AND NOT u.disabled
RETURNING t.device_id, u.id AS user_id, u.username, u.role, u.totp_enabled
"""


async def refresh(
    pool: asyncpg.Pool, presented: bytes, pair: Pair, ip: str | None
) -> Refreshed | Refused:
    """Exchange the refresh token with digest ``presented`` for ``pair``.

    The device's earlier access tokens expire with the exchange: each device
    holds one working access token, the newest. On reuse of a rotated token the
    device is revoked before returning ``Reason.REUSED``, so the tokens issued
    by the winning exchange stop working too.
    """
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                won = await conn.fetchrow(_ROTATE, presented)
                if won is not None:
                    # The new access token replaces the old ones: a copy of one taken
                    # before this refresh must not outlive it by up to access_token_ttl.
                    await conn.execute(
                        """UPDATE mobile_tokens SET expires_at = now()
                            WHERE device_id = $1 AND kind = 'access' AND expires_at > now()""",
                        won["device_id"],
                    )
                    await _insert_pair(conn, won["device_id"], pair)
                    await conn.execute(
                        "UPDATE mobile_devices SET last_seen_at = now(), ip = $2 WHERE id = $1",
                        won["device_id"], ip,
                    )
                    return Refreshed(won["device_id"], won["user_id"], won["username"],
                                     won["role"], won["totp_enabled"])
        except asyncpg.ForeignKeyViolationError:  # the user was deleted meanwhile
            return Refused(Reason.INVALID)
        seen = await conn.fetchrow(
            """SELECT t.kind, t.rotated_at IS NOT NULL AS rotated,
                      t.expires_at <= now() AS expired, d.id AS device_id,
                      d.revoked_at IS NOT NULL AS revoked, u.disabled, u.username
                 FROM mobile_tokens t
                 JOIN mobile_devices d ON d.id = t.device_id
                 JOIN users u ON u.id = d.user_id
                WHERE t.token_digest = $1""",
            presented,
        )
        if seen is None or seen["kind"] != "refresh":
            return Refused(Reason.INVALID)
        device_id, username = int(seen["device_id"]), str(seen["username"])
        if seen["disabled"]:
            return Refused(Reason.INVALID, device_id, username)
        if seen["revoked"]:
            return Refused(Reason.SIGNED_OUT, device_id, username)
        if seen["rotated"]:
            await conn.execute(
                "UPDATE mobile_devices SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
                device_id,
            )
            return Refused(Reason.REUSED, device_id, username)
        return Refused(Reason.EXPIRED, device_id, username)


async def list_devices(pool: asyncpg.Pool, user_id: int | None) -> list[dict[str, Any]]:
    """Signed-in devices of one user (of everyone when ``user_id`` is None).

    A device counts as signed in while it is not revoked and holds an
    unexpired, unrotated refresh token; ``expires_at`` is when it lapses
    unless it refreshes first.
    """
    rows = await pool.fetch(
        """SELECT d.id, d.device_name, d.ip, d.created_at, d.last_seen_at,
                  r.expires_at, u.id AS user_id, u.username
             FROM mobile_devices d
             JOIN users u ON u.id = d.user_id
             JOIN LATERAL (SELECT max(t.expires_at) AS expires_at FROM mobile_tokens t
                            WHERE t.device_id = d.id AND t.kind = 'refresh'
                              AND t.rotated_at IS NULL) r ON true
            WHERE d.revoked_at IS NULL AND r.expires_at > now()
              AND ($1::bigint IS NULL OR d.user_id = $1)
            ORDER BY d.last_seen_at DESC, d.id DESC""",
        user_id,
    )
    return [dict(r) for r in rows]


async def revoke_device(
    pool: asyncpg.Pool, device_id: int, owner_id: int | None
) -> dict[str, Any] | None:
    """Revoke a device (and so every token of it), only if ``owner_id`` owns it
    (None: any owner, for admins). None when there is no such active device."""
    row = await pool.fetchrow(
        """UPDATE mobile_devices d SET revoked_at = now()
             FROM users u
            WHERE d.id = $1 AND u.id = d.user_id AND d.revoked_at IS NULL
              AND ($2::bigint IS NULL OR d.user_id = $2)
        RETURNING d.id, d.device_name, d.revoked_at, u.id AS user_id, u.username""",
        device_id, owner_id,
    )
    return None if row is None else dict(row)


async def purge(pool: asyncpg.Pool, *, keep_days: int = 90) -> tuple[int, int]:
    """Delete tokens expired more than a day ago (rotated ones are kept until then, to
    recognise reuse), and devices revoked, or left without a token, more than
    ``keep_days`` ago (with them whatever tokens remain): long enough that the audit
    trail's ``device:N`` targets can still be looked up while anyone asks about them.
    Returns (tokens, devices) deleted."""
    async with pool.acquire() as conn, conn.transaction():
        tokens = await conn.execute(
            "DELETE FROM mobile_tokens WHERE expires_at < now() - interval '1 day'"
        )
        devices = await conn.execute(
            """DELETE FROM mobile_devices d
                WHERE d.revoked_at < now() - make_interval(days => $1)
                   OR (d.last_seen_at < now() - make_interval(days => $1)
                       AND NOT EXISTS (SELECT 1 FROM mobile_tokens t WHERE t.device_id = d.id))""",
            keep_days,
        )
    return int(tokens.split()[-1]), int(devices.split()[-1])

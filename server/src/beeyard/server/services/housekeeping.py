"""Purge what can no longer be used or is past keeping, so lookups stay small and the
audit log does not grow without end. The SQL lives in the db modules.

- sessions and mobile tokens: a day after they expired or were revoked;
- revoked API keys and mobile devices: after ``KEEP_REVOKED_DAYS``, long enough
  for the audit trail's ``api_key:N`` and ``device:N`` targets to be looked up
  while anyone still asks about them;
- audit records: after ``Settings.audit_retention_days`` (``BEEYARD_AUDIT_RETENTION_DAYS``,
  365 by default).
"""

from __future__ import annotations

import logging

from aiohttp import web

from beeyard.server import context
from beeyard.server.db import api_keys, audit, mobile, sessions
from beeyard.server.services import Background

log = logging.getLogger("beeyard.server.housekeeping")

KEEP_REVOKED_DAYS = 90


async def purge_expired(app: web.Application) -> None:
    pool = app[context.POOL]
    retention = max(1, app[context.SETTINGS].audit_retention_days)
    purged = {
        "sessions": await sessions.purge(pool),
        "api_keys": await api_keys.purge_revoked(pool, keep_days=KEEP_REVOKED_DAYS),
        "audit_records": await audit.purge_older_than(pool, retention),
    }
    purged["mobile_tokens"], purged["mobile_devices"] = await mobile.purge(
        pool, keep_days=KEEP_REVOKED_DAYS
    )
    if any(purged.values()):
        log.info("housekeeping purged %s",
                 ", ".join(f"{n} {what}" for what, n in purged.items() if n))


housekeeping = Background("housekeeping", interval=600, run=purge_expired)

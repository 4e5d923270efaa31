"""The in-memory transfer table: ownership, bounds, expiry and forgetting."""

from __future__ import annotations

import time

import pytest

from beeyard.server.auth.principal import Principal, Role
from beeyard.server.services import transfers
from beeyard.server.services.transfers import Full, Transfers


def who(user_id: int, role: Role = Role.MEMBER) -> Principal:
    return Principal(kind="session", user_id=user_id, username=f"u{user_id}", role=role,
                     credential_id=user_id)


def test_a_transfer_is_seen_by_its_owner_and_admins_only() -> None:
    table = Transfers()
    alice, bob, admin = who(1), who(2), who(3, Role.ADMIN)
    mine = table.create("download", 7, "/srv/a", alice, 10)
    assert table.get(mine.id, alice) is mine and table.get(mine.id, admin) is mine
    assert table.get(mine.id, bob) is None  # as missing, not forbidden
    assert table.visible(bob) == [] and table.visible(admin) == [mine]
    assert mine.view()["owner"] == "u1" and mine.view()["download_url"].endswith(mine.id)


def test_the_table_is_bounded_and_forgets_finished_transfers_first() -> None:
    table = Transfers(limit=3)
    owner = who(1)
    first = table.create("upload", 1, "a", owner, 1)
    first.finish("done")
    second = table.create("upload", 1, "b", owner, 1)
    third = table.create("upload", 1, "c", owner, 1)
    fourth = table.create("upload", 1, "d", owner, 1)  # the finished one made room
    assert table.get(first.id, owner) is None
    assert {t.id for t in table.visible(owner)} == {second.id, third.id, fourth.id}
    with pytest.raises(Full):
        table.create("upload", 1, "e", owner, 1)  # all three under way


def test_an_unfetched_download_expires_and_finished_ones_are_forgotten() -> None:
    table = Transfers()
    owner = who(1)
    ready = table.create("download", 1, "a", owner, 1)
    table.purge(time.time() + transfers.READY_TTL + 1)
    assert ready.state == "expired" and ready.view()["download_url"] is None
    table.purge(time.time() + transfers.READY_TTL + transfers.KEEP + 2)
    assert table.get(ready.id, owner) is None and len(table) == 0


def test_progress_and_rate() -> None:
    t = Transfers().create("upload", 1, "a", who(1), 1000)
    t.started = time.time() - 2
    t.bytes_done = 500
    view = t.view()
    assert view["progress"] == 0.5 and 200 < view["rate"] < 260
    t.cancel("stop")
    assert t.state == "cancelled" and t.error == "stop" and t.view()["finished_at"]

"""The spool: durable across SIGKILL, bounded, acknowledged entries gone for good."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from beeyard.agent.spool import Spool
from beeyard.shared import wire

BASE = 1_700_000_040


def summary(minute: int, cpu: float = 1.0, samples: int = 60) -> dict[str, Any]:
    return {"minute": minute, "samples": samples, "values": {"cpu": [cpu, cpu, cpu]},
            "net_rx_bytes": 10.0, "net_tx_bytes": 20.0}


def test_put_survives_reopen_in_order_and_ack_removes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    for i in (2, 0, 1):
        spool.put(summary(BASE + 60 * i))
    assert spool.pending() == [BASE, BASE + 60, BASE + 120]
    assert stat_mode(tmp_path / "spool") == 0o700
    data = spool.get(BASE)
    assert data is not None and wire.decode(data).body["minute"] == BASE
    assert spool.remove([BASE, BASE + 999]) == 1
    reopened = Spool(tmp_path / "spool")
    assert reopened.pending() == [BASE + 60, BASE + 120]
    assert wire.decode(reopened.get(BASE + 120) or b"").type == "summary"


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_bound_drops_the_oldest_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, max_entries=5)
    with caplog.at_level(logging.WARNING, "beeyard.agent.spool"):
        for i in range(8):
            spool.put(summary(BASE + 60 * i))
    assert spool.pending() == [BASE + 60 * i for i in range(3, 8)]
    assert len(list(tmp_path.iterdir())) == 5
    assert "spool full" in caplog.text
    # a smaller bound at the next start is enforced at once
    assert Spool(tmp_path, max_entries=2).pending() == [BASE + 360, BASE + 420]


def test_same_minute_is_merged_until_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(summary(BASE, cpu=10.0, samples=30))
    version = spool.versions[BASE]
    spool.put(summary(BASE, cpu=30.0, samples=10))  # an agent restart within the minute
    assert spool.versions[BASE] != version  # a sender knows to send it again
    body = spool.get_body(BASE)
    assert body is not None
    assert body["samples"] == 40
    assert body["values"]["cpu"] == [15.0, 10.0, 30.0]  # type: ignore[index]


def test_recent_entries_read_from_memory_are_the_files_on_disk(tmp_path: Path) -> None:
    """The latest puts are served from memory (Spool._recent): always the bytes of the
    fsync'd file, also after a merge, and gone with the entry."""
    spool = Spool(tmp_path)
    for i in range(12):  # more than are kept in memory
        spool.put(summary(BASE + 60 * i, cpu=float(i)))
    for i in range(12):
        assert spool.get(BASE + 60 * i) == spool._path(BASE + 60 * i).read_bytes()
    spool.put(summary(BASE + 660, cpu=99.0, samples=20))  # merged with the one in memory
    merged = spool.get(BASE + 660)
    assert merged == spool._path(BASE + 660).read_bytes()
    assert wire.decode(merged).body["samples"] == 80
    assert spool.remove([BASE + 660]) == 1
    assert spool.get(BASE + 660) is None
    assert not spool._path(BASE + 660).exists()


def test_a_new_entry_is_named_whole_and_the_fallback_writes_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new minute is an unnamed file linked under its name (O_TMPFILE), one fsync; a
    merge, or a filesystem without O_TMPFILE, replaces through a temp file and a rename.
    Both leave the same bytes, mode 0600, and nothing else in the directory."""
    from beeyard.agent import spool as spool_module

    spool = Spool(tmp_path / "a")
    with monkeypatch.context() as patch:  # proof that the new entry took the other way
        patch.setattr(spool_module, "write_atomic", None)
        spool.put(summary(BASE))
    other = Spool(tmp_path / "b")
    other._close_dir()  # as on a filesystem without O_TMPFILE
    other.put(summary(BASE))
    for s in (spool, other):
        path = s._path(BASE)
        assert path.read_bytes() == s.get(BASE) == wire.encode("summary", summary(BASE))
        assert stat_mode(path) == 0o600
        assert sorted(p.name for p in s.directory.iterdir()) == [path.name]
    spool.close()
    other.close()


def test_a_stray_file_under_a_new_minutes_name_is_replaced_whole(tmp_path: Path) -> None:
    """A file that appeared under a minute's name after the spool was opened: the new
    entry cannot be linked over it, so it replaces it through write_atomic, and the next
    new entry takes the O_TMPFILE way again."""
    spool = Spool(tmp_path)
    spool._path(BASE).write_bytes(b"stray")
    spool.put(summary(BASE))
    assert spool._path(BASE).read_bytes() == wire.encode("summary", summary(BASE))
    assert spool._dir_fd is not None
    spool.put(summary(BASE + 60))
    assert Spool(tmp_path).pending() == [BASE, BASE + 60]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "lock") == [
        spool._path(BASE).name, spool._path(BASE + 60).name]
    spool.close()


def test_corrupt_entries_and_leftover_temp_files(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(summary(BASE))
    spool.put(summary(BASE + 60))
    (tmp_path / f"{BASE:012d}.summary").write_bytes(b"\x00garbage")
    (tmp_path / ".000000000001.summary.123.tmp").write_bytes(b"half a wri")
    (tmp_path / "unrelated.txt").write_text("left alone")
    reopened = Spool(tmp_path)
    assert not (tmp_path / ".000000000001.summary.123.tmp").exists()
    assert reopened.get(BASE) is None  # dropped, with a warning
    assert reopened.pending() == [BASE + 60]
    assert (tmp_path / "unrelated.txt").exists()


WRITER = """
import sys
from pathlib import Path
from beeyard.agent.spool import Spool
spool = Spool(Path(sys.argv[1]), max_entries=int(sys.argv[2]))
base = int(sys.argv[3])
for i in range(100000):
    minute = base + 60 * i
    spool.put({"minute": minute, "samples": 60, "values": {"cpu": [1.0, 1.0, 1.0]}})
    print("put", minute, flush=True)
    if i % 3 == 2:
        acked = base + 60 * (i - 2)
        print("acking", acked, flush=True)  # from here it may be gone
        spool.remove([acked])
        print("acked", acked, flush=True)
"""


@pytest.mark.parametrize("kill_after", [7, 23, 61, 130])
def test_nothing_reported_durable_is_lost_to_sigkill(tmp_path: Path, kill_after: int) -> None:
    """A writer that puts and acknowledges entries is killed with SIGKILL mid-way:
    on reopening, every entry it reported as put (and not acknowledged) within
    the bound is there and whole, nothing acknowledged is back, the bound holds."""
    bound = 50
    spool_dir = tmp_path / "spool"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(spool_dir), str(bound),
                             str(BASE)], stdout=subprocess.PIPE, text=True)
    put: list[int] = []
    acking: set[int] = set()
    acked: set[int] = set()
    model: list[int] = []  # what the spool must hold, replaying the writer's reports in order

    def note(line: str) -> None:
        verb, minute = line.split()
        {"put": put.append, "acking": acking.add, "acked": acked.add}[verb](int(minute))
        if verb == "put":
            model.append(int(minute))
            del model[:-bound]  # the bound counts every pending entry at put time
        elif verb == "acked":
            model.remove(int(minute))

    try:
        assert proc.stdout is not None
        while len(put) < kill_after:
            line = proc.stdout.readline()
            assert line, "writer died"
            note(line)
        os.kill(proc.pid, signal.SIGKILL)  # mid-way through the next put or remove
        proc.wait(10)
        for line in proc.stdout.read().splitlines():  # printed before the kill landed
            note(line)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reopened = Spool(spool_dir, max_entries=bound)
    pending = set(reopened.pending())
    # What the model holds, less what may have gone: an entry whose removal had begun,
    # and the oldest one, which a put that was under way but not yet reported may have
    # pushed out of the bound.
    must_have = [m for m in model[1:] if m not in acking]
    missing = [m for m in must_have if m not in pending]
    assert not missing, f"lost {missing}"
    assert not pending & acked, "an acknowledged entry came back"
    assert len(pending) <= bound
    for minute in pending:
        data = reopened.get(minute)
        assert data is not None and wire.decode(data).body["minute"] == minute
    assert not [p for p in spool_dir.iterdir() if p.name.startswith(".")]

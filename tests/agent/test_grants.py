"""Time-boxed local grants (``beeyard.agent.grants``) through the module, on real files
in ``tmp_path`` with a clock passed in, so expiry is tested without waiting."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from beeyard.agent import grants
from beeyard.agent.config import AgentConfig, SpoolConfig
from beeyard.agent.grants import GrantError, GrantStore
from beeyard.shared.frames import CAPABILITIES

T0 = 1_800_000_000.0  # a fixed "now" (2027-01-15) for every clock below
NOBODY = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def write_config(directory: Path, capabilities: tuple[str, ...] = ()) -> tuple[Path, AgentConfig]:
    path = directory / "agent.toml"
    config = AgentConfig(server="http://127.0.0.1:9", server_id=7,
                         token_file=directory / "agent.token",
                         spool=SpoolConfig(directory / "spool"), capabilities=capabilities)
    path.write_text(config.to_toml())
    return path, AgentConfig(**{**config.__dict__, "path": path})


@pytest.fixture
def store(tmp_path: Path) -> GrantStore:
    path, _ = write_config(tmp_path)
    return GrantStore.for_config(path, clock=lambda: T0)


# -- durations and names --------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1h0m30s", 3630),
    ("24h", 86400), ("1m", 60), (" 45M ", 2700),
])
def test_durations(text: str, seconds: int) -> None:
    assert grants.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "m", "30x", "1.5h", "30m1h", "-5m", "1h 30m", "h30m"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(GrantError, match="bad duration"):
        grants.parse_duration(text)


def test_durations_are_bounded() -> None:
    with pytest.raises(GrantError, match="too short: at least 1m"):
        grants.parse_duration("59s")
    with pytest.raises(GrantError, match="too long: at most 24h"):
        grants.parse_duration("24h1s")
    with pytest.raises(GrantError, match="too long"):
        grants.parse_duration("1441m")


def test_format_duration_round_trips() -> None:
    for text in ("1m30s", "30m", "2h", "1h30m", "1h30s", "24h"):
        assert grants.format_duration(grants.parse_duration(text)) == text


def test_unknown_capability_lists_the_known_ones(store: GrantStore) -> None:
    with pytest.raises(GrantError) as info:
        store.grant("root_shell", 600)
    assert "unknown capability 'root_shell'" in str(info.value)
    assert all(cap in str(info.value) for cap in CAPABILITIES)
    with pytest.raises(GrantError, match="unknown capability"):
        store.revoke("root_shell")
    assert not store.path.exists()  # nothing was written


def test_grant_refuses_a_duration_out_of_bounds(store: GrantStore) -> None:
    with pytest.raises(GrantError):
        store.grant("exec", 59)
    with pytest.raises(GrantError):
        store.grant("exec", 24 * 3600 + 1)


# -- the store ------------------------------------------------------------------

def test_grant_is_written_0600_atomically_beside_the_config(store: GrantStore,
                                                             tmp_path: Path) -> None:
    grant = store.grant("terminal", 1800, who="alice")
    assert store.path == tmp_path / "agent.grants.json"
    info = store.path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    raw = json.loads(store.path.read_text())
    assert raw["grants"] == [{"capability": "terminal", "granted_at": grants.iso(T0),
                              "expires_at": grants.iso(T0 + 1800), "who": "alice"}]
    assert grant.expires_at == T0 + 1800
    assert store.active() == {"terminal": T0 + 1800}


def test_expiry_and_effective_set(tmp_path: Path) -> None:
    path, config = write_config(tmp_path, ("exec",))
    store = GrantStore.for_config(path)
    store.grant("terminal", 600, now=T0)
    store.grant("files", 3600, now=T0)
    assert store.effective(config, T0) == {"exec", "terminal", "files"}
    assert store.effective(config, T0 + 599) == {"exec", "terminal", "files"}
    assert store.active(T0 + 600) == {"files": T0 + 3600}  # gone by itself, on the second
    assert store.effective(config, T0 + 600) == {"exec", "files"}
    assert store.effective(config, T0 + 3600) == {"exec"}
    assert store.effective(["docker_read"], T0 + 3600) == {"docker_read"}


def test_a_new_grant_replaces_the_old_one_to_extend_or_shorten(store: GrantStore) -> None:
    store.grant("exec", 3600, now=T0)
    store.grant("exec", 600, now=T0 + 60)
    assert store.active(T0 + 60) == {"exec": T0 + 660}
    assert len(json.loads(store.path.read_text())["grants"]) == 1


def test_expired_entries_are_pruned_on_write(store: GrantStore) -> None:
    store.grant("terminal", 60, now=T0)
    store.grant("exec", 600, now=T0)
    store.grant("files", 600, now=T0 + 120)  # terminal expired at T0 + 60
    caps = [g["capability"] for g in json.loads(store.path.read_text())["grants"]]
    assert caps == ["exec", "files"]


def test_revoke_ends_a_grant_now_and_is_audited(store: GrantStore) -> None:
    store.grant("terminal", 1800, who="alice", now=T0)
    assert store.revoke("terminal", who="bob", now=T0 + 10) is True
    assert store.active(T0 + 10) == {}
    assert store.revoke("terminal", now=T0 + 20) is False  # nothing left to end
    audit = store.audit()
    assert [(e["action"], e["capability"], e["who"]) for e in audit] == [
        ("grant", "terminal", "alice"), ("revoke", "terminal", "bob")]
    assert audit[0]["expires_at"] == grants.iso(T0 + 1800) and audit[0]["for"] == "30m"


def test_the_audit_list_is_bounded(store: GrantStore) -> None:
    for i in range(grants.AUDIT_KEEP + 5):
        store.grant("exec", 600, who=f"u{i}", now=T0 + i)
    audit = store.audit()
    assert len(audit) == grants.AUDIT_KEEP and audit[-1]["who"] == f"u{grants.AUDIT_KEEP + 4}"


def test_next_change_is_the_earliest_expiry_that_changes_the_set(tmp_path: Path) -> None:
    path, config = write_config(tmp_path, ("exec",))
    store = GrantStore.for_config(path)
    assert store.next_change(T0, config) is None
    store.grant("exec", 300, now=T0)  # the config allows exec anyway: no change at expiry
    assert store.next_change(T0, config) is None
    assert store.next_change(T0) == T0 + 300  # without the config, it would change
    store.grant("terminal", 1200, now=T0)
    store.grant("files", 600, now=T0)
    assert store.next_change(T0, config) == T0 + 600
    assert store.next_change(T0 + 600, config) == T0 + 1200
    assert store.next_change(T0 + 1200, config) is None


def test_a_missing_file_means_no_grants(store: GrantStore) -> None:
    assert store.active() == {} and store.audit() == [] and store.next_change() is None


def test_a_clock_set_back_cannot_stretch_a_grant_beyond_a_day(store: GrantStore) -> None:
    store.grant("exec", 3600, now=T0)
    assert store.active(T0 - 3600) == {"exec": T0 + 3600}  # within a day of "now"
    assert store.active(T0 - 86400) == {}


# -- refusing unsafe or invalid files ---------------------------------------------

@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_a_file_others_can_write_is_refused(store: GrantStore, mode: int) -> None:
    store.grant("exec", 600)
    store.path.chmod(mode)
    with pytest.raises(GrantError, match="writable by other users") as info:
        store.active()
    assert "whoever can write it can enable capabilities" in str(info.value)
    with pytest.raises(GrantError, match="writable by other users"):
        store.grant("terminal", 600)  # nor is it written on top of


def test_a_group_readable_file_is_accepted(store: GrantStore) -> None:
    store.grant("exec", 600)
    store.path.chmod(0o640)
    assert store.active() == {"exec": T0 + 600}


@needs_root
def test_a_file_owned_by_another_user_is_refused(store: GrantStore) -> None:
    store.grant("exec", 600)
    os.chown(store.path, NOBODY, NOBODY)
    with pytest.raises(GrantError, match=f"owned by uid {NOBODY}"):
        store.active()


@needs_root
def test_a_file_owned_by_the_configs_owner_is_trusted(tmp_path: Path) -> None:
    path, _ = write_config(tmp_path)
    os.chown(path, NOBODY, NOBODY)  # an agent run as "nobody", from its own config
    store = GrantStore.for_config(path, clock=lambda: T0)
    store.grant("exec", 600)  # root grants for it: the file is handed to the agent's user
    info = store.path.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (NOBODY, 0o600)
    assert store.active() == {"exec": T0 + 600}


def test_a_symlink_is_refused(store: GrantStore, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"version": 1, "grants": [], "audit": []}))
    target.chmod(0o600)
    store.path.symlink_to(target)
    with pytest.raises(GrantError, match="symbolic link"):
        store.active()


def test_a_directory_in_its_place_is_refused(store: GrantStore) -> None:
    store.path.mkdir(mode=0o700)
    with pytest.raises(GrantError, match="not a regular file"):
        store.active()


@pytest.mark.parametrize(("content", "message"), [
    ("{", "not valid JSON"),
    ("[]", "not a grants file"),
    ('{"version": 2, "grants": []}', "not a grants file"),
    ('{"version": 1, "grants": {}}', "must be lists"),
    ('{"version": 1, "grants": [{"capability": "root", "granted_at": "2027-01-15T08:00:00Z",'
     ' "expires_at": "2027-01-15T09:00:00Z"}]}', "unknown capability 'root'"),
    ('{"version": 1, "grants": [{"capability": "exec", "granted_at": "soon",'
     ' "expires_at": "2027-01-15T09:00:00Z"}]}', "not a time"),
    ('{"version": 1, "grants": [{"capability": "exec", "granted_at": "2027-01-15T08:00:00",'
     ' "expires_at": "2027-01-15T09:00:00Z"}]}', "without a zone"),
    ('{"version": 1, "grants": [{"capability": "exec", "granted_at": "2027-01-15T08:00:00Z",'
     ' "expires_at": "2028-01-15T08:00:00Z"}]}', "longer than 24h"),
])
def test_an_invalid_file_is_refused(store: GrantStore, content: str, message: str) -> None:
    store.path.write_text(content)
    store.path.chmod(0o600)
    with pytest.raises(GrantError, match=message):
        store.active()


# -- what hello carries -----------------------------------------------------------

def test_hello_capabilities_are_config_and_grants_in_protocol_order(tmp_path: Path) -> None:
    path, config = write_config(tmp_path, ("docker_read",))
    assert grants.hello_capabilities(config) == ["docker_read"]
    store = GrantStore.for_config(path)
    store.grant("terminal", 600, now=T0)
    store.grant("docker_read", 600, now=T0)
    assert grants.hello_capabilities(config, now=T0) == ["terminal", "docker_read"]
    assert grants.hello_capabilities(config, now=T0 + 600) == ["docker_read"]


def test_hello_fails_closed_on_an_unsafe_file(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    path, config = write_config(tmp_path, ("exec",))
    store = GrantStore.for_config(path)
    store.grant("terminal", 600)
    store.path.chmod(0o666)
    assert grants.hello_capabilities(config) == ["exec"]
    assert "ignoring local grants" in caplog.text and "writable by other users" in caplog.text
    with pytest.raises(GrantError):
        grants.check(config)  # what `run` calls at start


def test_a_config_without_a_path_has_no_grants(tmp_path: Path) -> None:
    _, config = write_config(tmp_path, ("exec",))
    config = AgentConfig(**{**config.__dict__, "path": None})
    assert grants.hello_capabilities(config) == ["exec"]
    grants.check(config)


def test_the_watch_reports_grants_revokes_and_expiry_while_connected(tmp_path: Path) -> None:
    """What the link asks every few seconds: a new set only when it really changed."""
    import time

    path, config = write_config(tmp_path, ("docker_read",))
    now = [time.time()]
    watch = grants.CapabilityWatch(config, ["docker_read"], clock=lambda: now[0])
    assert watch.poll() is None  # nothing changed
    GrantStore.for_config(path).grant("terminal", 60)
    now[0] += 2
    assert watch.poll() == ["terminal", "docker_read"]
    now[0] += 2
    assert watch.poll() is None  # already reported
    GrantStore.for_config(path).revoke("terminal")
    now[0] += 2
    assert watch.poll() == ["docker_read"]
    GrantStore.for_config(path).grant("terminal", 60)
    now[0] += 2
    assert watch.poll() == ["terminal", "docker_read"]
    now[0] += 60  # the grant runs out by itself: the file does not change, the set does
    assert watch.poll() == ["docker_read"]
    now[0] += 2
    assert watch.poll() is None


async def test_the_link_checks_the_grants_on_a_sample_every_two_seconds(tmp_path: Path) -> None:
    """Link.send_live asks the watch on the first sample CAPABILITIES_EVERY after the last
    check, not on every sample, and a change goes out right behind that sample. A real
    WebSocket over a socket pair; the samples' loop times are given, as the daemon does."""
    import asyncio
    import socket

    from tests.agent.test_websocket import read_client_frame

    from beeyard.agent import link as link_module
    from beeyard.agent import websocket
    from beeyard.agent.spool import Spool
    from beeyard.shared import wire

    path, config = write_config(tmp_path, ("docker_read",))
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    peer, peer_writer = await asyncio.open_unix_connection(sock=theirs)
    link = link_module.Link(config, {}, Spool(tmp_path / "spool"), asyncio.Event())
    ws = link.ws = websocket.WebSocket(reader, writer, wire.MAX_FRAME)
    link._hello()  # the watch of this connection, as at every connection
    session = asyncio.create_task(link._session(ws, 60.0))  # no ping due in this test
    try:
        await asyncio.sleep(0)
        t0 = asyncio.get_running_loop().time()
        sample = websocket.binary_frame(wire.encode("pong", {"ts": 1.0}))  # stands in
        GrantStore.for_config(path).grant("terminal", 60)

        async def next_frame() -> wire.Frame:
            _, payload = await asyncio.wait_for(read_client_frame(peer), 5)
            return wire.decode(payload)

        assert link.send_live(sample, t0 + 1.0)  # within 2 s of the session's start
        assert link.send_live(sample, t0 + 1.5)
        assert link.send_live(sample, t0 + 2.1)  # due: this one carries the check
        assert [(await next_frame()).type for _ in range(3)] == ["pong"] * 3
        changed = await next_frame()
        assert changed.type == "capabilities"
        assert changed.body == {"capabilities": ["terminal", "docker_read"]}
        GrantStore.for_config(path).revoke("terminal")
        assert link.send_live(sample, t0 + 3.0)  # checked at 2.1: not again before 4.1
        assert link.send_live(sample, t0 + 4.2)
        assert [(await next_frame()).type for _ in range(2)] == ["pong"] * 2
        assert (await next_frame()).body == {"capabilities": ["docker_read"]}
    finally:
        session.cancel()
        await asyncio.gather(session, return_exceptions=True)
        writer.close()
        peer_writer.close()

"""Time-boxed local grants of capabilities: ``beeyard-agent grant terminal --for 30m``.

The config file is the host's standing policy; a grant is a temporary
exception to it for a maintenance window, made on the host itself and ended
by the clock, so that a capability turned on "just for now" is never left on
by a forgotten edit. Nothing the server sends can create a grant: the store is
a local file, written only by this module on behalf of the CLI.

The store is one JSON file beside the config (``agent.toml`` →
``agent.grants.json``, as the token is ``agent.token``, so two configs in one
directory never share grants). Whoever can write it can switch on root
capabilities, so it is held to the same standard as the config: it is
refused (``GrantError``) unless it is a regular file, owned by root, by the
config's owner or by this process's user, and neither group- nor
world-writable. It is written 0600 through ``atomic.write_atomic`` (a crash
leaves the old or the new file, never a torn one), under an ``flock`` of the
directory so that two concurrent ``grant`` commands do not lose one another.

Times are wall-clock (epoch seconds, stored as ISO 8601 UTC) because a grant
must outlive the process that made it and the daemon that reads it. Expired
entries are ignored when read and pruned on every write; the file keeps a
short audit list of grants and revocations (who, what, when).

The running daemon reads the effective set (config ∪ unexpired grants) when
it connects (``hello_capabilities``); whatever enforces a capability must call
``effective`` at the moment of the request, so that an expired grant stops
working on time even before the next connection reports it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from beeyard.agent.atomic import write_atomic
from beeyard.agent.config import AgentConfig
from beeyard.shared.frames import CAPABILITIES

log = logging.getLogger("beeyard.agent.grants")

# A grant covers a maintenance window. Anything meant to last longer than a day
# is standing policy and belongs in the config file, where it is visible and
# reviewed; and a grant someone forgot about must end by itself within a day.
MAX_SECONDS = 24 * 3600
# Shorter than a minute is almost always a typo (30s for 30m), and would expire
# before the server could even be told about it.
MIN_SECONDS = 60
AUDIT_KEEP = 100  # audit events kept in the file, newest last
FORMAT_VERSION = 1

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


class GrantError(ValueError):
    """A bad duration or capability, or a grants file that is unsafe or unreadable;
    the message is one line meant for the operator."""


def check_capability(cap: str) -> str:
    """``cap`` if it is a capability this agent knows; else an error naming them all."""
    if cap not in CAPABILITIES:
        raise GrantError(f"unknown capability {cap!r} (known: {', '.join(CAPABILITIES)})")
    return cap


def parse_duration(text: str) -> int:
    """Seconds in ``90s``, ``30m``, ``2h``, ``1h30m`` (hours, minutes, seconds in that
    order, each at most once); between ``MIN_SECONDS`` and ``MAX_SECONDS``.

    A bare number is refused: ``30`` could mean seconds or minutes, and a grant of
    root capabilities is no place for guessing."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or match is None:
        raise GrantError(f"bad duration {text!r}: use e.g. 90s, 30m, 2h or 1h30m")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total < MIN_SECONDS:
        raise GrantError(f"duration {text!r} is too short: at least {MIN_SECONDS // 60}m")
    if total > MAX_SECONDS:
        raise GrantError(
            f"duration {text!r} is too long: at most {MAX_SECONDS // 3600}h "
            "(a standing capability belongs in the config file)"
        )
    return total


def format_duration(seconds: float) -> str:
    """``5400`` → ``1h30m``; the inverse of ``parse_duration`` for whole minutes."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "",
             f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


def iso(ts: float) -> str:
    """Epoch seconds as ``2026-11-22T11:41:02Z``, the file's time format."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _from_iso(text: Any, where: str) -> float:
    if not isinstance(text, str):
        raise GrantError(f"{where}: not a time")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise GrantError(f"{where}: not a time: {text!r}") from None
    if moment.tzinfo is None:
        raise GrantError(f"{where}: time without a zone: {text!r}")
    return moment.timestamp()


def grants_path(config_path: Path) -> Path:
    """Where the grants of the config at ``config_path`` live: beside it."""
    return config_path.with_suffix(".grants.json")


def current_user() -> str:
    """Who is granting, for the audit list: the sudo caller if root runs through sudo,
    else the login name if it differs from the process's user (``su``), else the user.
    Informational only: root could write anything here anyway."""
    import pwd

    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    sudo_user = os.environ.get("SUDO_USER")
    if os.getuid() == 0 and sudo_user:
        return f"{sudo_user} (sudo)"
    try:
        login = os.getlogin()
    except OSError:
        return user
    return user if login == user else f"{login} as {user}"


@dataclass(frozen=True)
class Grant:
    capability: str
    granted_at: float
    expires_at: float
    who: str

    def to_json(self) -> dict[str, str]:
        return {"capability": self.capability, "granted_at": iso(self.granted_at),
                "expires_at": iso(self.expires_at), "who": self.who}


class GrantStore:
    """The grants file of one config. ``clock`` (epoch seconds) is injectable so that
    expiry can be tested without waiting; every method also takes an explicit ``now``."""

    def __init__(self, path: Path, trusted_owners: Iterable[int] = (),
                 clock: Callable[[], float] = time.time,
                 owner: tuple[int, int] | None = None) -> None:
        self.path = path
        self.clock = clock
        # root and this process's user always; the config's owner is added by for_config
        self.trusted_owners = frozenset({0, os.geteuid(), *trusted_owners})
        # root writing for an agent that runs as another user hands the file to that
        # user (uid, gid), or the agent could not read its 0600 grants
        self.owner = owner

    @classmethod
    def for_config(cls, config_path: Path, clock: Callable[[], float] = time.time) -> GrantStore:
        """The store beside ``config_path``, trusting the config's owner too: whoever
        owns the config can enable any capability there, so a grants file of theirs
        is no escalation."""
        try:
            info = config_path.stat()
        except OSError:
            return cls(grants_path(config_path), (), clock)
        return cls(grants_path(config_path), (info.st_uid,), clock, (info.st_uid, info.st_gid))

    # -- reading ---------------------------------------------------------------

    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else now

    def _read(self) -> tuple[list[Grant], list[dict[str, Any]]]:
        """All grants (expired too) and the audit list; a missing file is empty."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise GrantError(f"{self.path} is a symbolic link: refused") from None
            raise GrantError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        try:
            info = os.fstat(fd)  # the file actually opened, not whatever the path is now
            self._check_safe(info)
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read()
        finally:
            os.close(fd)
        return self._parse(data)

    def _check_safe(self, info: os.stat_result) -> None:
        if not stat.S_ISREG(info.st_mode):
            raise GrantError(f"{self.path} is not a regular file: refused")
        if info.st_uid not in self.trusted_owners:
            raise GrantError(
                f"{self.path} is owned by uid {info.st_uid}, not by root or the agent's "
                "user: refused (whoever can write it can enable capabilities)"
            )
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise GrantError(
                f"{self.path} is writable by other users (mode "
                f"{stat.S_IMODE(info.st_mode):04o}): refused, since whoever can write it "
                f"can enable capabilities (chmod 600 {self.path})"
            )

    def _parse(self, data: bytes) -> tuple[list[Grant], list[dict[str, Any]]]:
        where = str(self.path)
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise GrantError(f"{where}: not valid JSON: {exc}") from None
        if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION:
            raise GrantError(f"{where}: not a grants file of version {FORMAT_VERSION}")
        entries, audit = raw.get("grants", []), raw.get("audit", [])
        if not isinstance(entries, list) or not isinstance(audit, list):
            raise GrantError(f"{where}: grants and audit must be lists")
        grants: list[Grant] = []
        for i, entry in enumerate(entries):
            at = f"{where}: grants[{i}]"
            if not isinstance(entry, dict):
                raise GrantError(f"{at}: not an object")
            try:
                cap = check_capability(entry.get("capability", ""))
            except GrantError as exc:
                raise GrantError(f"{at}: {exc}") from None
            granted_at = _from_iso(entry.get("granted_at"), f"{at}.granted_at")
            expires_at = _from_iso(entry.get("expires_at"), f"{at}.expires_at")
            if not 0 < expires_at - granted_at <= MAX_SECONDS:
                # a hand-edited year-long "grant" is a config change in disguise
                raise GrantError(f"{at}: lasts longer than {MAX_SECONDS // 3600}h")
            who = entry.get("who", "")
            grants.append(Grant(cap, granted_at, expires_at, str(who)))
        return grants, [e for e in audit if isinstance(e, dict)]

    def grants(self, now: float | None = None) -> list[Grant]:
        """The unexpired grants, one per capability (the latest), in capability order."""
        moment = self._now(now)
        latest: dict[str, Grant] = {}
        for grant in self._read()[0]:
            # A clock set back far enough would stretch a grant: never longer than
            # MAX_SECONDS from now, whatever the clock did.
            if moment < grant.expires_at <= moment + MAX_SECONDS:
                latest[grant.capability] = grant
        return [latest[c] for c in CAPABILITIES if c in latest]

    def active(self, now: float | None = None) -> dict[str, float]:
        """Capability → expiry (epoch seconds) of every unexpired grant."""
        return {g.capability: g.expires_at for g in self.grants(now)}

    def audit(self) -> list[dict[str, Any]]:
        """The audit list, oldest first."""
        return self._read()[1]

    def effective(self, config: AgentConfig | Iterable[str],
                  now: float | None = None) -> frozenset[str]:
        """What this host allows at ``now``: the config's capabilities ∪ unexpired grants."""
        return frozenset(_config_caps(config)) | frozenset(self.active(now))

    def next_change(self, now: float | None = None,
                    config: AgentConfig | Iterable[str] = ()) -> float | None:
        """When the effective set next changes by itself (the earliest expiry of a grant
        the config does not also allow), or None; so the daemon can re-report then."""
        standing = frozenset(_config_caps(config))
        expiries = [exp for cap, exp in self.active(now).items() if cap not in standing]
        return min(expiries, default=None)

    # -- writing ---------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write between concurrent CLI runs (an flock of the
        directory: no lock file to leave behind; readers need no lock, the rename is
        atomic)."""
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, grants: list[Grant], audit: list[dict[str, Any]], now: float) -> None:
        live = [g for g in grants if g.expires_at > now]  # expired entries are pruned here
        document = {
            "version": FORMAT_VERSION,
            "comment": "time-boxed capability grants of beeyard-agent; "
                       "use `beeyard-agent grant` and `revoke`, not an editor",
            "grants": [g.to_json() for g in live],
            "audit": audit[-AUDIT_KEEP:],
        }
        write_atomic(self.path, (json.dumps(document, indent=2) + "\n").encode(), 0o600)
        if self.owner is not None and os.geteuid() == 0 and self.owner[0] != 0:
            os.chown(self.path, *self.owner)

    def grant(self, cap: str, seconds: int, who: str | None = None,
              now: float | None = None) -> Grant:
        """Allow ``cap`` for ``seconds`` from now, replacing an earlier grant of it (to
        extend or to shorten it)."""
        check_capability(cap)
        if not MIN_SECONDS <= seconds <= MAX_SECONDS:
            raise GrantError(f"a grant lasts {MIN_SECONDS} s to {MAX_SECONDS} s, not {seconds}")
        moment = self._now(now)
        who = current_user() if who is None else who
        new = Grant(cap, moment, moment + seconds, who)
        with self._locked():
            grants, audit = self._read()
            grants = [g for g in grants if g.capability != cap] + [new]
            audit.append({"at": iso(moment), "action": "grant", "capability": cap,
                          "for": format_duration(seconds), "expires_at": iso(new.expires_at),
                          "who": who})
            self._write(grants, audit, moment)
        return new

    def revoke(self, cap: str, who: str | None = None, now: float | None = None) -> bool:
        """End the grant of ``cap`` now; False if there was no unexpired one (nothing is
        written then)."""
        check_capability(cap)
        moment = self._now(now)
        with self._locked():
            grants, audit = self._read()
            if not any(g.capability == cap and g.expires_at > moment for g in grants):
                return False
            audit.append({"at": iso(moment), "action": "revoke", "capability": cap,
                          "who": current_user() if who is None else who})
            self._write([g for g in grants if g.capability != cap], audit, moment)
        return True


def _config_caps(config: AgentConfig | Iterable[str]) -> Iterable[str]:
    return config.capabilities if isinstance(config, AgentConfig) else config


def check(config: AgentConfig) -> None:
    """Raise ``GrantError`` if the config's grants file is unsafe or invalid (at start,
    so a bad file is reported once, loudly, instead of at every connection)."""
    if config.path is not None:
        GrantStore.for_config(config.path).grants()


def hello_capabilities(config: AgentConfig, now: float | None = None) -> list[str]:
    """The capability list for ``hello``: config ∪ unexpired grants, in protocol order,
    with the local grants logged (once per connection)."""
    return effective(config, now, announce=True)


def effective(config: AgentConfig, now: float | None = None, *,
              announce: bool = False) -> list[str]:
    """What the agent allows at this moment: config ∪ unexpired grants. Asked again
    for every operation, so a grant revoked or run out refuses the next request at once.

    Fails closed: a grants file that is unsafe or unreadable is logged as an error
    and ignored, leaving the config's capabilities only."""
    caps: frozenset[str] = frozenset(config.capabilities)
    if config.path is not None:
        store = GrantStore.for_config(config.path)
        try:
            granted = store.grants(now)
        except GrantError as exc:
            log.error("ignoring local grants: %s", exc)
            granted = []
        extra = [g for g in granted if g.capability not in caps]
        if extra and announce:
            log.info("capabilities granted locally: %s", ", ".join(
                f"{g.capability} until {iso(g.expires_at)}" for g in extra))
        caps |= {g.capability for g in granted}
    return [c for c in CAPABILITIES if c in caps]


class CapabilityWatch:
    """Notices that the effective set changed while the agent is connected (a grant
    given, revoked, or expired), so the link can tell the server at once.

    Asked by the link on a live sample's wake-up every few seconds rather than on a
    timer of its own: a wake-up costs the agent more than the check. A check is a
    ``stat`` of the grants file; the file is read again only when it changed or when
    the earliest grant expiry has passed.
    """

    def __init__(self, config: AgentConfig, reported: list[str],
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.reported = reported
        self._clock = clock
        self._path = None if config.path is None else grants_path(config.path)
        self._stamp = self._stat()
        self._due = self._expiry()

    def _stat(self) -> tuple[int, int, int] | None:
        if self._path is None:
            return None
        path = str(self._path)
        # most hosts have no grants file: os.access says so without raising (an
        # exception built and caught every check is most of the cost of this check)
        if not os.access(path, os.F_OK):
            return None
        try:
            info = os.stat(path)
        except OSError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def _expiry(self) -> float:
        if self.config.path is None:
            return float("inf")
        try:
            due = GrantStore.for_config(self.config.path).next_change(config=self.config)
        except GrantError:
            return float("inf")  # hello_capabilities reports the bad file
        return float("inf") if due is None else due

    def poll(self) -> list[str] | None:
        """The new capability list if it differs from the last one reported, else None."""
        if self._path is None:
            return None
        now = self._clock()
        stamp = self._stat()
        if stamp == self._stamp and now < self._due:
            return None
        self._stamp = stamp
        self._due = self._expiry()
        current = effective(self.config, now)
        if current == self.reported:
            return None
        self.reported = current
        return current

"""In-memory live state of the fleet, and its publish/subscribe fan-out.

The agent hub writes here as frames arrive (``record_sample``, ``mark_online``,
``mark_offline``); readers (``GET /api/servers``, ``/api/ws/servers``, SSE,
Prometheus, alerting) read here and never touch the database for "now".

Publishing never awaits: each subscriber owns a bounded buffer, and a subscriber
that falls behind loses its oldest events (counted in ``dropped``) rather than
slowing the hub. A reader that must not miss state (a browser reconnecting, a
subscriber that dropped events) reads the state afresh (``api/live.py`` sends the
fleet as ``GET /api/servers`` shows it) and continues from the events after it.

Everything here runs on the event loop thread; nothing is locked because no
method awaits between reading and writing state.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from array import array
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from beeyard.shared import native
from beeyard.shared.frames import SUMMARY_NAMES
from beeyard.shared.summaries import record_scalars, scalars

RING_SECONDS = 15 * 60.0  # how much history of live samples each server keeps
DEFAULT_INTERVAL = 1.0  # seconds between samples, until the agent's hello says otherwise
SUBSCRIBER_BUFFER = 4096  # events a subscriber may fall behind before the oldest are dropped

Event = dict[str, Any]
"""``{"type": "sample"|"online"|"offline"|"server_updated"|"server_removed",
"server_id": int, ...}``:

- sample: ``ts`` (float, unix time), ``values`` (the sample's ``SUMMARY_NAMES``
  scalars: what the fleet overview shows); for the watchers of that one server
  also ``metrics`` (the sample frame's metrics map)
- online: ``last_seen`` (float), ``interval`` (float, seconds between samples)
- offline: ``last_seen`` (float or None)
- server_updated: ``fields`` (dict of what changed, e.g. name, host, agent_version)
- server_removed: nothing else
"""


class Ring:
    """The last 15 minutes of one server's samples as chart scalars, in two flat arrays.

    Why not the samples themselves: at 10,000 servers and 1 s, 15 minutes is 9 million
    samples; even msgpack-packed (~1.3 KB each) that is ~11 GB. Live charts, the live
    tier of the records API and alerting need only the ``SUMMARY_NAMES`` scalars (the
    same quantities the minute summaries store), which fit in 8 + 18 × 4 bytes a sample:
    ~72 KB per server at 1 s. float32 keeps 7 significant digits, plenty for a chart;
    an absent value is NaN.
    """

    __slots__ = ("_count", "_head", "_ts", "_values", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ts = array("d", bytes(8 * size))
        self._values = array("f", bytes(4 * size * _WIDTH))
        self._head = 0  # where the next sample goes
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, ts: float, values: dict[str, float]) -> None:
        i = self._head
        self._ts[i] = ts
        self._values[i * _WIDTH:(i + 1) * _WIDTH] = array("f", map(values.get, SUMMARY_NAMES,
                                                                   _NANS))
        self._head = (i + 1) % self.size
        self._count = min(self._count + 1, self.size)

    def _order(self) -> range:
        return range(self._head - self._count, self._head)

    def items(self, since: float | None = None) -> list[tuple[float, dict[str, float]]]:
        """``(ts, {name: value})`` oldest first, only those with ts > ``since``."""
        out = []
        for j in self._order():
            i = j % self.size
            ts = self._ts[i]
            if since is not None and ts <= since:
                continue
            row = self._values[i * _WIDTH:(i + 1) * _WIDTH]
            out.append((ts, {n: v for n, v in zip(SUMMARY_NAMES, row, strict=True)
                             if v == v}))  # NaN != NaN: absent
        return out

    def resized(self, size: int) -> Ring:
        ring = Ring(size)
        for ts, values in self.items():
            ring.append(ts, values)
        return ring


@dataclass
class _Server:
    ring: Ring
    # GPU details (per card) for the gpu-records live tier: only hosts with GPUs fill it.
    gpus: collections.deque[tuple[float, list[dict[str, Any]]]]
    latest: tuple[float, dict[str, Any]] | None = None
    values: dict[str, float] | None = None  # the latest sample's summary scalars
    interval: float = DEFAULT_INTERVAL
    online: bool = False
    last_seen: float | None = None


_WIDTH = len(SUMMARY_NAMES)
_NAN = float("nan")
_NANS = (_NAN,) * _WIDTH


def _ring_length(interval: float) -> int:
    return max(1, math.ceil(RING_SECONDS / max(interval, 0.1))) + 1


class Subscription:
    """An async iterator of events with a bounded buffer of its own.

    ``async for event in sub`` waits for the next event; ``drain()`` takes every
    buffered event at once without waiting (for batching a fan-out). Iteration
    ends after ``close()``. Use as a context manager so it is always removed.
    """

    def __init__(self, state: LiveState, maxsize: int, server_id: int | None = None) -> None:
        self._state = state
        self.server_id = server_id  # None: the whole fleet
        self._buffer: collections.deque[Event] = collections.deque(maxlen=maxsize)
        self._ready = asyncio.Event()
        self._closed = False
        self._poked = False
        self.dropped = 0  # events lost because this subscriber fell behind

    def _push(self, event: Event) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1  # deque(maxlen) drops the oldest on append
        self._buffer.append(event)
        self._ready.set()

    def drain(self) -> list[Event]:
        """Every buffered event, oldest first, without waiting."""
        events = list(self._buffer)
        self._buffer.clear()
        self._ready.clear()
        return events

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        if self._closed and not self._buffer:
            raise StopAsyncIteration
        event = self._buffer.popleft()
        if not self._buffer:
            self._ready.clear()
        return event

    async def wait(self) -> None:
        """Wait until at least one event is buffered, the subscription is closed, or
        ``poke()`` was called (so one wait serves a reader's other wake-ups too, without
        a task and ``asyncio.wait`` per batch of events)."""
        while not self._buffer and not self._closed and not self._poked:
            self._ready.clear()
            await self._ready.wait()
        self._poked = False

    def poke(self) -> None:
        """Wake ``wait()`` even with nothing buffered (a timer, the client leaving)."""
        self._poked = True
        self._ready.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._state._unsubscribe(self)
            self._ready.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class LiveState:
    """Per server: the latest sample, a ring of the last 15 minutes, online state
    and last-seen time; plus the subscribers to changes of any of them."""

    _servers: dict[int, _Server] = field(default_factory=dict)
    _subscribers: set[Subscription] = field(default_factory=set)
    _watchers: dict[int, set[Subscription]] = field(default_factory=dict)  # by server id
    # Called with the server id by ``remove``: the agent hub closes the deleted server's link.
    on_remove: list[Callable[[int], None]] = field(default_factory=list)

    # -- reading ---------------------------------------------------------------

    def latest(self, server_id: int) -> tuple[float, dict[str, Any]] | None:
        """The newest sample ``(ts, metrics)``, or None if none arrived since start."""
        s = self._servers.get(server_id)
        if s is None or s.latest is None:
            return None
        if native.is_record(s.latest[1]):  # decoded lazily: most are never read
            s.latest = (s.latest[0], native.plain(s.latest[1]))
        return s.latest

    def ring(
        self, server_id: int, since: float | None = None
    ) -> list[tuple[float, dict[str, float]]]:
        """The scalars of the last 15 minutes' samples, oldest first; only ts > ``since``."""
        s = self._servers.get(server_id)
        return [] if s is None else s.ring.items(since)

    def gpu_ring(
        self, server_id: int, since: float | None = None
    ) -> list[tuple[float, list[dict[str, Any]]]]:
        """Per-GPU readings of the last 15 minutes' samples that had GPUs, oldest first."""
        s = self._servers.get(server_id)
        if s is None:
            return []
        return [(ts, g) for ts, g in s.gpus if since is None or ts > since]

    def latest_values(self, server_id: int) -> dict[str, float] | None:
        """The newest sample's summary scalars (as the ring and the fleet stream have them)."""
        s = self._servers.get(server_id)
        return None if s is None else s.values

    def online(self, server_id: int) -> bool:
        s = self._servers.get(server_id)
        return s is not None and s.online

    def last_seen(self, server_id: int) -> float | None:
        """Unix time of the last frame from the server's agent (this process's view)."""
        s = self._servers.get(server_id)
        return None if s is None else s.last_seen

    def interval(self, server_id: int) -> float | None:
        s = self._servers.get(server_id)
        return None if s is None else s.interval

    # -- subscribing -----------------------------------------------------------

    def subscribe(
        self, maxsize: int = SUBSCRIBER_BUFFER, server_id: int | None = None
    ) -> Subscription:
        """Events of the whole fleet, or with ``server_id`` of that server only (a
        server's page: it costs nothing when the other 9,999 servers report)."""
        sub = Subscription(self, maxsize, server_id)
        if server_id is None:
            self._subscribers.add(sub)
        else:
            self._watchers.setdefault(server_id, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub.server_id is None:
            self._subscribers.discard(sub)
            return
        watchers = self._watchers.get(sub.server_id)
        if watchers is not None:
            watchers.discard(sub)
            if not watchers:
                del self._watchers[sub.server_id]

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers) + sum(len(w) for w in self._watchers.values())

    def publish(self, event: Event, detailed: Event | None = None) -> None:
        """Hand ``event`` to every subscriber it concerns, and ``detailed`` (when given) to
        the watchers of its server instead. Never awaits, never blocks."""
        for sub in self._subscribers:
            sub._push(event)
        watchers = self._watchers.get(event["server_id"])
        if watchers:
            for sub in watchers:
                sub._push(detailed or event)

    # -- writing (the agent hub; server_updated/removed also from the REST API) --

    def _server(self, server_id: int) -> _Server:
        s = self._servers.get(server_id)
        if s is None:
            size = _ring_length(DEFAULT_INTERVAL)
            s = self._servers[server_id] = _Server(Ring(size), collections.deque(maxlen=size))
        return s

    def mark_online(self, server_id: int, interval: float = DEFAULT_INTERVAL) -> None:
        s = self._server(server_id)
        size = _ring_length(interval)
        if s.interval != interval or s.ring.size != size:
            s.interval = interval
            s.ring = s.ring.resized(size)
            s.gpus = collections.deque(s.gpus, maxlen=size)
        s.last_seen = time.time()
        s.online = True
        self.publish({"type": "online", "server_id": server_id, "last_seen": s.last_seen,
                      "interval": interval})

    def mark_offline(self, server_id: int) -> None:
        s = self._servers.get(server_id)
        if s is None or not s.online:
            return
        s.online = False
        self.publish({"type": "offline", "server_id": server_id, "last_seen": s.last_seen})

    def seen(self, server_id: int, now: float | None = None) -> None:
        """Any frame from the agent: refresh last_seen (no event; samples carry it)."""
        self._server(server_id).last_seen = time.time() if now is None else now

    def record_sample(self, server_id: int, ts: float, metrics: dict[str, Any]) -> None:
        s = self._server(server_id)
        s.last_seen = time.time()
        if s.latest is not None and ts < s.latest[0]:
            return  # out of order (a clock step back): the ring stays sorted
        s.latest = (ts, metrics)
        values = s.values = (record_scalars(metrics) if native.is_record(metrics)
                             else scalars(metrics))
        s.ring.append(ts, values)
        gpus = metrics.get("gpus")
        if gpus:
            s.gpus.append((ts, native.plain(gpus)))
        # The fleet gets the summary values; a server's watchers also its full metrics.
        event = {"type": "sample", "server_id": server_id, "ts": ts, "values": values}
        self.publish(event, {**event, "metrics": metrics} if server_id in self._watchers
                     else None)

    def server_updated(self, server_id: int, fields: dict[str, Any]) -> None:
        """Announce a change to a server's record (name, host facts, group, tags...)."""
        self.publish({"type": "server_updated", "server_id": server_id, "fields": fields})

    def remove(self, server_id: int) -> None:
        """The server was deleted: forget it, tell subscribers, and close its agent's
        link (through ``on_remove``), so that no stale sample brings it back."""
        for hook in self.on_remove:
            hook(server_id)
        self._servers.pop(server_id, None)
        self.publish({"type": "server_removed", "server_id": server_id})


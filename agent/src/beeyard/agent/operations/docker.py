"""Docker on this host through the Docker SDK (docker_read / docker_control).

The SDK is blocking and heavy (requests, urllib3: about 10 MB of resident memory
once imported), so it is imported on the first Docker request, never at start,
and every call into it runs in a worker thread (``asyncio.to_thread``): a slow
engine never holds up the link's other traffic.

One client per agent, made on first use from ``[docker] url`` and ``timeout`` and
kept (its connection pool is reused). A host without an engine answers
``unavailable`` with the URL and the cause; that is logged at most once a minute,
so a dashboard polling a Docker-less host does not flood the agent's log.

``docker.logs`` reads the SDK's blocking log generator in a thread that hands
chunks to the event loop through a small bounded buffer (the stream is paced by
the server's credit, so a slow reader slows the engine's stream down instead of
growing our memory); when the call is cancelled the generator's response is
closed, which ends the thread's blocking read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import msgpack

from beeyard.agent.config import DockerConfig
from beeyard.agent.operations import Call, Refused
from beeyard.shared.frames import CHUNK
from beeyard.shared.operations.docker import (
    MAX_CONTAINERS,
    MAX_EVENTS_WINDOW,
    MAX_STATS,
)

log = logging.getLogger("beeyard.agent.docker")

UNAVAILABLE_LOG_EVERY = 60.0  # seconds between log lines saying the engine is unreachable
RESULT_BUDGET = 3 * 1024 * 1024  # bytes of msgpack a listing may fill (a frame is 4 MiB)
LOG_BUFFER = 16  # chunks the log reader thread may run ahead of the link
MAX_LABELS = 32  # labels kept per container / network / volume
MAX_TEXT = 256  # characters kept of a label value or an event attribute
STATS_WORKERS = 8  # containers measured at once

T = TypeVar("T")

_client_lock = threading.Lock()
_client: Any = None  # docker.DockerClient, made on first use
_client_key: tuple[str, int] | None = None
_last_unavailable_log = -UNAVAILABLE_LOG_EVERY


def _docker_client(config: DockerConfig) -> Any:
    """The agent's client (in a worker thread: ``version="auto"`` asks the engine)."""
    global _client, _client_key
    key = (config.url, config.timeout)
    with _client_lock:
        if _client is not None and _client_key == key:
            return _client
        try:
            import docker
        except ImportError:
            raise Refused("unavailable", "the docker Python package is not installed on this "
                                         "host (pip install docker)") from None
        client = docker.DockerClient(base_url=config.url, timeout=config.timeout,
                                     version="auto")
        if _client is not None:
            _client.close()
        _client, _client_key = client, key
        return client


def _unavailable(config: DockerConfig, exc: BaseException) -> Refused:
    """The refusal for an engine we cannot reach, logged at most once a minute."""
    global _last_unavailable_log
    cause = _cause(exc)
    reason = f"no Docker engine at {config.url}: {cause}"
    now = time.monotonic()
    if now - _last_unavailable_log >= UNAVAILABLE_LOG_EVERY:
        _last_unavailable_log = now
        log.warning("%s (said at most once a minute)", reason)
    else:
        log.debug("%s", reason)
    return Refused("unavailable", reason)


def _cause(exc: BaseException) -> str:
    """The innermost readable cause of a connection failure (file not found, refused)."""
    seen: BaseException | None = exc
    text = str(exc)
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    for needle in ("No such file or directory", "Connection refused", "Permission denied"):
        if needle in text:
            return needle
    return text[:300]


def _refusal(config: DockerConfig, exc: Exception, what: str) -> Refused:
    """Map an SDK failure to the call's error code and a reason a person can act on."""
    import docker.errors
    import requests.exceptions

    if isinstance(exc, Refused):
        return exc
    if isinstance(exc, docker.errors.NotFound):
        return Refused("not_found", f"{what} not found: {_explain(exc)}")
    if isinstance(exc, docker.errors.APIError):
        message = _explain(exc)
        status = exc.status_code or 500
        if status in (409, 304) or "state improper" in message or "is not running" in message:
            return Refused("invalid", f"{what}: {message}")
        if 400 <= status < 500:
            return Refused("invalid", f"{what}: {message}")
        return Refused("failed", f"the Docker engine failed on {what}: {message}")
    if isinstance(exc, requests.exceptions.Timeout):
        return Refused("timeout", f"the Docker engine at {config.url} did not answer within "
                                  f"{config.timeout} s")
    if isinstance(exc, requests.exceptions.ConnectionError | docker.errors.DockerException
                  | OSError):
        return _unavailable(config, exc)
    raise exc


def _explain(exc: Any) -> str:
    text = exc.explanation if getattr(exc, "explanation", None) else str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text)[:500]


async def _engine(call: Call, what: str, work: Callable[[Any], T]) -> T:
    """Run ``work(client)`` in a thread; every failure becomes a ``Refused``."""
    config = call.config.docker

    def run() -> T:
        try:
            return work(_docker_client(config))
        except Exception as exc:
            raise _refusal(config, exc, what) from None

    return await asyncio.to_thread(run)


# -- shaping the engine's answers ------------------------------------------------


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    return "" if value is None else str(value)[:limit]


def _labels(labels: Any) -> dict[str, str]:
    if not isinstance(labels, dict):
        return {}
    return {_text(k, 128): _text(v) for k, v in list(labels.items())[:MAX_LABELS]}


def _fit(items: list[dict[str, Any]], budget: int = RESULT_BUDGET) -> tuple[list[Any], bool]:
    """As many items as fit in ``budget`` bytes of msgpack; True if some were left out."""
    used = 0
    for i, item in enumerate(items):
        used += len(msgpack.packb(item, use_bin_type=True))
        if used > budget:
            return items[:i], True
    return items, False


def _container(raw: dict[str, Any]) -> dict[str, Any]:
    names = raw.get("Names") or []
    ports = []
    for p in (raw.get("Ports") or [])[:64]:
        ports.append({"private": p.get("PrivatePort"), "public": p.get("PublicPort"),
                      "type": _text(p.get("Type"), 8), "ip": _text(p.get("IP"), 64)})
    return {
        "id": _text(raw.get("Id"), 64),
        "name": _text(names[0].lstrip("/") if names else "", 128),
        "image": _text(raw.get("Image")),
        "command": _text(raw.get("Command")),
        "state": _text(raw.get("State"), 32),
        "status": _text(raw.get("Status"), 128),
        "created": raw.get("Created") if isinstance(raw.get("Created"), int) else None,
        "ports": ports,
        "labels": _labels(raw.get("Labels")),
    }


def _list_containers(client: Any, all_: bool) -> dict[str, Any]:
    raw = client.api.containers(all=all_)
    shown = [_container(c) for c in raw[:MAX_CONTAINERS]]
    items, cut = _fit(shown)
    return {"containers": items, "truncated": cut or len(raw) > MAX_CONTAINERS}


def _info(client: Any) -> dict[str, Any]:
    raw = client.info()
    version = client.version()
    keys = ("ID", "Name", "ServerVersion", "OperatingSystem", "OSType", "Architecture",
            "KernelVersion", "NCPU", "MemTotal", "Containers", "ContainersRunning",
            "ContainersPaused", "ContainersStopped", "Images", "Driver", "CgroupDriver",
            "CgroupVersion", "DockerRootDir", "LoggingDriver", "SystemTime")
    info = {k: raw[k] for k in keys if isinstance(raw.get(k), str | int | float | bool)}
    return {
        "info": info,
        "version": {k: _text(version.get(k), 128)
                    for k in ("Version", "ApiVersion", "MinAPIVersion", "Os", "Arch")
                    if version.get(k) is not None},
        "engine": "podman" if any("podman" in _text(c.get("Name")).lower()
                                  for c in version.get("Components") or []
                                  if isinstance(c, dict)) else "docker",
    }


def _cpu_percent(stats: dict[str, Any], before: dict[str, Any] | None) -> float | None:
    """CPU use between two readings, as ``docker stats`` shows it (100 % = one CPU)."""
    cpu = stats.get("cpu_stats") or {}
    pre = (before or {}).get("cpu_stats") if before is not None else stats.get("precpu_stats")
    pre = pre or {}
    total = (cpu.get("cpu_usage") or {}).get("total_usage")
    pre_total = (pre.get("cpu_usage") or {}).get("total_usage")
    system, pre_system = cpu.get("system_cpu_usage"), pre.get("system_cpu_usage")
    if not (isinstance(total, int) and isinstance(pre_total, int)
            and isinstance(system, int) and isinstance(pre_system, int)):
        return None
    system_delta = system - pre_system
    if system_delta <= 0 or not pre_system:
        return None
    cpus = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or [])
    return round(max(0, total - pre_total) / system_delta * max(1, cpus) * 100.0, 2)


def _stat(raw: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    mem = raw.get("memory_stats") or {}
    nets = raw.get("networks") or {}
    rx = sum(n.get("rx_bytes", 0) for n in nets.values() if isinstance(n, dict))
    tx = sum(n.get("tx_bytes", 0) for n in nets.values() if isinstance(n, dict))
    read = write = 0
    for entry in (raw.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = str(entry.get("op", "")).lower()
        if op == "read":
            read += entry.get("value", 0)
        elif op == "write":
            write += entry.get("value", 0)
    usage = mem.get("usage")
    cache = (mem.get("stats") or {}).get("inactive_file") or 0
    return {
        "id": _text(raw.get("id") or raw.get("Id"), 64),
        "name": _text(raw.get("name"), 128).lstrip("/"),
        "cpu_percent": _cpu_percent(raw, before),
        "memory_bytes": usage - cache if isinstance(usage, int) else None,
        "memory_limit_bytes": mem.get("limit"),
        "net_rx_bytes": rx,
        "net_tx_bytes": tx,
        "block_read_bytes": read,
        "block_write_bytes": write,
        "pids": (raw.get("pids_stats") or {}).get("current"),
        "read_at": _text(raw.get("read"), 64),
    }


def _stats(client: Any, container: str | None) -> dict[str, Any]:
    """One reading per container. An engine that answers without a previous CPU
    reading (podman) is read twice half a second apart, so the CPU figure is current,
    not the average since the container started."""
    import docker.errors

    if container is not None:
        targets = [client.api.inspect_container(container)["Id"]]
    else:
        targets = [c["Id"] for c in client.api.containers(filters={"status": "running"})]
    cut = len(targets) > MAX_STATS
    targets = targets[:MAX_STATS]

    def read(cid: str) -> dict[str, Any] | None:
        try:
            stats: dict[str, Any] = client.api.stats(cid, stream=False)
            return stats
        except docker.errors.NotFound:
            if container is not None:
                raise
            return None  # gone between the listing and the reading

    with ThreadPoolExecutor(min(STATS_WORKERS, max(1, len(targets)))) as pool:
        first = list(pool.map(read, targets))
        need_second = any(s is not None and _cpu_percent(s, None) is None for s in first)
        if need_second:
            time.sleep(0.5)
            second = list(pool.map(read, targets))
        else:
            second = [None] * len(first)
    out = []
    for a, b in zip(first, second, strict=True):
        if a is None:
            continue
        out.append(_stat(b, a) if b is not None else _stat(a, None))
    return {"stats": out, "truncated": cut}


def _event(raw: dict[str, Any]) -> dict[str, Any]:
    actor = raw.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    return {
        "time": raw.get("time"),
        "time_nano": raw.get("timeNano"),
        "type": _text(raw.get("Type"), 32),
        "action": _text(raw.get("Action") or raw.get("status"), 64),
        "id": _text(actor.get("ID") or raw.get("id"), 64),
        "name": _text(attrs.get("name"), 128),
        "attributes": _labels(attrs),
    }


def events_window(since: int | None, until: int | None) -> tuple[int, int]:
    """The window to ask for: until at most now, so that the engine ends the stream
    itself (an events call never turns into a follow); since an hour before by default."""
    now = int(time.time())
    until = now if until is None else min(until, now)
    since = until - 3600 if since is None else since
    if since > until:
        raise Refused("invalid", f"since ({since}) is after until ({until})")
    if until - since > MAX_EVENTS_WINDOW:
        raise Refused("invalid", f"since and until may be at most {MAX_EVENTS_WINDOW} s apart")
    return since, until


def _events(client: Any, since: int, until: int, limit: int) -> dict[str, Any]:
    """The events between since and until, both inclusive, the newest ``limit`` kept."""
    kept: list[dict[str, Any]] = []
    total = 0
    # Both ends inclusive, to the second. Podman leaves out the events of until's own
    # second, so the engine is asked up to the next one (a wait of at most a second
    # when until is now) and the later events are dropped here.
    stream = client.events(since=since, until=until + 1, decode=True)
    try:
        for raw in stream:
            if isinstance(raw.get("time"), int) and raw["time"] > until:
                continue
            total += 1
            kept.append(_event(raw))
            if len(kept) > limit:
                kept.pop(0)  # keep the newest
    finally:
        stream.close()
    items, cut = _fit(kept)
    return {"events": items, "since": since, "until": until,
            "truncated": cut or total > limit}


def _networks(client: Any) -> dict[str, Any]:
    out = []
    for raw in client.api.networks()[:MAX_CONTAINERS]:
        ipam = (raw.get("IPAM") or {}).get("Config") or []
        out.append({
            "id": _text(raw.get("Id"), 64),
            "name": _text(raw.get("Name"), 128),
            "driver": _text(raw.get("Driver"), 64),
            "scope": _text(raw.get("Scope"), 32),
            "internal": bool(raw.get("Internal")),
            "subnets": [{"subnet": _text(c.get("Subnet"), 64),
                         "gateway": _text(c.get("Gateway"), 64)}
                        for c in ipam[:16] if isinstance(c, dict)],
            "containers": len(raw.get("Containers") or {}),
            "labels": _labels(raw.get("Labels")),
        })
    items, cut = _fit(out)
    return {"networks": items, "truncated": cut}


def _volumes(client: Any) -> dict[str, Any]:
    raw = client.api.volumes() or {}
    out = [{
        "name": _text(v.get("Name")),
        "driver": _text(v.get("Driver"), 64),
        "mountpoint": _text(v.get("Mountpoint"), 1024),
        "scope": _text(v.get("Scope"), 32),
        "created": _text(v.get("CreatedAt"), 64),
        "labels": _labels(v.get("Labels")),
    } for v in (raw.get("Volumes") or [])[:MAX_CONTAINERS]]
    items, cut = _fit(out)
    return {"volumes": items, "truncated": cut}


def _act(client: Any, container: str, action: str, timeout: int, force: bool) -> dict[str, Any]:
    api = client.api
    cid: str = api.inspect_container(container)["Id"]  # not found: before we act
    if action == "start":
        api.start(cid)
    elif action == "stop":
        api.stop(cid, timeout=timeout)
    elif action == "restart":
        api.restart(cid, timeout=timeout)
    elif action == "pause":
        api.pause(cid)
    elif action == "unpause":
        api.unpause(cid)
    elif action == "remove":
        api.remove_container(cid, force=force)
        return {"id": cid, "action": action, "state": "removed"}
    state = api.inspect_container(cid).get("State") or {}
    return {"id": cid, "action": action, "state": _text(state.get("Status"), 32)}


# -- handlers ---------------------------------------------------------------------


async def info(call: Call) -> dict[str, Any]:
    return await _engine(call, "docker info", _info)


async def containers(call: Call) -> dict[str, Any]:
    return await _engine(call, "the container list",
                         lambda c: _list_containers(c, call.args["all"]))


async def stats(call: Call) -> dict[str, Any]:
    name = call.args["container"]
    return await _engine(call, f"container {name}" if name else "container stats",
                         lambda c: _stats(c, name))


async def events(call: Call) -> dict[str, Any]:
    since, until = events_window(call.args["since"], call.args["until"])
    return await _engine(call, "the event list",
                         lambda c: _events(c, since, until, call.args["limit"]))


async def networks(call: Call) -> dict[str, Any]:
    return await _engine(call, "the network list", _networks)


async def volumes(call: Call) -> dict[str, Any]:
    return await _engine(call, "the volume list", _volumes)


async def action(call: Call) -> dict[str, Any]:
    a = call.args
    log.info("docker %s %s", a["action"], a["container"])
    return await _engine(call, f"container {a['container']}",
                         lambda c: _act(c, a["container"], a["action"], a["timeout"],
                                        a["force"]))


async def logs(call: Call) -> dict[str, Any]:
    """Stream a container's logs: the SDK's generator is read in a thread of its own
    (not the shared pool: a follow lasts as long as the browser watches), chunks come
    back through a bounded buffer and leave as data frames of up to ``CHUNK`` bytes."""
    a = call.args
    what = f"container {a['container']}"
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes | Exception | None] = asyncio.Queue()
    room = threading.Semaphore(LOG_BUFFER)
    stop = threading.Event()
    ended = asyncio.Event()

    def open_stream(client: Any) -> Any:
        client.api.inspect_container(a["container"])  # not found: a clear refusal first
        return client.api.logs(a["container"], stream=True, follow=a["follow"],
                               tail=a["tail"], timestamps=a["timestamps"],
                               stdout=True, stderr=True)

    def hand(item: bytes | Exception | None) -> None:
        try:
            loop.call_soon_threadsafe(chunks.put_nowait, item)
        except RuntimeError:  # the loop is gone: the agent is stopping
            stop.set()

    def pump(stream: Any) -> None:
        try:
            for piece in stream:
                while not room.acquire(timeout=0.5):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                hand(bytes(piece))
            hand(None)
        except Exception as exc:  # the engine went away mid-stream
            if not stop.is_set():
                hand(exc)
        finally:
            _close_stream(stream)
            log.debug("the log reader of %s ended", what)
            with contextlib.suppress(RuntimeError):  # the loop is gone
                loop.call_soon_threadsafe(ended.set)

    stream = await _engine(call, what, open_stream)
    threading.Thread(target=pump, args=(stream,), name="docker-logs", daemon=True).start()
    sent = 0
    try:
        while True:
            item = await chunks.get()
            room.release()
            if isinstance(item, Exception):
                raise _refusal(call.config.docker, item, what)
            if item is None:
                break
            buf = bytearray(item)
            while len(buf) < CHUNK and not chunks.empty():  # coalesce what is waiting
                more = chunks.get_nowait()
                room.release()
                if not isinstance(more, bytes):
                    chunks.put_nowait(more)  # seen on the next turn
                    room.acquire(blocking=False)
                    break
                buf += more
            await call.send(bytes(buf))
            sent += len(buf)
        return {"bytes": sent}
    finally:
        stop.set()
        _close_stream(stream)  # ends the thread's blocking read
        try:
            await asyncio.wait_for(ended.wait(), 2.0)
        except (TimeoutError, asyncio.CancelledError):
            log.debug("the log reader thread did not end within 2 s")


def _close_stream(stream: Any) -> None:
    """End a blocking log read, from any thread: the SDK's ``CancellableStream.close``
    shuts the response's socket down, so the reading thread's recv returns."""
    try:
        stream.close()
    except Exception as exc:  # already closed
        log.debug("closing a log stream: %s", exc)


HANDLERS = {
    "docker.info": info,
    "docker.containers": containers,
    "docker.stats": stats,
    "docker.events": events,
    "docker.networks": networks,
    "docker.volumes": volumes,
    "docker.action": action,
    "docker.logs": logs,
}

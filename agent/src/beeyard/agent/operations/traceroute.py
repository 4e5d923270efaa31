"""traceroute.run: the path to a target, in Python, without root or a system binary.

The tracepath technique: one connected UDP socket per hop with ``IP_RECVERR``
(``IPV6_RECVERR``) on, its hop limit set to the hop's number, one datagram sent to
an unlikely port. A router where the hop limit runs out answers ICMP *time
exceeded*; the target answers *port unreachable*. The kernel queues either answer
on the socket's error queue with the address of the node that sent it, which
``recvmsg(MSG_ERRQUEUE)`` reads: unprivileged, unlike the raw ICMP socket classic
traceroute needs. IPv4 and IPv6 alike.

Blocking work (name resolution, waiting for answers) runs in a worker thread; a
cancelled call sets a flag the thread checks between probes, so it ends within one
probe timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import select
import socket
import struct
import threading
import time
from typing import Any

from beeyard.agent.operations import Call, Refused

BASE_PORT = 33434  # traceroute's customary first port; the hop number is added
PAYLOAD = b"beeyard-traceroute"

# linux/in.h, linux/in6.h, linux/errqueue.h: not all in Python's socket module
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
SO_EE_ORIGIN_LOCAL = 1
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # ee_errno, origin, type, code, pad, info, data

# ICMP answers meaning "the target itself answered" (it has no listener on the port)
_REACHED = {(SO_EE_ORIGIN_ICMP, 3, 3), (SO_EE_ORIGIN_ICMP6, 1, 4)}
# ICMP answers meaning "a router on the way"
_TIME_EXCEEDED = {(SO_EE_ORIGIN_ICMP, 11), (SO_EE_ORIGIN_ICMP6, 3)}


def resolve(target: str) -> tuple[int, str]:
    """(address family, address) of the target: an IP literal as it is, else the first
    address the host's resolver gives."""
    try:
        ip = ipaddress.ip_address(target)
    except ValueError:
        pass
    else:
        return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), str(ip)
    try:
        infos = socket.getaddrinfo(target, None, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise Refused("not_found", f"cannot resolve {target!r}: {exc.strerror}") from None
    for family, _, _, _, addr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            return family, str(addr[0])
    raise Refused("not_found", f"{target!r} has no IPv4 or IPv6 address")


def _offender(family: int, cmsg_data: bytes) -> str | None:
    """The address in the ``sock_extended_err``'s trailing sockaddr (SO_EE_OFFENDER)."""
    raw = cmsg_data[_EXTENDED_ERR.size:]
    if family == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if family == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return None


def probe(family: int, address: str, ttl: int, timeout: float) -> dict[str, Any]:
    """One probe with hop limit ``ttl``: who answered, how fast, and whether that was
    the target."""
    hop: dict[str, Any] = {"ttl": ttl, "address": None, "rtt_ms": None, "reached": False}
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        sock.setblocking(False)
        port = BASE_PORT + ttl
        sock.connect((address, port))
        sent = time.monotonic()
        try:
            sock.send(PAYLOAD)
        except OSError as exc:  # e.g. no route: the host itself refuses
            hop["error"] = exc.strerror or str(exc)
            return hop
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLERR)
        deadline = sent + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not poller.poll(left * 1000):
                break
            answer = _read_error(sock, family)  # the ICMP answer, queued by IP_RECVERR
            if answer is not None:
                origin, icmp_type, icmp_code, who, err = answer
                if origin == SO_EE_ORIGIN_LOCAL:
                    hop["error"] = errno.errorcode.get(err, str(err))
                    return hop
                hop["address"] = who
                hop["rtt_ms"] = round((time.monotonic() - sent) * 1000, 3)
                hop["reached"] = (origin, icmp_type, icmp_code) in _REACHED or who == address
                if (origin, icmp_type) not in _TIME_EXCEEDED and not hop["reached"]:
                    hop["icmp"] = {"type": icmp_type, "code": icmp_code}
                return hop
            try:
                sock.recv(512)  # data: something listens on the port, the target answered
            except OSError:
                continue  # no data (or the socket's pending error, now cleared)
            hop["address"] = address
            hop["rtt_ms"] = round((time.monotonic() - sent) * 1000, 3)
            hop["reached"] = True
            return hop
    return hop


def _read_error(sock: socket.socket, family: int) -> tuple[int, int, int, str | None, int] | None:
    try:
        _, ancdata, _, _ = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
    except BlockingIOError:
        return None
    for level, kind, data in ancdata:
        if (level, kind) in ((socket.IPPROTO_IP, IP_RECVERR),
                             (socket.IPPROTO_IPV6, IPV6_RECVERR)):
            err, origin, icmp_type, icmp_code, _, _, _ = _EXTENDED_ERR.unpack_from(data)
            return origin, icmp_type, icmp_code, _offender(family, data), err
    return None


def trace(target: str, max_hops: int, timeout: float, stop: threading.Event) -> dict[str, Any]:
    """Probe hop after hop until the target answers, ``max_hops`` runs out, or ``stop``."""
    family, address = resolve(target)
    hops: list[dict[str, Any]] = []
    reached = False
    for ttl in range(1, max_hops + 1):
        if stop.is_set():
            break
        hop = probe(family, address, ttl, timeout)
        hops.append(hop)
        if hop["reached"]:
            reached = True
            break
        if "error" in hop and hop["address"] is None and ttl == 1:
            break  # the host cannot send at all (no route): more hops will not help
    return {"target": target, "address": address,
            "family": "ipv6" if family == socket.AF_INET6 else "ipv4",
            "hops": hops, "reached": reached}


MAX_RUNNING = 4  # traceroutes at once on this host; beyond, the agent answers busy
_running = 0  # trace threads alive: a cancelled call's thread counts until it has ended
_running_lock = threading.Lock()


async def run(call: Call) -> dict[str, Any]:
    """Trace in a thread of its own (a trace of silent hops lasts minutes: it must not
    hold one of the few workers of the shared pool that file and Docker calls use)."""
    global _running
    with _running_lock:
        if _running >= MAX_RUNNING:
            raise Refused("busy", f"this host is already running {MAX_RUNNING} traceroutes "
                                  f"(a cancelled one ends after its current probe)")
        _running += 1
    a = call.args
    loop = asyncio.get_running_loop()
    done: asyncio.Future[dict[str, Any]] = loop.create_future()
    stop = threading.Event()

    def settle(result: dict[str, Any] | None, exc: BaseException | None) -> None:
        if done.done():
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            assert result is not None
            done.set_result(result)

    def release() -> None:
        global _running
        with _running_lock:
            _running -= 1

    def work() -> None:
        try:
            result = trace(a["target"], a["max_hops"], a["timeout"], stop)
        except BaseException as exc:  # handed to the call, which answers with it
            outcome: tuple[dict[str, Any] | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        finally:
            release()  # the slot is the thread's, not the call's
        with contextlib.suppress(RuntimeError):  # the loop is gone: the agent is stopping
            loop.call_soon_threadsafe(settle, *outcome)

    try:
        threading.Thread(target=work, name="traceroute", daemon=True).start()
    except BaseException:
        release()
        raise
    try:
        return await done
    finally:
        stop.set()  # a cancelled call: the thread ends after its current probe


HANDLERS = {"traceroute.run": run}

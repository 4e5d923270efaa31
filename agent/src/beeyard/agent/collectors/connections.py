"""TCP and UDP socket counts from /proc/net/sockstat and sockstat6.

The obvious source, counting the lines of /proc/net/tcp, makes the kernel
walk and format every socket: 4.5 ms for 56 sockets measured here, against
0.03 ms for the two sockstat files, whose counters the kernel keeps anyway.
The counts mean the same thing as those line counts: TCP is sockets in use
(listening and connected, IPv4 and IPv6) plus TIME-WAIT; UDP is sockets in
use. Line counting remains as the fallback where sockstat cannot be read.
Both are per network namespace, like everything under /proc/net.
"""

from __future__ import annotations

from typing import Any, ClassVar

from beeyard.agent.procfs import ProcFile, read_bytes

# (needle, index into [tcp, udp]); "\nUDP:" so that "UDPLITE:" does not match, and
# " tw " (TIME-WAIT) appears on the TCP line only
_NEEDLES = ((b"\nTCP: inuse ", 0), (b"\nTCP6: inuse ", 0), (b" tw ", 0),
            (b"\nUDP: inuse ", 1), (b"\nUDP6: inuse ", 1))


def parse_sockstat(data: bytes) -> dict[str, int]:
    """{"tcp": n, "udp": n} from sockstat and sockstat6 (concatenated).
    Five ``find`` calls: cheaper than a multi-line regular expression."""
    data = b"\n" + data
    counts = [0, 0]
    for needle, which in _NEEDLES:
        start = data.find(needle)
        if start >= 0:
            start += len(needle)
            counts[which] += int(data[start:start + 24].split(None, 1)[0])
    return {"tcp": counts[0], "udp": counts[1]}


def count_lines(*paths: str) -> int:
    """Entries in /proc/net/{tcp,udp}[6]-style tables (header line excluded)."""
    total = 0
    for path in paths:
        data = read_bytes(path)
        if data:
            total += max(0, data.count(b"\n") - 1)
    return total


class ConnectionsCollector:
    name = "connections"
    fallback: ClassVar[dict[str, Any]] = {"connections": {"tcp": 0, "udp": 0}}

    def __init__(self, proc_net: str = "/proc/net") -> None:
        self._v4 = ProcFile(f"{proc_net}/sockstat")
        self._v6 = ProcFile(f"{proc_net}/sockstat6")
        self._proc_net = proc_net

    def collect(self, metrics: dict[str, Any], now: float) -> None:
        v4 = self._v4.read()
        if v4 is not None:
            counts = parse_sockstat(v4 + (self._v6.read() or b""))
        else:
            p = self._proc_net
            counts = {"tcp": count_lines(f"{p}/tcp", f"{p}/tcp6"),
                      "udp": count_lines(f"{p}/udp", f"{p}/udp6")}
        metrics["connections"] = counts

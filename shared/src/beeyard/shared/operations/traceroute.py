"""Traceroute from a host to a target (capability ``traceroute``).

The agent sends UDP probes with increasing hop limits and reads the ICMP answers
from the socket's error queue (the tracepath technique): no root, no raw socket,
no system binary. The target is a hostname or an IP literal, resolved on the host.
"""

from __future__ import annotations

from beeyard.shared.operations import Operation, declare
from beeyard.shared.schema import Field, Schema

TARGET_PATTERN = r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|[0-9A-Fa-f:.]{2,45}"
"""A hostname (letters, digits, dots, hyphens) or an IPv4 / IPv6 literal."""

MAX_HOPS = 64
MAX_PROBE_TIMEOUT = 5.0

RUN = declare(Operation(
    "traceroute.run", "traceroute", Schema("TracerouteArgs", (
        Field("target", "str", min=1, max=253, pattern=TARGET_PATTERN,
              doc="hostname or IP address, resolved on the host"),
        Field("max_hops", "int", required=False, min=1, max=MAX_HOPS, default=30),
        Field("timeout", "float", required=False, min=0.05, max=MAX_PROBE_TIMEOUT, default=1.0,
              doc="seconds to wait for each probe's answer"),
    )),
    timeout=MAX_HOPS * MAX_PROBE_TIMEOUT + 30,
    doc="the hops from this host to the target: address and round trip of each, and "
        "whether the target was reached",
))

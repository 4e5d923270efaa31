"""Every frame type of the agent link, declared once.

Direction is in each docstring: A→S (agent to server), S→A, or both. Bounds are
generous for real hosts (a machine with 4,096 cores or 1,024 mounts still fits)
and tight enough that a hostile peer cannot make the other side allocate much.

Metrics travel in two streams (see DESIGN.md): ``sample`` every interval, kept
only in the server's memory, and ``summary`` once a minute, acknowledged by
``ack`` only after it is committed, and spooled on the agent until then.
"""

from __future__ import annotations

from beeyard.shared.schema import Field, Schema
from beeyard.shared.wire import declare

_NAME = 255  # interface, device, mount and label names
_BIG = 2.0**64  # byte counters and sizes
_RATE = 2.0**50  # bytes per second: ~1 PB/s is a safe ceiling


def _num(name: str, *, max: float = _BIG, required: bool = True, doc: str = "") -> Field:
    return Field(name, "float", required=required, min=0, max=max, doc=doc)


def _pct(name: str, *, required: bool = True) -> Field:
    return Field(name, "float", required=required, min=0, max=100)


def _count(name: str, *, required: bool = True) -> Field:
    return Field(name, "int", required=required, min=0, max=2**53)


def _text(name: str, *, max: int = _NAME, required: bool = True, nullable: bool = False) -> Field:
    return Field(name, "str", required=required, nullable=nullable, max=max)


def _rows(name: str, schema: Schema, max: int) -> Field:
    item = Field("item", "map", schema=schema)
    return Field(name, "list", required=False, max=max, items=item, default=[])


# -- link ----------------------------------------------------------------------

HOST = Schema("Host", (
    _text("hostname"),
    _text("os"),
    _text("kernel"),
    _text("arch", max=64),
    _text("cpu_model", required=False, nullable=True),
    Field("cores", "int", min=1, max=65536),
    Field("physical_cores", "int", required=False, nullable=True, min=1, max=65536),
    _text("virtualization", max=64, required=False, nullable=True),
    Field("boot_time", "float", min=0),
    Field("addresses", "list", required=False, max=1024, items=Field("address", "str", max=64),
          default=[]),
))

CAPABILITIES = ("terminal", "exec", "files", "docker_read", "docker_control", "traceroute")

HELLO = declare(Schema("hello", (
    _text("protocol", max=16),
    _text("agent_version", max=64),
    Field("host", "map", schema=HOST),
    Field("capabilities", "list", required=False, max=len(CAPABILITIES), default=[],
          items=Field("capability", "str", choices=CAPABILITIES)),
    Field("interval", "float", min=1, max=60, doc="seconds between live samples"),
), doc="A→S, first frame: who I am, what I allow. Answered by welcome or bye."))

CAPABILITIES_CHANGED = declare(Schema("capabilities", (
    Field("capabilities", "list", max=len(CAPABILITIES),
          items=Field("capability", "str", choices=CAPABILITIES)),
), doc="A→S whenever the set the agent allows changes after hello (a local grant given, "
       "revoked or expired): the whole new set."))

WELCOME = declare(Schema("welcome", (
    Field("server_id", "int", min=1, max=2**63 - 1),
    _text("protocol", max=16),
    Field("heartbeat", "float", min=1, max=300, doc="seconds between pings each way"),
), doc="S→A: accepted; the agent starts streaming."))

PING = declare(Schema("ping", (
    Field("ts", "float", min=0),
), doc="both ways, every heartbeat interval; the peer answers pong with the same ts."))

PONG = declare(Schema("pong", (
    Field("ts", "float", min=0),
), doc="both ways: the answer to ping."))

BYE = declare(Schema("bye", (
    Field("code", "str", max=32, choices=(
        "revoked", "unknown_token", "incompatible", "replaced", "shutdown", "invalid_frame",
    )),
    _text("reason", max=1024),
    Field("retry", "bool", doc="false: the agent must stop reconnecting and say why"),
), doc="either way, last frame before closing, with a reason the peer logs."))

ROTATE_TOKEN = declare(Schema("rotate_token", (
    Field("token", "str", min=32, max=128),
), doc="S→A (with an id): store this run token atomically, then answer token_stored."))

TOKEN_STORED = declare(Schema("token_stored", (), doc="A→S (same id): the new token is on disk."))

# -- metrics -------------------------------------------------------------------

MEMORY = Schema("Memory", (_num("total"), _num("used"), _num("available"), _pct("percent")))
SWAP = Schema("Swap", (_num("total"), _num("used"), _pct("percent")))
FILESYSTEM = Schema("Filesystem", (
    _text("mount", max=4096), _text("type", max=64), _text("device", max=4096),
    _num("size"), _num("used"), _num("free"), _pct("percent"),
    _count("inodes", required=False), _count("inodes_used", required=False),
))
DISK = Schema("DiskIO", (
    _text("device"), _num("read_bps", max=_RATE), _num("write_bps", max=_RATE),
    _num("read_iops", max=_RATE), _num("write_iops", max=_RATE),
))
NET = Schema("NetIO", (
    _text("iface"), _num("rx_bps", max=_RATE), _num("tx_bps", max=_RATE),
    _num("rx_bytes"), _num("tx_bytes"),
))
NET_TOTAL = Schema("NetTotal", (
    _num("rx_bps", max=_RATE), _num("tx_bps", max=_RATE), _num("rx_bytes"), _num("tx_bytes"),
))
CONNECTIONS = Schema("Connections", (_count("tcp"), _count("udp")))
TEMPERATURE = Schema("Temperature", (
    _text("label"), Field("celsius", "float", min=-273.15, max=1000),
))
GPU = Schema("Gpu", (
    Field("index", "int", min=0, max=1024), _text("name"),
    _pct("utilization"), _num("memory_used"), _num("memory_total"),
    Field("temperature", "float", required=False, nullable=True, min=-273.15, max=1000),
))

METRICS = Schema("Metrics", (
    _pct("cpu"),
    Field("cpu_cores", "list", required=False, max=65536, default=[],
          items=Field("core", "float", min=0, max=100)),
    Field("load", "list", min=3, max=3, items=Field("load", "float", min=0, max=1e6)),
    Field("memory", "map", schema=MEMORY),
    Field("swap", "map", schema=SWAP),
    _rows("filesystems", FILESYSTEM, 1024),
    _rows("disks", DISK, 1024),
    _rows("net", NET, 1024),
    Field("net_total", "map", schema=NET_TOTAL),
    Field("connections", "map", schema=CONNECTIONS),
    _count("processes"),
    _num("uptime"),
    _rows("temperatures", TEMPERATURE, 256),
    _rows("gpus", GPU, 64),
), doc="One reading of the host. Rates are per second over the last interval.")

SAMPLE = declare(Schema("sample", (
    Field("ts", "float", min=0, doc="unix time the reading was taken"),
    Field("metrics", "map", schema=METRICS),
), doc="A→S every interval: the live stream, kept in the server's memory only."))

SUMMARY_NAMES = (
    "cpu", "load1", "load5", "load15", "memory_used", "memory_percent", "swap_used",
    "disk_used_percent", "disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps",
    "tcp", "udp", "processes", "temperature_max", "gpu_utilization", "gpu_memory_used",
)
"""Scalars a summary carries: each as [avg, min, max] over the minute."""

AGGREGATES = Schema("Aggregates", tuple(
    Field(name, "list", required=False, nullable=True, min=3, max=3,
          items=Field("value", "float", min=-1e18, max=1e18), doc="[avg, min, max]")
    for name in SUMMARY_NAMES
))

SUMMARY = declare(Schema("summary", (
    Field("minute", "int", min=0, max=2**40, doc="unix time of the minute's start, seconds"),
    Field("samples", "int", min=1, max=3600),
    Field("values", "map", schema=AGGREGATES),
    _num("net_rx_bytes", required=False, doc="bytes received during the minute"),
    _num("net_tx_bytes", required=False, doc="bytes sent during the minute"),
), doc="A→S once a minute, also replayed from the spool; the server acks after commit."))

ACK = declare(Schema("ack", (
    Field("minutes", "list", min=1, max=1440, items=Field("minute", "int", min=0, max=2**40)),
), doc="S→A: these summaries are committed; the agent drops them from its spool."))

# -- operations ------------------------------------------------------------------
# Work the server asks of the agent (files, terminal, Docker, commands) travels as
# one *call* per request: ``request`` opens it under a frame id, ``data`` carries its
# bytes either way, ``credit`` paces them, ``signal`` and ``cancel`` steer it, and one
# ``reply`` ends it. What each operation takes is declared in
# ``beeyard.shared.operations``; the agent checks it there, against its own policy.

ERRORS = (
    "denied", "not_found", "invalid", "exists", "too_large", "unavailable", "busy",
    "failed", "timeout", "cancelled", "unknown_op",
)
"""Why a call failed, in the agent's ``reply``; the server maps each to an HTTP status."""

CHUNK = 256 * 1024
"""Largest ``data`` payload: big enough for 100 MB/s at a few hundred frames a second,
small enough that a terminal keystroke never waits long behind a file chunk."""

INPUT_WINDOW = 4 * CHUNK
"""Bytes the server may send into a call (``data`` S→A) before the agent grants more
with ``credit``: a client uploading faster than the disk takes it waits, the agent
never buffers more than this per call."""

REQUEST = declare(Schema("request", (
    Field("op", "str", min=1, max=64, pattern=r"[a-z_]+\.[a-z_]+"),
    Field("args", "map", max=64, default={}, required=False),
    Field("window", "int", required=False, min=0, max=64 * 1024 * 1024, default=0,
          doc="bytes of data the agent may send before it must wait for credit"),
), doc="S→A (with an id): run operation ``op``; answered by one reply with the same id."))

REPLY = declare(Schema("reply", (
    Field("ok", "bool"),
    Field("result", "map", required=False, nullable=True, max=4096),
    Field("error", "str", required=False, nullable=True, choices=ERRORS),
    _text("reason", max=2048, required=False, nullable=True),
), doc="A→S (same id): the call is over; ok with a result, or an error code and a reason "
       "a person can act on (a denied call says which capability or rule refused it)."))

DATA = declare(Schema("data", (
    Field("data", "bin", max=CHUNK),
    Field("eof", "bool", required=False, default=False, doc="the sender has no more data"),
), doc="both ways (with the call's id): bytes of a stream: terminal output and keys, "
       "a file's content, log lines, a command's output."))

CREDIT = declare(Schema("credit", (
    Field("bytes", "int", min=1, max=64 * 1024 * 1024),
), doc="both ways (with the call's id): the receiver consumed this many bytes; the sender "
       "may send as many more."))

SIGNAL = declare(Schema("signal", (
    Field("name", "str", min=1, max=32, pattern=r"[a-z_]+"),
    Field("args", "map", max=16, default={}, required=False),
), doc="S→A (with the call's id): steer a running call, e.g. resize a terminal."))

CANCEL = declare(Schema("cancel", (
    _text("reason", max=256, required=False, nullable=True),
), doc="S→A (with the call's id): stop the call (the browser went away, a user cancelled); "
       "the agent ends it, killing what it started, and replies cancelled."))

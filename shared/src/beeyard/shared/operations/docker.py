"""Docker operations: what the server may ask of a host's Docker engine.

Reading (containers, stats, info, events, networks, volumes, logs) needs
``docker_read``; changing a container's state needs ``docker_control``, a
separate capability, so a host can show its containers without letting anyone
stop them. The agent talks to the engine through the Docker API socket named
in its own config (``[docker] url``, podman's works too); nothing here names a
socket or a host, so the server cannot point the agent anywhere else.

A container is named by its id (or an id prefix) or its name: the pattern is
Docker's own name rule, which also keeps ``/``, ``..`` and blanks out of the
engine's URL paths.
"""

from __future__ import annotations

from beeyard.shared.operations import Operation, declare
from beeyard.shared.schema import Field, Schema

CONTAINER_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
"""A container id, id prefix or name (Docker's name rule: ``[a-zA-Z0-9][a-zA-Z0-9_.-]+``)."""

ACTIONS = ("start", "stop", "restart", "pause", "unpause", "remove")

MAX_CONTAINERS = 1000  # listed per call; beyond, the result says truncated
MAX_STATS = 100  # containers measured per stats call
MAX_EVENTS = 1000  # events per call; the newest are kept
MAX_EVENTS_WINDOW = 7 * 86400  # seconds an events query may span

_CONTAINER = Field("container", "str", min=1, max=128, pattern=CONTAINER_PATTERN,
                   doc="container id, id prefix or name")
_NO_ARGS = Schema("DockerNoArgs", ())

INFO = declare(Operation(
    "docker.info", "docker_read", _NO_ARGS, timeout=30.0,
    doc="the engine: version, counts of containers and images, OS, cgroups",
))

CONTAINERS = declare(Operation(
    "docker.containers", "docker_read", Schema("DockerContainersArgs", (
        Field("all", "bool", required=False, default=True,
              doc="include stopped containers (default true)"),
    )),
    doc="the containers: id, name, image, state, status, created, ports, labels",
))

STATS = declare(Operation(
    "docker.stats", "docker_read", Schema("DockerStatsArgs", (
        Field("container", "str", required=False, min=1, max=128,
              pattern=CONTAINER_PATTERN, doc="one container; default: every running one"),
    )),
    timeout=60.0,
    doc="one reading per running container: CPU %, memory, network and block IO, pids",
))

EVENTS = declare(Operation(
    "docker.events", "docker_read", Schema("DockerEventsArgs", (
        Field("since", "int", required=False, min=0, max=2**40,
              doc="unix seconds; default: an hour before until"),
        Field("until", "int", required=False, min=0, max=2**40,
              doc="unix seconds; default and at most: now (never a follow)"),
        Field("limit", "int", required=False, min=1, max=MAX_EVENTS, default=200,
              doc="at most this many events, the newest"),
    )),
    timeout=30.0,
    doc="the engine's recent events between since and until, oldest first",
))

NETWORKS = declare(Operation(
    "docker.networks", "docker_read", _NO_ARGS,
    doc="the networks: id, name, driver, scope, subnets, attached containers",
))

VOLUMES = declare(Operation(
    "docker.volumes", "docker_read", _NO_ARGS,
    doc="the volumes: name, driver, mountpoint, created",
))

ACTION = declare(Operation(
    "docker.action", "docker_control", Schema("DockerActionArgs", (
        _CONTAINER,
        Field("action", "str", choices=ACTIONS),
        Field("timeout", "int", required=False, min=0, max=600, default=10,
              doc="stop and restart: seconds before the engine kills the container"),
        Field("force", "bool", required=False, default=False,
              doc="remove: also a running container"),
    )),
    timeout=660.0,
    doc="start, stop, restart, pause, unpause or remove a container; answers its new state",
))

LOGS = declare(Operation(
    "docker.logs", "docker_read", Schema("DockerLogsArgs", (
        _CONTAINER,
        Field("tail", "int", required=False, min=0, max=100_000, default=100,
              doc="the last N lines (0: none, only what follows)"),
        Field("follow", "bool", required=False, default=False,
              doc="keep streaming new output until cancelled or the container stops"),
        Field("timestamps", "bool", required=False, default=False,
              doc="prefix each line with its RFC 3339 time"),
    )),
    streams=True,
    doc="a container's stdout and stderr as a byte stream (data frames), then a reply "
        "with the byte count",
))

"""The agent link's codec: every frame round-trips, and no bytes can make decode
raise anything but WireError."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beeyard.shared import frames, native, wire
from beeyard.shared.native import plain
from beeyard.shared.wire import WireError

METRICS: dict[str, Any] = {
    "cpu": 12.5,
    "cpu_cores": [10.0, 15.0],
    "load": [0.1, 0.2, 0.3],
    "memory": {"total": 8e9, "used": 4e9, "available": 4e9, "percent": 50.0},
    "swap": {"total": 0.0, "used": 0.0, "percent": 0.0},
    "filesystems": [{"mount": "/", "type": "ext4", "device": "/dev/vda", "size": 1e11,
                     "used": 5e10, "free": 5e10, "percent": 50.0, "inodes": 10, "inodes_used": 5}],
    "disks": [{"device": "vda", "read_bps": 1.0, "write_bps": 2.0, "read_iops": 0.5,
               "write_iops": 0.25}],
    "net": [{"iface": "eth0", "rx_bps": 10.0, "tx_bps": 20.0, "rx_bytes": 1e6, "tx_bytes": 2e6}],
    "net_total": {"rx_bps": 10.0, "tx_bps": 20.0, "rx_bytes": 1e6, "tx_bytes": 2e6},
    "connections": {"tcp": 12, "udp": 3},
    "processes": 140,
    "uptime": 3600.0,
    "temperatures": [{"label": "cpu", "celsius": 45.0}],
    "gpus": [],
}

EXAMPLES: dict[str, dict[str, Any]] = {
    "hello": {
        "protocol": wire.PROTOCOL_VERSION, "agent_version": "0.1.0",
        "host": {"hostname": "web-1", "os": "Debian 12", "kernel": "6.1.0", "arch": "x86_64",
                 "cpu_model": "EPYC", "cores": 2, "boot_time": 1.7e9, "addresses": ["10.0.0.2"]},
        "capabilities": ["files"], "interval": 1.0,
    },
    "welcome": {"server_id": 7, "protocol": wire.PROTOCOL_VERSION, "heartbeat": 5.0},
    "ping": {"ts": 1.7e9},
    "pong": {"ts": 1.7e9},
    "bye": {"code": "revoked", "reason": "token revoked by an administrator", "retry": False},
    "rotate_token": {"token": "t" * 43},
    "token_stored": {},
    "capabilities": {"capabilities": ["files", "docker_read"]},
    "sample": {"ts": 1.7e9, "metrics": METRICS},
    "summary": {"minute": 1_700_000_040, "samples": 60, "values": {"cpu": [12.0, 1.0, 99.0]},
                "net_rx_bytes": 1e6},
    "ack": {"minutes": [1_700_000_040]},
    "request": {"op": "files.list", "args": {"path": "/srv"}, "window": 2 * 1024 * 1024},
    "reply": {"ok": False, "error": "denied", "reason": "the files capability is off"},
    "data": {"data": b"\x00\xffbytes", "eof": True},
    "credit": {"bytes": 262144},
    "signal": {"name": "resize", "args": {"cols": 120, "rows": 40}},
    "cancel": {"reason": "the browser went away"},
}


def test_every_declared_frame_has_an_example() -> None:
    assert set(EXAMPLES) == set(wire.frame_types())


@pytest.mark.parametrize("frame_type", sorted(EXAMPLES))
def test_round_trip(frame_type: str) -> None:
    data = wire.encode(frame_type, EXAMPLES[frame_type], id=42)
    frame = wire.decode(data)
    assert frame.type == frame_type
    assert frame.id == 42
    again = wire.decode(wire.encode(frame_type, frame.body))
    assert again.body == frame.body


def test_errors_are_precise() -> None:
    def decoded(message: Any) -> str:
        with pytest.raises(WireError) as caught:
            wire.decode(msgpack.packb(message, use_bin_type=True))
        return str(caught.value)

    assert decoded([1, 2]) == "frame must be a map"
    assert decoded({"b": {}}) == "frame has no type"
    assert decoded({"t": "launch_missiles", "b": {}}) == "unknown frame type 'launch_missiles'"
    assert decoded({"t": "ping", "b": {}}) == "ping.ts: is required"
    assert decoded({"t": "ping", "b": {"ts": "now"}}) == "ping.ts: must be a number"
    assert decoded({"t": "ping", "id": -1, "b": {"ts": 1.0}}) == (
        "frame id must be a non-negative integer")
    bad_sample = {"ts": 1.0, "metrics": {**METRICS, "cpu": 101.0}}
    assert decoded({"t": "sample", "b": bad_sample}) == "sample.metrics.cpu: must be at most 100"
    with pytest.raises(WireError, match="exceeds"):
        wire.decode(b"\x00" * (wire.MAX_FRAME + 1))


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    message = {"t": "ping", "b": {"ts": 1.0, "added_in_1_1": True}}
    frame = wire.decode(msgpack.packb(message))
    assert frame.body == {"ts": 1.0}


def test_encode_refuses_what_decode_would() -> None:
    with pytest.raises(WireError, match=r"welcome\.heartbeat: must be at least 1"):
        wire.encode("welcome", {"server_id": 1, "protocol": "1.0", "heartbeat": 0})
    with pytest.raises(WireError, match="unknown frame type"):
        wire.encode("nope", {})


def test_protocol_compatibility() -> None:
    assert wire.compatible(wire.PROTOCOL_VERSION) is None
    assert wire.compatible("1.9") is None
    reason = wire.compatible("2.0")
    assert reason is not None and "incompatible" in reason
    assert "MAJOR.MINOR" in (wire.compatible("banana") or "")


@settings(max_examples=2000)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_wire_error(data: bytes) -> None:
    with contextlib.suppress(WireError):
        wire.decode(data)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats() | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=1000)
@given(st.sampled_from(sorted(EXAMPLES)), msgpack_values, st.one_of(st.none(), msgpack_values))
def test_well_formed_msgpack_with_wrong_bodies_raises_only_wire_error(
    frame_type: str, body: Any, frame_id: Any
) -> None:
    message = {"t": frame_type, "b": body}
    if frame_id is not None:
        message["id"] = frame_id
    try:
        frame = wire.decode(msgpack.packb(message, use_bin_type=True))
    except WireError:
        return
    assert frame.type == frame_type


def test_mutation_fuzz_of_valid_frames() -> None:
    """Flip, drop and insert bytes in real frames: decode either works or says why."""
    rng = random.Random(1234)
    seeds = [wire.encode(t, body) for t, body in EXAMPLES.items()]
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(20_000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data))
            op = rng.random()
            if op < 0.5:
                data[pos] = rng.randrange(256)
            elif op < 0.75:
                del data[pos]
            else:
                data.insert(pos, rng.randrange(256))
        try:
            wire.decode(bytes(data))
            outcomes["ok"] += 1
        except WireError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0
    assert sum(outcomes.values()) == 20_000


def test_every_frame_type_is_declared_in_frames_module() -> None:
    assert frames.HELLO.name == "hello"
    assert set(frames.SUMMARY_NAMES) == {f.name for f in frames.AGGREGATES.fields}


# -- the compiled decoder of hot frames (shared/native.py) --------------------------------


def _both(data: bytes) -> tuple[Any, Any]:
    """(compiled decoder alone, declarations' path): a Frame, or None / the error."""
    native = wire._native
    assert native is not None
    try:
        frame_type, body, frame_id = native(data)
        fast: Any = wire.Frame(frame_type, plain(body), frame_id)
    except Exception:
        fast = None
    wire._native = None
    try:
        slow: Any = wire.decode(data)
    except WireError as exc:
        slow = f"refused: {exc}"
    finally:
        wire._native = native
    return fast, slow


_ODD = [None, True, False, 0, -1, 1, 2**63, 2**64 - 1, -(2**63), 1.5, -0.0, float("nan"),
        float("inf"), "", "x" * 300, "a\x00b", "é", b"\x00", [], [1.0], {}, {"cpu": 1.0},
        1e19, -1e19]


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [path] + [p for k, v in value.items() for p in _leaves(v, (*path, k))]
    if isinstance(value, list):
        return [path] + [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))]
    return [path]


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


def test_compiled_decoder_agrees_with_the_declarations() -> None:
    """Every field of a sample and a summary replaced by odd values, dropped, or joined by
    an unknown one: whatever the compiled path accepts, the declarations accept with the
    same result, and it accepts the valid frames themselves."""
    wire.compile_hot_frames()
    rng = random.Random(99)
    bodies = {t: EXAMPLES[t] for t in native.HOT}
    bodies["sample"] = {**EXAMPLES["sample"], "metrics": {**METRICS, "gpus": [
        {"index": 0, "name": "A100", "utilization": 50.0, "memory_used": 1e9,
         "memory_total": 4e10, "temperature": 60.0}]}}
    for frame_type, body in bodies.items():
        fast, slow = _both(msgpack.packb({"t": frame_type, "b": body}))
        assert isinstance(fast, wire.Frame) and fast == slow
        decoded = wire.decode(msgpack.packb({"t": frame_type, "b": body}))
        if frame_type == "sample":  # metrics stay a record, read like the dict
            metrics = decoded.body["metrics"]
            assert metrics["cpu"] == metrics.get("cpu") == METRICS["cpu"]
            assert metrics.get("nothing") is None and metrics["gpus"][0]["name"] == "A100"
            with pytest.raises(KeyError):
                metrics["nothing"]
        paths = _leaves(body)
        agreed = refused = 0
        for _ in range(3000):
            path = rng.choice(paths)
            if path and rng.random() < 0.2 and isinstance(path[-1], str):  # drop a map key
                container = dict(_get(body, path[:-1]))
                del container[path[-1]]
                mutated = _replace(body, path[:-1], container)
            else:
                mutated = _replace(body, path, rng.choice(_ODD))
            if isinstance(mutated, dict) and rng.random() < 0.1:
                mutated = {**mutated, "unknown_field": 1}
            fast, slow = _both(msgpack.packb({"t": frame_type, "b": mutated}))
            if fast is not None:  # never accepts what the declarations refuse
                assert fast == slow, (path, mutated)
                agreed += 1
            else:  # declined: wire.decode then answers from the declarations
                refused += 1
        assert agreed > 20 and refused > 100


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


def test_absent_optional_fields_are_not_sent_but_open_maps_keep_their_nulls() -> None:
    data = wire.encode("reply", {"ok": True, "result": {"exit_code": None, "nested": {"a": None}},
                                 "error": None, "reason": None}, id=3)
    raw = msgpack.unpackb(data)
    assert raw["b"] == {"ok": True, "result": {"exit_code": None, "nested": {"a": None}}}
    assert wire.decode(data).body["result"] == {"exit_code": None, "nested": {"a": None}}
    hello = msgpack.unpackb(wire.encode("hello", {**EXAMPLES["hello"], "host": {
        **EXAMPLES["hello"]["host"], "cpu_model": None}}))
    assert "cpu_model" not in hello["b"]["host"]  # declared, optional: dropped


def test_record_scalars_equal_the_dict_scalars() -> None:
    """The server's attribute path (record_scalars, on the compiled decoder's records) and
    the dict path (scalars) give the same summary values for any valid sample."""
    from beeyard.shared.summaries import record_scalars, scalars

    wire.compile_hot_frames()
    rng = random.Random(7)

    def num(top: float = 1e12) -> float:
        return rng.choice([0.0, rng.random() * top, float(rng.randint(0, 10**6))])

    for _ in range(500):
        metrics: dict[str, Any] = {
            **METRICS, "cpu": rng.random() * 100,
            "load": [num(64), num(64), num(64)],
            "filesystems": [{**METRICS["filesystems"][0], "used": num(), "free": num()}
                            for _ in range(rng.randint(0, 4))],
            "disks": [{**METRICS["disks"][0], "read_bps": num(), "write_bps": num()}
                      for _ in range(rng.randint(0, 4))],
            "temperatures": [{"label": "t", "celsius": rng.uniform(-40, 120)}
                             for _ in range(rng.randint(0, 3))],
            "gpus": [{"index": i, "name": "g", "utilization": rng.random() * 100,
                      "memory_used": num(), "memory_total": 1e11}
                     for i in range(rng.randint(0, 3))],
            "processes": rng.randint(0, 10**5),
        }
        frame = wire.decode(wire.encode("sample", {"ts": 1.7e9, "metrics": metrics}))
        record = frame.body["metrics"]
        assert native.is_record(record)
        assert record_scalars(record) == scalars(plain(record)) == scalars(metrics)


def test_prepare_builds_the_checks_of_nested_maps_up_front() -> None:
    """wire.prepare compiles a frame type's checks now (the agent does it at start, so
    that its first summary a minute in does not pay the compile); checking is unchanged."""
    from beeyard.shared import frames
    from beeyard.shared.schema import Schema

    def nested(schema: Schema) -> list[Schema]:
        found = [schema]
        for f in schema.fields:
            for inner in (f.schema, f.items.schema if f.items is not None else None):
                if inner is not None:
                    found += nested(inner)
        return found

    schemas = nested(frames.SUMMARY) + nested(frames.SAMPLE)
    assert len(schemas) > 10
    for schema in schemas:  # as in a fresh process, whatever ran before in this one
        object.__setattr__(schema, "_fast_checks", None)
    wire.prepare("summary", "sample")
    assert all(s._fast_checks is not None for s in schemas)
    body = {"minute": 60, "samples": 3, "values": {"cpu": [1.0, 0.5, 2.0]}}
    assert wire.decode(wire.encode("summary", body)).body["values"]["cpu"] == [1.0, 0.5, 2.0]
    with pytest.raises(wire.WireError, match="samples"):
        wire.encode("summary", {**body, "samples": 0})

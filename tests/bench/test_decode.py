"""Cost of decoding one live sample on the agent link: the server's hot path.

Compared on the same run: the compiled decoder (msgspec, shared/native.py), the
declarations' own path (msgpack + the generated fast path), and msgpack's bare unpack
of the same bytes (the floor of the declarations' path).
"""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest
from tests.unit.test_wire import METRICS

from beeyard.shared import wire


def _per_call(fn: Any, arg: Any, n: int = 5000) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn(arg)
        best = min(best, (time.perf_counter() - start) / n)
    return best


@pytest.mark.bench
def test_sample_decode_cost() -> None:
    metrics = dict(METRICS)
    metrics["filesystems"] = METRICS["filesystems"] * 4
    metrics["net"] = METRICS["net"] * 3
    metrics["cpu_cores"] = [1.0] * 8
    data = wire.encode("sample", {"ts": 1.7e9, "metrics": metrics})
    wire.compile_hot_frames()
    native = wire._native
    assert native is not None, "msgspec is a server dependency"
    compiled = _per_call(wire.decode, data)
    wire._native = None
    try:
        declared = _per_call(wire.decode, data)
    finally:
        wire._native = native
    unpack = _per_call(lambda d: msgpack.unpackb(d, raw=False), data)
    print(f"\nsample of {len(data)} bytes: wire.decode compiled {compiled * 1e6:.1f} us, "
          f"declarations' path {declared * 1e6:.1f} us, msgpack.unpackb alone "
          f"{unpack * 1e6:.1f} us (best of 5 x 5000)")

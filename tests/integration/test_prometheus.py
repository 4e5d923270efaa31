"""Prometheus exposition: the latest live metrics in text format 0.0.4, parsed back."""

from __future__ import annotations

import re
import time
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient
from tests.conftest import Api
from tests.fleetdata import add_server, metrics

from beeyard.server import context
from beeyard.server.services import prometheus

Client = TestClient  # type: ignore[type-arg]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"({_NAME})(?:\{{(.*)\}})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse(text: str) -> dict[str, Any]:
    """A strict reader of the text format: families with HELP and TYPE before their
    samples, each family's samples together, label values unescaped."""
    assert text.endswith("\n")
    families: dict[str, dict[str, Any]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            assert name not in families, f"family {name} twice"
            families[name] = {"help": help_, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name == current and kind in ("gauge", "counter")
            families[name]["type"] = kind
        else:
            m = _SAMPLE.fullmatch(line)
            assert m, f"not a sample line: {line!r}"
            name, raw_labels, value = m.groups()
            assert name == current, f"{name} outside its family"
            labels: dict[str, str] = {}
            rest = raw_labels or ""
            while rest:
                lm = _LABEL.match(rest)
                assert lm, rest
                labels[lm[1]] = re.sub(r"\\(.)", lambda x: {"n": "\n"}.get(x[1], x[1]), lm[2])
                rest = rest[lm.end():]
            families[name]["samples"].append((labels, float(value)))
    return families


async def _scrape(client: Client, headers: dict[str, str]) -> tuple[int, str, str]:
    async with client.get("/api/metrics/prometheus", headers=headers) as resp:
        return resp.status, resp.headers["Content-Type"], await resp.text()


async def test_exposition_parses_back(
    api: Api, client: Client, db: asyncpg.Connection, new_api: Any
) -> None:
    await api.login()
    up = await add_server(db, 'db "primary"\\eu\nrack')
    down = await add_server(db, "idle")
    live = client.server.app[context.LIVE]
    live.mark_online(up)
    gpus = [{"index": 0, "name": "T4", "utilization": 55.5, "memory_used": 1024.0,
             "memory_total": 4096.0}]
    live.record_sample(up, time.time(), metrics(cpu=12.25, gpus=gpus))
    live.record_sample(down, time.time(), metrics(cpu=99.0))  # then it went away
    live.mark_online(down)
    live.mark_offline(down)
    status, body = await api.post("/api/auth/api-keys", {"name": "prom", "scope": "read"})
    key = body["data"]["key"]
    scraper = await new_api()

    status, ctype, text = await _scrape(scraper.client, {"Authorization": f"Bearer {key}"})
    assert status == 200
    assert ctype == prometheus.CONTENT_TYPE
    families = parse(text)
    online = {s[0]["server_id"]: s[1] for s in families["beeyard_server_online"]["samples"]}
    assert online == {str(up): 1.0, str(down): 0.0}
    # the offline server has no values (they would be stale), only its online state
    (labels, cpu), = families["beeyard_cpu_usage_percent"]["samples"]
    assert labels == {"server_id": str(up), "name": 'db "primary"\\eu\nrack'}
    assert cpu == 12.25
    assert families["beeyard_network_receive_bytes_total"]["type"] == "counter"
    (fs_labels, used), = families["beeyard_filesystem_used_bytes"]["samples"]
    assert fs_labels["mount"] == "/" and used == 40.0
    (gpu_labels, util), = families["beeyard_gpu_utilization_percent"]["samples"]
    assert gpu_labels["gpu"] == "0" and util == 55.5
    assert families["beeyard_load15"]["samples"][0][1] == 0.3
    assert families["beeyard_memory_total_bytes"]["samples"][0][1] == 8e9

    status, _, _ = await _scrape(scraper.client, {"X-API-Key": key})
    assert status == 200
    status, ctype, _ = await _scrape(scraper.client, {})
    assert status == 401 and ctype.startswith("application/json")


def test_escaping_and_values() -> None:
    assert prometheus.escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    text = prometheus.render([{"id": 1, "name": "x", "online": False, "last_seen": None,
                               "metrics": None}])
    families = parse(text)
    assert families["beeyard_server_online"]["samples"] == [
        ({"server_id": "1", "name": "x"}, 0.0)]
    assert families["beeyard_cpu_usage_percent"]["samples"] == []

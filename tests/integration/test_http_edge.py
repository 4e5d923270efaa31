"""Cross-cutting HTTP behaviour: JSON for every failure (never HTML, never a
traceback), request ids, security headers, and request bodies capped before they
are read, measured on a real server process."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from beeyard.server import context
from beeyard.server.app import create_app
from beeyard.server.auth.principal import Access
from beeyard.server.config import Settings
from beeyard.server.http.envelope import ok
from beeyard.server.http.routing import DEFAULT_MAX_BODY, install, route
from beeyard.shared.schema import Field, Schema
from serverproc import MB, PeakRss, ServerProcess, request, send_huge, start_server, stop_postgres

# -- in-process: an app with test-only routes ------------------------------------------

_ECHO = Schema("Echo", (
    Field("n", "int", required=False, min=0, max=1000),
    Field("x", "float", required=False),
    Field("s", "str", required=False, max=100),
    Field("tree", "any", required=False),
))


@route("POST", "/api/test/echo", Access.PUBLIC, "test.echo", body=_ECHO)
async def echo(request: web.Request) -> web.Response:
    """Test-only: returns the validated body."""
    return ok(context.body(request))


@route("GET", "/api/test/boom", Access.PUBLIC, "test.boom")
async def boom(request: web.Request) -> web.Response:
    """Test-only: a handler with a bug."""
    raise RuntimeError("secret internal detail /srv/beeyard/app.py line 42")


@pytest.fixture
async def edge(aiohttp_client: Any, settings: Settings) -> TestClient[Any, Any]:
    app = create_app(settings)
    install(app, [echo, boom])
    return await aiohttp_client(app)  # type: ignore[no-any-return]


async def expect_json_error(resp: Any, status: int) -> dict[str, Any]:
    raw = await resp.read()
    assert resp.status == status, raw
    assert resp.content_type == "application/json", raw
    body = json.loads(raw)
    assert isinstance(body.get("error"), str) and body["error"]
    text = raw.decode()
    assert "Traceback" not in text and "<html" not in text.lower()
    assert resp.headers["X-Request-Id"]
    return body  # type: ignore[no-any-return]


async def test_404_and_405_are_json_even_for_browsers(edge: TestClient[Any, Any]) -> None:
    for path in ("/api/nope", "/nope", "/api-docs/nope.json"):
        async with edge.get(path, headers={"Accept": "text/html"}) as resp:
            await expect_json_error(resp, 404)
    async with edge.put("/api/health") as resp:
        body = await expect_json_error(resp, 405)
        assert "PUT" in body["error"] and resp.headers["Allow"] == "GET"


async def test_413_by_content_length_before_reading(edge: TestClient[Any, Any]) -> None:
    payload = b"{" + b" " * DEFAULT_MAX_BODY + b"}"
    async with edge.post("/api/test/echo", data=payload,
                         headers={"Content-Type": "application/json"}) as resp:
        body = await expect_json_error(resp, 413)
        assert str(DEFAULT_MAX_BODY) in body["error"]


async def test_413_for_a_chunked_body_without_length(edge: TestClient[Any, Any]) -> None:
    async def chunks() -> Any:
        for _ in range(3):
            yield b" " * (MB // 2)

    async with edge.post("/api/test/echo", data=chunks(),
                         headers={"Content-Type": "application/json"}) as resp:
        await expect_json_error(resp, 413)


@pytest.mark.parametrize(
    ("payload", "ctype", "status", "needle"),
    [
        (b'{"n": 1,', "application/json", 400, "not valid JSON"),
        (b'{"s": "\xff\xfe"}', "application/json", 400, "not valid JSON"),
        (b"n=1", "application/x-www-form-urlencoded", 415, "application/json"),
        (b'{"n": 1}', "text/html", 415, "application/json"),
        (b"[1, 2]", "application/json", 422, "JSON object"),
        (b'"text"', "application/json", 422, "JSON object"),
        (b'{"n": "7"}', "application/json", 422, "n"),
        (b'{"n": 1001}', "application/json", 422, "n"),
        (b'{"n": 1.5}', "application/json", 422, "n"),
        (b'{"n": ' + b"9" * 5000 + b"}", "application/json", 400, "too long"),
        (b'{"n": 123456789012345678901234567890}', "application/json", 422, "n"),
        (b'{"x": 1e999}', "application/json", 422, "x: must be a finite number"),
        (b'{"x": NaN}', "application/json", 422, "x: must be a finite number"),
        (b'{"x": -Infinity}', "application/json", 422, "x: must be a finite number"),
        (b'{"tree": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json", 400,
         "nested"),
        (b'{"tree": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}", "application/json",
         400, "nested"),
    ],
    ids=["truncated", "invalid-utf8", "form", "html", "array", "string", "int-as-text",
         "int-too-big", "float-for-int", "5000-digits", "huge-int", "float-overflow", "nan",
         "infinity", "deep-arrays", "deep-objects"],
)
async def test_bad_bodies_get_a_precise_4xx(
    edge: TestClient[Any, Any], payload: bytes, ctype: str, status: int, needle: str
) -> None:
    async with edge.post("/api/test/echo", data=payload, headers={"Content-Type": ctype}) as resp:
        body = await expect_json_error(resp, status)
        assert needle in body["error"], body


async def test_good_body_passes(edge: TestClient[Any, Any]) -> None:
    async with edge.post("/api/test/echo", json={"n": 7, "s": "é", "extra": 1}) as resp:
        assert resp.status == 200
        assert (await resp.json())["data"] == {"n": 7, "x": None, "s": "é", "tree": None}


async def test_500_is_json_with_the_request_id_and_no_traceback(
    edge: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with edge.get("/api/test/boom", headers={"X-Request-Id": "trace-500"}) as resp:
        body = await expect_json_error(resp, 500)
        assert resp.headers["X-Request-Id"] == "trace-500"
        assert "trace-500" in body["error"]
        assert "secret internal detail" not in body["error"]
    # The detail goes to the server log, tagged with the same id.
    logged = [r for r in caplog.records if "trace-500" in r.getMessage()]
    assert logged and logged[0].exc_info is not None


async def test_request_id_on_every_kind_of_answer(edge: TestClient[Any, Any]) -> None:
    for method, path in (("GET", "/api/health"), ("GET", "/api/nope"), ("PUT", "/api/health"),
                         ("GET", "/api/auth/me"), ("GET", "/api/test/boom")):
        async with edge.request(method, path, headers={"X-Request-Id": "abc-123"}) as resp:
            assert resp.headers["X-Request-Id"] == "abc-123", (method, path)
        async with edge.request(method, path) as resp:
            generated = resp.headers["X-Request-Id"]
            assert len(generated) == 32 and int(generated, 16) >= 0
    too_long = "a" * 129
    async with edge.get("/api/health", headers={"X-Request-Id": too_long}) as resp:
        assert resp.headers["X-Request-Id"] != too_long


async def test_security_headers_on_api_and_ui(edge: TestClient[Any, Any]) -> None:
    async with edge.get("/api/health") as resp:
        h = resp.headers
        assert h["Content-Security-Policy"].startswith("default-src 'none'")
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["X-Frame-Options"] == "DENY"
        assert h["Referrer-Policy"] == "no-referrer"
        assert h["Cache-Control"] == "no-store"
        assert "Strict-Transport-Security" not in h  # plain HTTP here
    async with edge.get("/") as resp:
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Frame-Options"] == "DENY"


# -- a real process: memory while refusing 200 MB ----------------------------------------



@pytest.fixture(scope="module")
def big_server(scratch: Path) -> Iterator[ServerProcess]:
    data_dir = scratch / f"edge-{secrets.token_hex(4)}" / "data"
    data_dir.parent.mkdir(mode=0o711)
    server = start_server(data_dir)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        stop_postgres(data_dir)


# route, how the body is framed, what the answer must be
CASES = [
    ("POST", "/api/auth/login", False, {413}),  # a public route with a body
    ("POST", "/api/auth/login", True, {413}),
    ("POST", "/api/auth/logout", False, {413}),  # a route without a body
    ("POST", "/api/auth/logout", True, {401}),  # refused before its (empty) body matters
    ("POST", "/api/no-such-route", False, {404}),
    ("POST", "/api/no-such-route", True, {404}),
]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "chunked", "statuses"), CASES,
                         ids=[f"{c[1]}-{'chunked' if c[2] else 'length'}" for c in CASES])
def test_200_mb_upload_is_refused_without_growing_memory(
    big_server: ServerProcess, method: str, path: str, chunked: bool, statuses: set[int]
) -> None:
    # Warm the same path with a small request so one-off allocations are not counted.
    request(big_server.port, method, path, b"{}", {"Content-Type": "application/json"})
    before = big_server.rss()
    with PeakRss(big_server) as rss:
        status, body, early, _ = send_huge(big_server.port, method, path, chunked)
    assert status in statuses, body
    assert body["error"]
    assert early, "the refusal must come before the body is read"
    growth = rss.peak - before
    print(f"{path} {'chunked' if chunked else 'length'}: RSS {before / MB:.1f} MB, "
          f"peak +{growth / MB:.2f} MB")
    assert growth < 8 * MB, f"RSS grew by {growth / MB:.1f} MB"
    # And the server still serves.
    assert request(big_server.port, "GET", "/api/health").status == 200

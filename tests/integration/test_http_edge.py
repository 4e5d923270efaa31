"""Cross-cutting HTTP behaviour: JSON for every failure (never HTML, never a
traceback), request ids, security headers, and request bodies capped before they
are read, measured on a real server process."""

from __future__ import annotations

import asyncio
import json
import re
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
from beeyard.server.http import validation
from beeyard.server.http.envelope import ok
from beeyard.server.http.routing import DEFAULT_MAX_BODY, ROUTES, install, route
from beeyard.shared.schema import Field, Schema
from conftest import ADMIN_PASSWORD
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
        (b'{"tree": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "application/json", 400,
         "nested"),
        (b'{"tree": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"}", "application/json",
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
    async with edge.post("/api/test/echo", json={"n": 7, "s": "é"}) as resp:
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


# -- raw bytes, content types, strict input (security review of issue 2) -----------------


async def raw(client: TestClient[Any, Any], message: bytes, timeout: float = 30) -> tuple[
    int, dict[str, str], dict[str, Any]
]:
    """Send ``message`` byte for byte and read one answer: for what an HTTP client library
    will not send, such as invalid UTF-8 in a header, or a body that never ends."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(message)
        await writer.drain()
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").strip().split("\r\n")
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (h.partition(":") for h in lines)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
    finally:
        writer.close()
    return int(status_line.split()[1]), headers, json.loads(body) if body else {}


def http_message(method: str, path: str, headers: dict[str, bytes], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: localhost", b"Connection: close"]
    lines += [name.encode() + b": " + value for name, value in headers.items()]
    if body or method not in ("GET", "HEAD", "OPTIONS"):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def test_a_session_cookie_of_invalid_utf8_counts_as_no_session(
    client: TestClient[Any, Any],
) -> None:
    """Every declared route answers as for an anonymous caller, never 500."""
    cookie = {"Cookie": b"beeyard_session=\xff\xfe"}
    for r in client.server.app[ROUTES].values():
        path = re.sub(r"\{[^}]*\}", "1", r.path)
        status, _, body = await raw(client, http_message(r.method, path, cookie))
        assert status < 500, (r.method, r.path, body)
        if r.access is not Access.PUBLIC:
            assert status == 401, (r.method, r.path, body)
    login = json.dumps({"username": "admin", "password": ADMIN_PASSWORD}).encode()
    status, headers, body = await raw(client, http_message(
        "POST", "/api/auth/login", {**cookie, "Content-Type": b"application/json"}, login))
    assert status == 200, body
    assert "beeyard_session=" in headers["set-cookie"]


async def test_a_csrf_header_of_invalid_utf8_is_refused_not_a_crash(api: Any) -> None:
    await api.login()
    cookies = api.client.session.cookie_jar.filter_cookies(api.client.make_url("/"))
    cookie = f"beeyard_session={cookies['beeyard_session'].value}".encode()
    status, _, body = await raw(api.client, http_message(
        "POST", "/api/auth/logout", {"Cookie": cookie, "X-CSRF-Token": b"\xff\xfe"}))
    assert status == 403, body
    assert "X-CSRF-Token" in body["error"]


@pytest.mark.parametrize(
    ("ctype", "named"),
    [
        (b"text/plain", "text/plain"),
        (b"text/plain; charset=utf-8", "text/plain"),
        (b"application/octet-stream", "application/octet-stream"),
        (None, "no Content-Type"),
    ],
)
async def test_a_body_must_be_declared_json(
    edge: TestClient[Any, Any], ctype: bytes | None, named: str
) -> None:
    """A cross-site HTML form can send text/plain without a preflight; JSON it cannot. So a
    text/plain body that happens to be JSON must not sign anybody in (login CSRF)."""
    login = json.dumps({"username": "admin", "password": ADMIN_PASSWORD}).encode()
    headers = {} if ctype is None else {"Content-Type": ctype}
    status, answer, body = await raw(edge, http_message("POST", "/api/auth/login", headers, login))
    assert status == 415, body
    assert named in body["error"] and "application/json" in body["error"]
    assert "set-cookie" not in answer


@pytest.mark.parametrize("ctype", [b"application/json", b"application/json; charset=utf-8",
                                   b"application/merge-patch+json", b"text/plain", None])
async def test_an_empty_body_needs_no_content_type(
    edge: TestClient[Any, Any], ctype: bytes | None
) -> None:
    headers = {} if ctype is None else {"Content-Type": ctype}
    status, _, body = await raw(edge, http_message("POST", "/api/test/echo", headers))
    assert (status, body) == (200, {"data": {"n": None, "x": None, "s": None, "tree": None}})
    status, _, body = await raw(edge, http_message(
        "POST", "/api/test/echo", {"Content-Type": b"application/vnd.beeyard+json"}, b'{"n": 2}'))
    assert (status, body["data"]["n"]) == (200, 2)


async def test_unknown_body_fields_are_refused_by_name(edge: TestClient[Any, Any]) -> None:
    async with edge.post("/api/test/echo", json={"n": 1, "extra": 1, "s ": "x"}) as resp:
        body = await expect_json_error(resp, 422)
    assert body["error"] == "unknown fields extra, 's '"
    async with edge.post("/api/test/echo", json={"m": 1}) as resp:
        assert (await expect_json_error(resp, 422))["error"] == "unknown field m"


async def test_the_default_body_limit_is_64_kib(edge: TestClient[Any, Any]) -> None:
    assert DEFAULT_MAX_BODY == 64 * 1024
    payload = json.dumps({"s": "x", "tree": "y" * DEFAULT_MAX_BODY}).encode()
    async with edge.post("/api/auth/login", data=payload,
                         headers={"Content-Type": "application/json"}) as resp:
        await expect_json_error(resp, 413)


async def test_a_body_that_trickles_in_is_cut_off_at_the_deadline(
    edge: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that announces a body and sends it too slowly holds server memory for at
    most the deadline (shortened here; the point is that there is one)."""
    monkeypatch.setattr(validation, "BODY_DEADLINE", 0.5, raising=False)
    message = http_message("POST", "/api/auth/login", {"Content-Type": b"application/json"},
                           b'{"username": "admin", "password": "' + b"x" * 100 + b'"}')
    partial = message[:-20]  # Content-Length promises 20 bytes more than ever arrive
    status, _, body = await raw(edge, partial, timeout=20)
    assert (status, body) == (408, {"error": "request body not received in time"})


# A test-only route with a query of every kind.
_QUERY = Schema("ProbeQuery", (
    Field("n", "int", required=False, min=-5, max=1000),
    Field("x", "float", required=False),
    Field("b", "bool", required=False),
))


@route("GET", "/api/test/query", Access.PUBLIC, "test.query", query=_QUERY)
async def query_probe(request: web.Request) -> web.Response:
    """Test-only: returns the parsed query."""
    return ok(context.query(request))


@pytest.fixture
async def querying(aiohttp_client: Any, settings: Settings) -> TestClient[Any, Any]:
    app = create_app(settings)
    install(app, [query_probe])
    return await aiohttp_client(app)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("n=%EF%BC%91", "query parameter n: must be an integer"),  # fullwidth 1
        ("n=%D9%A1", "query parameter n: must be an integer"),  # Arabic-Indic 1
        ("n=1_0", "query parameter n: must be an integer"),
        ("n=+1", "query parameter n: must be an integer"),
        ("n=%201", "query parameter n: must be an integer"),
        ("n=" + "9" * 31, "query parameter n: must be an integer"),
        ("x=1_0.5", "query parameter x: must be a number"),
        ("x=%EF%BC%91", "query parameter x: must be a number"),
        ("x=nan", "query parameter x: must be a number"),
        ("n=-6", "n: must be at least -5"),
        ("n=1&n=2", "query parameter n given more than once"),
        ("b=true&b=true", "query parameter b given more than once"),
        ("nn=1", "unknown query parameter nn"),
        ("n=1&all=true&x=2", "unknown query parameter all"),
    ],
)
async def test_query_strings_are_read_strictly(
    querying: TestClient[Any, Any], query: str, message: str
) -> None:
    async with querying.get(f"/api/test/query?{query}") as resp:
        assert (await expect_json_error(resp, 422))["error"] == message


async def test_good_query_strings_pass(querying: TestClient[Any, Any]) -> None:
    async with querying.get("/api/test/query?n=-5&x=-1.5e3&b=TRUE") as resp:
        assert (await resp.json())["data"] == {"n": -5, "x": -1500.0, "b": True}
    async with querying.get("/api/test/query?n=0012&x=7") as resp:
        assert (await resp.json())["data"] == {"n": 12, "x": 7.0, "b": None}

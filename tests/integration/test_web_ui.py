"""The web UI and Swagger UI are static files served publicly under a strict CSP,
with no inline script, nothing from another origin, and vendored files that
match their pins."""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from beeyard.server import web as web_ui

ROOT = Path(__file__).resolve().parents[2]


class Refs(HTMLParser):
    """Every script, stylesheet, icon and link in a page, and any inline script or handler."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.links: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if any(name.startswith("on") for name in a):
            self.inline.append(f"<{tag}> has an event-handler attribute")
        if tag == "script":
            self.scripts.append(a)
            self._in_script = "src" not in a
        for attr in ("src", "href"):
            value = a.get(attr)
            if value:
                self.links.append(value)
                if value.startswith("javascript:"):
                    self.inline.append(f"<{tag} {attr}={value}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"inline script: {data.strip()[:60]}")


async def _get(client: Any, path: str, **kw: Any) -> tuple[int, CIMultiDict[str], bytes]:
    async with client.get(path, **kw) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.read()


@pytest.mark.parametrize(
    ("path", "marker"),
    [("/", b'src="/static/js/main.js"'), ("/swagger-ui/", b'id="swagger-ui"')],
)
async def test_pages_are_public_html_under_the_ui_csp(
    client: Any, path: str, marker: bytes
) -> None:
    status, headers, body = await _get(client, path)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert marker in body
    csp = headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'self'")
    assert "script-src" not in csp  # scripts fall back to 'self': no inline, no eval
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Request-Id"]


async def test_every_referenced_asset_is_served_from_our_origin(client: Any) -> None:
    seen: set[str] = set()
    for page in ("/", "/swagger-ui/"):
        _, _, body = await _get(client, page)
        refs = Refs()
        refs.feed(body.decode())
        assert refs.inline == [], page
        for link in refs.links:
            assert link.startswith("/"), f"{page} loads {link} from elsewhere"
            assert not link.startswith("//"), f"{page} loads {link} from elsewhere"
            seen.add(link)
    modules = [p for p in seen if p.endswith(".js")]
    # Follow static imports of the modules too.
    queue = list(modules)
    while queue:
        path = queue.pop()
        status, headers, body = await _get(client, path)
        assert status == 200, path
        assert headers["Content-Type"] in ("text/javascript", "application/javascript"), path
        for target in re.findall(rb'^import .*? from "(\.\.?/[^"]+)";', body, re.M):
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target.decode()))
            if resolved not in seen:
                seen.add(resolved)
                queue.append(resolved)
    for path in sorted(seen):
        if path.startswith("/api"):
            continue
        status, headers, _ = await _get(client, path)
        assert status == 200, path
    assert "/static/js/api.js" in seen
    assert "/static/js/views/server.js" in seen
    assert "/static/js/charts.js" in seen
    assert "/static/vendor/swagger-ui-dist/swagger-ui-bundle.js" in seen


async def test_swagger_ui_without_slash_redirects(client: Any) -> None:
    status, headers, _ = await _get(client, "/swagger-ui", allow_redirects=False)
    assert status == 301
    assert headers["Location"] == "/swagger-ui/"


async def test_static_files_stay_inside_the_folder(client: Any) -> None:
    for path in ("/static/../__init__.py", "/static/%2e%2e/__init__.py", "/static/vendor/"):
        async with client.get(path) as resp:
            assert resp.status in (403, 404), path
            assert resp.content_type == "application/json", path


def test_vendored_files_match_their_pins() -> None:
    lock = json.loads(web_ui.VENDOR_LOCK.read_text())
    vendor = web_ui.STATIC / "vendor"
    for name, pin in lock["packages"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", pin["version"]), name
        assert pin["integrity"].startswith("sha512-"), name
        folder = vendor / name
        on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert on_disk == set(pin["files"]), name
        for file, digest in pin["files"].items():
            assert hashlib.sha256((folder / file).read_bytes()).hexdigest() == digest, file
        assert "LICENSE" in pin["files"], f"{name}: ship its licence"
        assert pin.get("license"), f"{name}: record its licence"
    folders = {p.name for p in vendor.iterdir() if p.is_dir() and not p.name.startswith("@")}
    folders |= {f"{p.parent.name}/{p.name}" for p in vendor.glob("@*/*") if p.is_dir()}
    assert folders == set(lock["packages"])  # a scoped package sits in its scope's folder
    assert (ROOT / "scripts" / "vendor-web.py").is_file()


def test_uplot_is_pinned_for_the_charts() -> None:
    """The fleet charts load uPlot from its vendored, pinned copy (lazily, by path)."""
    pin = json.loads(web_ui.VENDOR_LOCK.read_text())["packages"]["uplot"]
    assert pin["license"] == "MIT"
    charts = (web_ui.STATIC / "js" / "charts.js").read_text()
    base = re.search(r'const BASE = "/static/vendor/uplot/([^"]*)";', charts)
    assert base is not None
    for file in re.findall(r"\$\{BASE\}([\w.]+)", charts):
        assert f"{base.group(1)}{file}" in pin["files"], file


async def test_chart_library_and_unit_are_served(client: Any) -> None:
    for path in ("/static/vendor/uplot/dist/uPlot.iife.min.js",
                 "/static/vendor/uplot/dist/uPlot.min.css",
                 "/static/deploy/beeyard-agent.service"):
        status, _, _ = await _get(client, path)
        assert status == 200, path


def test_the_ui_shows_the_systemd_unit_of_deploy() -> None:
    """The add-a-server page shows static/deploy/beeyard-agent.service: deploy/'s, unchanged."""
    shown = web_ui.STATIC / "deploy" / "beeyard-agent.service"
    assert shown.read_bytes() == (ROOT / "deploy" / "beeyard-agent.service").read_bytes(), (
        "copy deploy/beeyard-agent.service to web/static/deploy/")


def test_every_view_module_is_imported() -> None:
    main = (web_ui.STATIC / "js" / "main.js").read_text()
    for view in (web_ui.STATIC / "js" / "views").glob("*.js"):
        assert f'from "./views/{view.name}"' in main, view.name

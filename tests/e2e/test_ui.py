"""The web UI and Swagger UI in a real browser (Debian's chromium driven by
Playwright) against a real server on 127.0.0.1: sign in (with and without a second
factor), see who is signed in, sign out; Swagger UI renders every operation and can
call the API with the browser's session. No console error, no CSP violation.

Chromium comes from apt (`apt-get install chromium`), never from `playwright
install`. Without it (or without the playwright package) these tests skip with the
reason, except under BEEYARD_REQUIRE_ALL=1 (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pyotp
import pytest
from aiohttp import web
from tests.agent.peer import AgentProcess
from tests.serverproc import clean_env

from beeyard.server.api import live
from beeyard.server.app import create_app
from beeyard.server.config import Settings
from conftest import ADMIN_PASSWORD

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("BEEYARD_TEST_CHROMIUM", "/usr/bin/chromium"))
# Flags that work as root on a closed network (see RECIPES.md). Playwright adds
# --headless and a fresh temporary --user-data-dir itself.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REQUIRE_ALL = os.environ.get("BEEYARD_REQUIRE_ALL") == "1"

# Records CSP violations in the page, before any of its scripts run.
_WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective}: ${e.blockedURI || "inline"}`);
});
"""


def unavailable(reason: str) -> NoReturn:
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (BEEYARD_REQUIRE_ALL=1 makes this a failure)")
    pytest.skip(reason)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        unavailable(f"no browser: {CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("no browser driver: the playwright package is not installed")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


@dataclass
class Watched:
    """A page whose console errors, uncaught exceptions and CSP violations are kept."""

    page: Any
    base: str
    shots: Path
    errors: list[str] = field(default_factory=list)

    async def problems(self) -> list[str]:
        csp = await self.page.evaluate("window.__cspViolations || []")
        return self.errors + [f"CSP violation: {v}" for v in csp]

    async def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


def _expected_api_error(msg: Any, base: str) -> bool:
    """Chromium logs every 4xx answer as a console error; a 4xx from our API is an
    answer the UI handles (401 from /api/auth/me when signed out), not a page error."""
    url = (msg.location or {}).get("url", "")
    return msg.text.startswith("Failed to load resource: the server responded with a status of 4") \
        and url.startswith(base + "api/")


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: $BEEYARD_E2E_SCREENSHOTS if set (to look at them), else tmp."""
    target = os.environ.get("BEEYARD_E2E_SCREENSHOTS")
    path = Path(target) if target else tmp_path / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
async def ui(browser: Any, server_url: str, shots: Path) -> AsyncIterator[Watched]:
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    watched = Watched(page, server_url, shots)
    await page.add_init_script(_WATCH_CSP)
    page.on("pageerror", lambda exc: watched.errors.append(f"uncaught: {exc}"))
    page.on(
        "console",
        lambda msg: watched.errors.append(f"console {msg.type}: {msg.text}")
        if msg.type == "error" and not _expected_api_error(msg, server_url) else None,
    )
    page.on(
        "requestfailed",
        lambda req: watched.errors.append(f"request failed: {req.url} ({req.failure})"),
    )
    try:
        yield watched
    finally:
        await context.close()


@pytest.fixture
def web_app(settings: Settings) -> web.Application:
    return create_app(settings)


@pytest.fixture
async def server_url(web_app: web.Application, aiohttp_server: Any) -> str:
    """A real server on 127.0.0.1 and a free port, with the test's own database."""
    server = await aiohttp_server(web_app, host="127.0.0.1")
    return str(server.make_url("/"))


async def sign_in(ui: Any, username: str, password: str) -> None:
    page = ui.page
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#login-form button[type=submit]")


async def test_sign_in_see_who_and_sign_out(ui: Any) -> None:
    page = ui.page
    await page.goto(ui.base)
    await page.wait_for_selector("#login-form")
    assert await page.title() == "Beeyard"
    await ui.screenshot("login")

    await sign_in(ui, "admin", "not the password")
    alert = page.locator("#login-form .error")
    await alert.wait_for()
    assert "invalid username or password" in (await alert.text_content() or "")

    await sign_in(ui, "admin", ADMIN_PASSWORD)
    await page.wait_for_selector("#current-user")
    assert await page.text_content("#current-user") == "admin"
    await page.wait_for_selector(".empty")  # the fleet overview, with no server yet
    assert await page.locator("a[href='/swagger-ui/']").count() >= 1
    await ui.screenshot("home")

    await page.reload()  # the session cookie survives a reload; the CSRF token is refetched
    await page.wait_for_selector("#current-user")

    await page.click("#sign-out")
    await page.wait_for_selector("#login-form")
    assert "signed out" in (await page.text_content("#login-form .notice") or "")
    await page.reload()  # really signed out: the server no longer knows the session
    await page.wait_for_selector("#login-form")
    assert await ui.problems() == []


async def test_sign_in_with_a_second_factor(ui: Any, server_url: str) -> None:
    # Turn 2FA on for admin through the public API, as a user would in another window.
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies of an IP-address host
    async with aiohttp.ClientSession(base_url=server_url, cookie_jar=jar) as http:
        async with http.post(
            "/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        ) as resp:
            assert resp.status == 200
            csrf = {"X-CSRF-Token": (await resp.json())["data"]["csrf_token"]}
        async with http.post(
            "/api/auth/2fa/setup", json={"password": ADMIN_PASSWORD}, headers=csrf
        ) as resp:
            assert resp.status == 200, await resp.text()
            uri = (await resp.json())["data"]["otpauth_uri"]
        secret = parse_qs(urlsplit(uri).query)["secret"][0]
        totp = pyotp.TOTP(secret)
        async with http.post(
            "/api/auth/2fa/enable", json={"code": totp.now()}, headers=csrf
        ) as resp:
            assert resp.status == 200, await resp.text()

    page = ui.page
    await page.goto(ui.base)
    await page.wait_for_selector("#login-form")
    assert await page.locator("#totp").is_hidden()
    await sign_in(ui, "admin", ADMIN_PASSWORD)
    await page.locator("#totp").wait_for(state="visible")
    assert "two-factor" in (await page.text_content("#login-form .notice") or "")
    await ui.screenshot("login-totp")
    # The enabling code's time step is spent; the next step's code is valid now (drift ±1).
    await page.fill("#totp", totp.at(time.time() + 30))
    await page.click("#login-form button[type=submit]")
    await page.wait_for_selector("#current-user")
    assert await page.text_content("#current-user") == "admin"
    assert await ui.problems() == []


async def test_swagger_ui_renders_every_operation(ui: Any) -> None:
    page = ui.page
    await page.goto(ui.base + "swagger-ui")  # redirects to /swagger-ui/
    assert page.url == ui.base + "swagger-ui/"
    await page.wait_for_selector(".opblock")
    # Tags render expanded ("list"), so every operation has a visible block.
    paths = await page.locator(".opblock .opblock-summary-path").all_text_contents()
    paths = [re.sub(r"\s+", "", p) for p in paths]
    async with aiohttp.ClientSession() as http, http.get(ui.base + "api-docs/openapi.json") as resp:
        doc = await resp.json()
    expected = sorted(
        path for path, item in doc["paths"].items() for m in item if m != "parameters"
    )
    assert sorted(paths) == expected
    assert "/api/health" in paths
    assert "/api-docs/openapi.json" in paths
    await ui.screenshot("swagger-ui")
    assert await ui.problems() == []


async def test_try_it_out_uses_the_browser_session(ui: Any) -> None:
    page = ui.page
    await page.goto(ui.base)
    await sign_in(ui, "admin", ADMIN_PASSWORD)
    await page.wait_for_selector("#current-user")
    await page.goto(ui.base + "swagger-ui/")
    block = page.locator(".opblock-get", has=page.locator('[data-path="/api/auth/me"]'))
    await block.locator(".opblock-summary").first.click()  # expand the operation
    await block.locator(".try-out__btn").click()
    await block.locator(".execute").click()
    status = block.locator(".live-responses-table tr.response .response-col_status").first
    await status.wait_for()
    assert (await status.text_content() or "").strip() == "200"
    body = await block.locator(".live-responses-table .microlight").first.text_content()
    assert '"username": "admin"' in (body or "")
    await ui.screenshot("swagger-try-it-out")

    # A write: Swagger UI sends the session's CSRF token (the initializer adds it).
    # (sign-out: a body-less write, so Swagger's example values cannot get in the way)
    logout = page.locator(".opblock-post", has=page.locator('[data-path="/api/auth/logout"]'))
    await logout.locator(".opblock-summary").first.click()
    await logout.locator(".try-out__btn").click()
    await logout.locator(".execute").click()
    status = logout.locator(".live-responses-table tr.response .response-col_status").first
    await status.wait_for()
    assert (await status.text_content() or "").strip() == "200"
    assert await ui.problems() == []


async def test_csp_blocks_what_it_should(ui: Any) -> None:
    """The UI's CSP is live: an injected inline script does not run."""
    page = ui.page
    await page.goto(ui.base)
    await page.wait_for_selector("#login-form")
    ran = await page.evaluate(
        """() => {
            window.__injected = false;
            const s = document.createElement("script");
            s.textContent = "window.__injected = true";
            document.body.append(s);
            return window.__injected;
        }"""
    )
    assert ran is False
    violations = await page.evaluate("window.__cspViolations")
    assert violations and violations[0].startswith("script-src")


# -- the fleet: a real agent process enrolled through the UI ---------------------------


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Offline within 3 s of an agent's death (3 heartbeats), so the test need not wait long.
    return dataclasses.replace(settings, agent_heartbeat=1.0)


async def _enroll_from_the_page(ui: Watched, tmp_path: Path) -> Path:
    """Mint a code in the add-a-server page and run the command it shows; the config."""
    page = ui.page
    await page.goto(ui.base + "#/add")
    await page.click("#mint-code")
    await page.wait_for_selector("#enroll-command")
    code = (await page.text_content("#enroll-code") or "").strip()
    command = (await page.text_content("#enroll-command") or "").split()
    origin = ui.base.rstrip("/")
    assert command == ["beeyard-agent", "enroll", "--server", origin, "--code", code]
    assert await page.text_content("#run-command") == "beeyard-agent run"
    unit = await page.text_content("#systemd-unit") or ""
    assert unit == (ROOT / "deploy" / "beeyard-agent.service").read_text()
    assert (await page.text_content("#enroll-expiry") or "").strip()
    pending = page.locator("#pending-codes")
    await pending.wait_for()
    assert code[:8] in (await pending.text_content() or "")
    await ui.screenshot("add-server")

    config = tmp_path / "agent.toml"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "beeyard.agent.cli", *command[1:], "--name", "e2e-host",
        "--config", str(config), "--token-file", str(tmp_path / "agent.token"),
        "--spool-dir", str(tmp_path / "spool"),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=clean_env(),
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    return config


async def _cpu_values(page: Any, count: int, timeout: float = 20.0) -> set[str]:
    """The CPU cell of the first row, read until it showed `count` different values."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        assert time.monotonic() < deadline, f"CPU cell never changed: {seen}"
        text = (await page.text_content("#fleet-rows tr td.col-cpu") or "").strip()
        if text != "–":  # online, but its first sample not in yet
            assert text.endswith("%"), text
            seen.add(text)
        await asyncio.sleep(0.5)
    return seen


async def test_fleet_live_detail_and_enrollment_with_a_real_agent(
    ui: Watched, tmp_path: Path, web_app: web.Application
) -> None:
    page = ui.page
    await page.goto(ui.base)
    await sign_in(ui, "admin", ADMIN_PASSWORD)
    await page.wait_for_selector(".empty")
    await ui.screenshot("fleet-empty")

    config = await _enroll_from_the_page(ui, tmp_path)
    # The code is spent: it leaves the pending list (which is reloaded on each visit).
    await page.goto(ui.base + "#/")
    agent = AgentProcess(config, tmp_path / "agent.log")
    try:
        await page.wait_for_selector("#fleet-rows tr .dot.on", timeout=30_000)
        row = page.locator("#fleet-rows tr").first
        assert "e2e-host" in (await row.locator("td.col-name").text_content() or "")
        await _cpu_values(page, 2)
        for col in ("memory", "disk"):
            assert (await row.locator(f"td.col-{col}").text_content() or "").endswith("%")
        assert (await row.locator("td.col-rx").text_content() or "").endswith("/s")
        for col in ("load", "uptime"):  # from summary values and host facts
            assert any(c.isdigit() for c in await row.locator(f"td.col-{col}").text_content()
                       or "")
        assert await page.text_content("#link-state") == "live"
        await ui.screenshot("fleet")

        # The server ends every live stream (as on a restart): the page reconnects by itself.
        await live.close_streams(web_app)
        await page.wait_for_function(
            "() => document.querySelector('#link-state').textContent !== 'live'")
        await page.wait_for_function(
            "() => document.querySelector('#link-state').textContent === 'live'")
        await _cpu_values(page, 2)

        await row.locator("a.server-link").click()
        await page.wait_for_selector("#host-facts")
        assert "e2e-host" in (await page.text_content("h1") or "")
        await page.wait_for_function(  # full metrics come on the server's own stream
            "() => [...document.querySelectorAll('#host-facts dd')]"
            ".some((d) => / of /.test(d.textContent))")
        for grid in ("live", "history"):
            await page.wait_for_function(
                f"() => document.querySelectorAll('#{grid}-charts .uplot canvas').length === 4")
        # Live charts grow with the stream: the CPU chart's series has points.
        await page.wait_for_function(
            "() => document.querySelector('#history-tier').textContent.includes('tier')")
        await asyncio.sleep(3)
        await ui.screenshot("server-detail")
        for label in ("24 h", "7 d", "30 d", "1 h"):
            await page.click(f"button[data-range='{label}']")
            await page.wait_for_selector(f"button.active[data-range='{label}']")
        await page.wait_for_function(
            "() => document.querySelector('#history-tier').textContent.includes('points')")

        # The agent dies: the page says offline within the server's detection (3 s here).
        agent.signal(signal.SIGKILL)
        await page.wait_for_function(
            "() => document.querySelector('#host-facts dd').textContent.startsWith('offline')",
            timeout=15_000)
        await page.click("text=← Servers")
        await page.wait_for_selector("#fleet-rows tr .dot.off")
        await ui.screenshot("fleet-offline")
    finally:
        agent.stop()
    assert await ui.problems() == []


async def test_pending_codes_can_be_deleted(ui: Watched) -> None:
    page = ui.page
    await page.goto(ui.base)
    await sign_in(ui, "admin", ADMIN_PASSWORD)
    await page.click("#nav-add")
    await page.click("#mint-code")
    await page.wait_for_selector("#pending-codes tr[data-enrollment-id]")
    await page.click("#pending-codes button.danger")
    await page.wait_for_selector("p#pending-codes")
    assert "No pending codes" in (await page.text_content("#pending-codes") or "")
    await page.goto(ui.base + "#/servers/999")  # a detail page of no server says so
    await page.wait_for_selector("#not-found")
    assert await ui.problems() == []


async def test_a_lost_session_returns_to_sign_in(ui: Watched, web_app: web.Application) -> None:
    page = ui.page
    await page.goto(ui.base)
    await sign_in(ui, "admin", ADMIN_PASSWORD)
    await page.wait_for_selector(".empty")
    await page.context.clear_cookies()  # the session is gone (expired, signed out elsewhere)
    await live.close_streams(web_app)  # and the live stream ends: the page asks who it is
    await page.wait_for_selector("#login-form")
    assert "session has ended" in (await page.text_content("#login-form .notice") or "")
    assert await ui.problems() == []

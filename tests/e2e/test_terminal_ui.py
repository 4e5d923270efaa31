"""The web terminal in a real browser: sign in, open a server that allows the terminal,
click Terminal, type into xterm.js, and see the real shell's answer. No console error,
no CSP violation (xterm.js is loaded as a vendored ES module)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from tests.e2e.test_ui import browser, shots, sign_in, ui  # noqa: F401 - fixtures
from tests.operations.conftest import MakeHost, agent_host  # noqa: F401 - fixture
from tests.operations.terminal_client import alive

from beeyard.server.api.terminal import sessions
from conftest import ADMIN_PASSWORD


@pytest.fixture
def server_url(client: TestClient[Any, Any]) -> str:
    """The browser talks to the same in-process server the agent is linked to."""
    return str(client.make_url("/"))


async def test_a_terminal_in_the_browser(ui: Any, agent_host: MakeHost,  # noqa: F811
                                         client: TestClient[Any, Any],
                                         db: asyncpg.Connection) -> None:
    host = await agent_host(capabilities=["terminal"], terminal={"shell": "/bin/sh"})
    bare = await agent_host("no-terminal")  # no Terminal button where it is off
    page = ui.page
    await page.goto(ui.base)
    await sign_in(ui, "admin", ADMIN_PASSWORD)
    await page.wait_for_selector("#current-user")

    await page.goto(f"{ui.base}#/servers/{bare.server_id}")
    await page.wait_for_selector("#host-facts")
    await asyncio.sleep(0.5)
    assert await page.locator("#open-terminal").count() == 0

    await page.goto(f"{ui.base}#/servers/{host.server_id}")
    await page.click("#open-terminal")
    await page.wait_for_selector(".xterm-screen")
    status = page.locator("#terminal-status")
    await page.wait_for_selector("#terminal-status.ok")  # "Connected"
    await page.locator("#terminal").click()
    await page.keyboard.type("echo hello-$((6*7))\n")
    rows = page.locator(".xterm-rows")
    await rows.get_by_text("hello-42", exact=True).wait_for()
    await page.keyboard.type("echo PID=$$\n")
    line = rows.get_by_text("PID=", exact=False).last
    await line.wait_for()
    await asyncio.sleep(0.2)
    shell_pid = int((await rows.inner_text()).split("PID=")[-1].split()[0])
    assert alive([shell_pid]) == [shell_pid]
    await ui.screenshot("terminal")

    # Leaving the view closes the socket: the agent ends the shell.
    await page.goto(f"{ui.base}#/servers/{host.server_id}")
    for _ in range(100):
        if not alive([shell_pid]):
            break
        await asyncio.sleep(0.05)
    assert alive([shell_pid]) == []
    assert len(sessions(client.app)) == 0

    # A shell that exits says so, and offers a new session.
    await page.click("#open-terminal")
    await page.wait_for_selector("#terminal-status.ok")  # "Connected"
    await page.locator("#terminal").click()
    await page.keyboard.type("exit 7\n")
    await page.wait_for_selector("#terminal-reconnect:not([hidden])")
    assert "exit status 7" in (await status.text_content() or "")

    # The server's record wrongly says yes: the page shows the agent's own refusal.
    await db.execute("UPDATE servers SET capabilities = '{terminal}' WHERE id = $1",
                     bare.server_id)
    await page.goto(f"{ui.base}#/servers/{bare.server_id}/terminal")
    await page.wait_for_selector("#terminal-status.error")
    assert "terminal capability is off on this host" in (await status.text_content() or "")
    assert await ui.problems() == []

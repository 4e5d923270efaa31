"""Files, containers and tasks in a real browser against a real agent process: what an
operator does in the web UI lands on the host, and what the host has shows in the UI.
No console error, no CSP violation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from tests.e2e.test_ui import browser, shots, sign_in, ui  # noqa: F401 - fixtures
from tests.operations import podman as engine
from tests.operations.conftest import MakeHost, agent_host  # noqa: F401 - fixture

from conftest import ADMIN_PASSWORD


@pytest.fixture
def server_url(client: TestClient[Any, Any]) -> str:
    """The browser talks to the same in-process server the agent is linked to."""
    return str(client.make_url("/"))


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[engine.Podman]:
    running = engine.start(tmp_path_factory.mktemp("podman"))
    yield running
    engine.stop(running)


async def signed_in(watched: Any) -> Any:
    page = watched.page
    await page.goto(watched.base)
    await sign_in(watched, "admin", ADMIN_PASSWORD)
    await page.wait_for_selector("#current-user")
    return page


async def test_browse_view_edit_upload_and_delete_files(
    ui: Any, agent_host: MakeHost, tmp_path: Path  # noqa: F811
) -> None:
    root = tmp_path / "srv"
    (root / "site").mkdir(parents=True)
    (root / "site" / "index.html").write_text("<h1>old</h1>\n")
    (root / ".env").write_text("SECRET=1\n")  # denied by the default patterns
    host = await agent_host(capabilities=["files"], files={"roots": [str(root)]})
    page = await signed_in(ui)
    await page.goto(f"{ui.base}#/servers/{host.server_id}")
    await page.click("#open-files")
    listing = page.locator("#files-list")
    await listing.locator("tr[data-name='site']").wait_for()
    assert await listing.locator("tr[data-name='.env']").count() == 0
    await listing.get_by_text("site/").click()
    await listing.locator("tr[data-name='index.html']").wait_for()
    await listing.get_by_text("index.html", exact=True).click()
    editor = page.locator("#file-content")
    await editor.wait_for()
    assert await editor.input_value() == "<h1>old</h1>\n"
    await editor.fill("<h1>new</h1>\n")
    await page.click("#file-save")
    await page.get_by_text("Saved").wait_for()
    assert (root / "site" / "index.html").read_text() == "<h1>new</h1>\n"

    upload = tmp_path / "notes.txt"
    upload.write_bytes(b"uploaded from the browser\n" * 1000)
    await page.set_input_files("#files-upload-input", str(upload))
    await listing.locator("tr[data-name='notes.txt']").wait_for()
    assert (root / "site" / "notes.txt").read_bytes() == upload.read_bytes()

    page.once("dialog", lambda d: asyncio.ensure_future(d.accept("logs")))
    await page.click("#files-mkdir")
    await listing.locator("tr[data-name='logs']").wait_for()
    assert (root / "site" / "logs").is_dir()

    page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))
    await listing.locator("tr[data-name='notes.txt'] button.danger").click()
    await listing.locator("tr[data-name='notes.txt']").wait_for(state="detached")
    assert not (root / "site" / "notes.txt").exists()
    await ui.screenshot("files")
    assert await ui.problems() == []


async def test_containers_with_actions_and_live_logs(
    ui: Any, agent_host: MakeHost, podman: engine.Podman  # noqa: F811
) -> None:
    name = f"ui-{uuid.uuid4().hex[:8]}"
    podman.run(name, ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"])
    try:
        host = await agent_host(capabilities=["docker_read", "docker_control"],
                                docker={"url": podman.url})
        page = await signed_in(ui)
        await page.goto(f"{ui.base}#/servers/{host.server_id}")
        await page.click("#open-docker")
        row = page.locator(f"#docker-containers tr[data-name='{name}']")
        await row.wait_for()
        assert "running" in (await row.inner_text())
        await row.get_by_role("button", name="Logs").click()
        await page.locator("#docker-log").get_by_text("tick 3", exact=False).wait_for()
        await row.get_by_role("button", name="pause").click()
        await page.get_by_text(f"pause: {name} done").wait_for()
        for _ in range(50):
            if podman.client.api.inspect_container(name)["State"]["Status"] == "paused":
                break
            await asyncio.sleep(0.1)
        assert podman.client.api.inspect_container(name)["State"]["Status"] == "paused"
        await page.locator(f"#docker-containers tr[data-name='{name}']").get_by_text(
            "paused", exact=True).wait_for()
        await ui.screenshot("containers")
        assert await ui.problems() == []
    finally:
        podman.client.api.remove_container(name, force=True)


async def test_create_and_run_a_task_with_live_output(
    ui: Any, agent_host: MakeHost  # noqa: F811
) -> None:
    host = await agent_host("web-7", capabilities=["exec"])
    page = await signed_in(ui)
    await page.click("#nav-tasks")
    await page.click("#task-new")
    await page.fill("#task-name", "say hello")
    await page.fill("#task-command", 'sh -c "echo hello-$((6*7)); sleep 1; echo bye"')
    await page.select_option("#task-target", f"server:{host.server_id}")
    await page.click("#task-form button[type=submit]")
    row = page.locator("#tasks-list tr", has_text="say hello")
    await row.wait_for()
    await row.get_by_role("button", name="Run").click()
    output = page.locator(f".run-server[data-server='{host.server_id}'] pre")
    await output.get_by_text("hello-42", exact=False).wait_for()
    await page.locator(f".run-server[data-server='{host.server_id}'] .state-succeeded").wait_for()
    assert (await output.inner_text()).split() == ["hello-42", "bye"]
    await ui.screenshot("task-run")
    assert await ui.problems() == []

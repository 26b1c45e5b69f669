"""The MCP App (ui://taskqueue/board) rendered in a real browser inside a stand-in host, and the
browser board with 10,000 tasks in one project."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import anyio
from axe_playwright_python.sync_playwright import Axe
from mcp import Client
from playwright.sync_api import Browser, expect

from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.app import build_server
from mcp_taskqueue.store import Store
from tests.board_data import DEMO_COUNTS, populate
from tests.browser.axe_harness import WCAG
from tests.browser.test_journeys import LIVE, card, open_board
from tests.servers import http_server

# A minimal MCP Apps host: answers ui/initialize, forwards the tool result, records tool calls.
HOST = """<!doctype html><html lang="en"><head><title>host</title></head><body>
<iframe id="app" title="Task queue board app" style="width:1200px;height:900px"></iframe>
<script>
const frame = document.getElementById("app");
window.calls = [];
const reply = (m) => frame.contentWindow.postMessage(Object.assign({jsonrpc: "2.0"}, m), "*");
window.addEventListener("message", (e) => {
  const m = e.data;
  if (m.method === "ui/initialize") reply({id: m.id, result: {protocolVersion: "2026-01-26", hostInfo: {name: "test-host", version: "1"}, hostCapabilities: {}, hostContext: {}}});
  if (m.method === "ui/notifications/initialized") reply({method: "ui/notifications/tool-result", params: RESULT});
  if (m.method === "tools/call") { window.calls.push(m.params); reply({id: m.id, result: m.params.name === "show_board" ? RESULT : {content: [{type: "text", text: "ok"}]}}); }
});
frame.srcdoc = APP;
</script></body></html>"""


def show_board_result(db: Path) -> tuple[str, dict[str, Any]]:
    """The App's HTML and a real show_board result, from the server over an in-process client
    (in a thread of its own: Playwright's sync API holds this thread's event loop)."""
    out: dict[str, Any] = {}

    async def main() -> None:
        async with Client(build_server(db)) as client:
            resource = await client.read_resource("ui://taskqueue/board")
            out["html"] = resource.contents[0].text  # type: ignore[union-attr]
            result = await client.call_tool("show_board", {"project": "demo"})
            out["result"] = result.model_dump(mode="json", by_alias=True, exclude_none=True)

    thread = threading.Thread(target=lambda: anyio.run(main))
    thread.start()
    thread.join(timeout=60)
    return out["html"], out["result"]


def test_the_mcp_app_renders_the_board_and_calls_tools_through_the_host(
    browsers: dict[str, Browser], tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    store = Store(db)
    ids = populate(TaskQueue(store))
    store.close()
    html, result = show_board_result(db)
    # "</script>" inside the App must not end the host's script
    host = HOST.replace("RESULT", json.dumps(result)).replace("APP", json.dumps(html).replace("</", "<\\/"))
    page = browsers["chromium"].new_page()
    page.set_content(host)
    app = page.frame_locator("#app")
    for key, count in DEMO_COUNTS.items():
        expect(app.locator(f'section.col-{key} h2 span[aria-label="{count} tasks"]')).to_be_visible(timeout=LIVE)
    expect(app.locator("section.col-running li.card")).to_have_count(2)
    expect(app.locator("section.col-running")).to_contain_text("agent-ada")
    app.get_by_role("button", name="Retry Migrate the old database").click()
    expect(app.locator("#app-status")).to_contain_text("sent back to the queue", timeout=LIVE)
    calls = page.evaluate("window.calls")
    assert calls[0] == {"name": "retry_task", "arguments": {"task_id": ids["Migrate the old database"]}}
    assert calls[1]["name"] == "show_board"  # and it refreshed itself
    # the App on its own page, for axe (axe-core runs in the top frame)
    alone = browsers["chromium"].new_page()
    alone.set_content(html)
    alone.evaluate(
        "(r) => window.postMessage({jsonrpc: '2.0', method: 'ui/notifications/tool-result', params: r}, '*')", result
    )
    expect(alone.locator("li.card").first).to_be_visible(timeout=LIVE)
    found = Axe().run(alone, options=WCAG)
    assert found.violations_count == 0, found.generate_report()


def test_ten_thousand_tasks_in_the_browser(browsers: dict[str, Browser], tmp_path: Path) -> None:
    db = tmp_path / "big.db"
    store = Store(db)
    queue = TaskQueue(store)
    for start in range(0, 10_000, 500):
        queue.create_many(
            [{"project": "big", "title": f"Task {i:05d}", "kind": "bulk"} for i in range(start, start + 500)]
        )
    with http_server(db) as base:

        class Site:
            pass

        site = Site()
        site.base = base  # type: ignore[attr-defined]
        started = time.monotonic()
        page = open_board(browsers["chromium"], site, "#/p/big")  # type: ignore[arg-type]
        ready = page.locator('section[data-column="ready"]')
        expect(ready.locator("li.card")).to_have_count(50, timeout=LIVE)
        shown = time.monotonic() - started
        expect(ready.locator("h2 .count")).to_have_text("10000")
        ready.get_by_role("button", name="Show more (9950 more)").click()
        expect(ready.locator("li.card")).to_have_count(100, timeout=LIVE)
        # a live change re-reads only the pages on screen, and keeps them
        queue.create({"project": "big", "title": "Needle", "priority": "critical"})
        expect(card(page, "ready", "Needle")).to_be_visible(timeout=LIVE)
        expect(ready.locator("li.card")).to_have_count(100)
        nodes = page.evaluate("() => document.getElementsByTagName('*').length")
        assert nodes < 5_000, f"{nodes} DOM nodes for 10,000 tasks"
        assert shown < 10, f"the board of 10,000 tasks took {shown:.1f}s to show"
    store.close()

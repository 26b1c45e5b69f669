"""The MCP App (ui://taskqueue/board) rendered in a real browser inside a stand-in host, and the
browser board with 10,000 tasks in one project."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal
from axe_playwright_python.sync_playwright import Axe
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from playwright.sync_api import Browser, expect

from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store
from tests.board_data import DEMO_COUNTS
from tests.browser.axe_harness import WCAG
from tests.browser.conftest import Site
from tests.browser.test_journeys import LIVE, card, open_board
from tests.servers import http_server

# A minimal MCP Apps host: the App in a sandboxed iframe (scripts only, opaque origin, as hosts
# render it), ui/initialize answered, show_board's input forwarded, and every tools/call the App
# makes passed to a real server through `window.forward` (an MCP client in the test, below).
HOST = """<!doctype html><html lang="en"><head><title>host</title></head><body>
<iframe id="app" sandbox="allow-scripts" title="Task queue board app" style="width:1200px;height:900px"></iframe>
<script>
const frame = document.getElementById("app");
window.calls = [];
const reply = (m) => frame.contentWindow.postMessage(Object.assign({jsonrpc: "2.0"}, m), "*");
window.addEventListener("message", async (e) => {
  if (e.source !== frame.contentWindow) return;
  const m = e.data;
  if (m.method === "ui/initialize") reply({id: m.id, result: {protocolVersion: "2026-01-26", hostInfo: {name: "test-host", version: "1"}, hostCapabilities: {}, hostContext: {}}});
  if (m.method === "ui/notifications/initialized") reply({method: "ui/notifications/tool-input", params: {arguments: {project: "demo"}}});
  if (m.method === "tools/call") { window.calls.push(m.params.name); reply({id: m.id, result: await window.forward(m.params.name, m.params.arguments)}); }
});
frame.srcdoc = APP;
</script></body></html>"""


@contextmanager
def mcp_session(base: str) -> Iterator[tuple[BlockingPortal, Client]]:
    """An MCP client of the server at `base` over streamable HTTP, on a loop in a thread of its
    own (Playwright's sync API holds this thread's loop): call it with `portal.call(...)`."""
    with start_blocking_portal() as portal:
        client = portal.wrap_async_context_manager(Client(streamable_http_client(base + "/mcp")))
        with client as session:
            yield portal, session


def test_the_mcp_app_is_the_full_board_reading_through_the_host(browsers: dict[str, Browser], fresh_site: Site) -> None:
    """Columns, a task page, a retry and a change by another process, all through the host's
    bridge to a real server (tools board_read and board_act), with the browser board's own script."""
    page = browsers["chromium"].new_page()
    with mcp_session(fresh_site.base) as (portal, session):

        def forward(name: str, arguments: dict[str, Any]) -> Any:
            result = portal.call(session.call_tool, name, arguments)
            return result.model_dump(mode="json", by_alias=True, exclude_none=True)

        html = portal.call(session.read_resource, "ui://taskqueue/board").contents[0].text  # type: ignore[union-attr]
        # "</script>" inside the App must not end the host's script
        host = HOST.replace("APP", json.dumps(html).replace("</", "<\\/"))
        page.expose_function("forward", forward)
        page.set_content(host)
        app = page.frame_locator("#app")
        # show_board's project opens its board: every column, counted
        for key, count in DEMO_COUNTS.items():
            expect(app.locator(f'section[data-column="{key}"] .count')).to_have_text(str(count), timeout=LIVE)
        running = app.locator('section[data-column="running"] li.card', has_text="Refactor the parser")
        expect(running).to_contain_text("worker agent-ada")
        expect(app.locator("#conn")).to_contain_text("Live")
        found = Axe().run(page.frames[1], options=WCAG)
        assert found.violations_count == 0, found.generate_report()
        # a retry through board_act, seen back in ready
        failed = app.locator('section[data-column="failed"] li.card', has_text="Migrate the old database")
        failed.get_by_role("button", name="Retry Migrate the old database").click()
        expect(app.locator('section[data-column="ready"] li.card', has_text="Migrate the old database")).to_be_visible(
            timeout=LIVE
        )
        assert fresh_site.queue.get(fresh_site.ids["Migrate the old database"]).status.value == "ready"
        events = fresh_site.queue.history(fresh_site.ids["Migrate the old database"], limit=1000).events
        assert events[-1].actor == "board"  # no tokens: actions are recorded as the board's, as over HTTP
        # a change by another process (the test's own queue on the same file) appears by itself
        fresh_site.queue.create({"project": "demo", "title": "Written elsewhere"})
        expect(app.locator('section[data-column="ready"] li.card', has_text="Written elsewhere")).to_be_visible(
            timeout=LIVE
        )
        # the task page: description, history, actions
        app.get_by_role("link", name="Refactor the parser").click()
        expect(app.get_by_role("heading", level=1)).to_have_text("Refactor the parser", timeout=LIVE)
        expect(app.get_by_role("button", name="Release Refactor the parser")).to_be_visible()
        expect(app.locator("#view")).to_contain_text("History")
        found = Axe().run(page.frames[1], options=WCAG)
        assert found.violations_count == 0, found.generate_report()
        # release asks first (the board's own dialog, inside the sandboxed frame), then acts
        app.get_by_role("button", name="Release Refactor the parser").click()
        app.get_by_role("dialog").get_by_role("button", name="Release lease").click()
        expect(app.locator("#announcer")).to_contain_text("“Refactor the parser”", timeout=LIVE)
        assert fresh_site.queue.get(fresh_site.ids["Refactor the parser"]).status.value == "ready"
        # the workflow view with its critical path, and the charts
        app.get_by_role("navigation", name="Main").get_by_role("link", name="Projects").click()
        app.get_by_role("link", name="Release 1.2").click()
        expect(app.get_by_role("heading", level=1)).to_have_text("Release 1.2", timeout=LIVE)
        expect(app.locator('a.node[data-critical="true"]')).to_have_count(3)
        app.get_by_role("navigation", name="Main").get_by_role("link", name="Projects").click()
        app.get_by_role("link", name="Charts for demo").click()
        expect(app.get_by_role("heading", level=1)).to_contain_text("demo", timeout=LIVE)
        expect(app.locator("figure.chart svg").first).to_be_visible(timeout=LIVE)
        calls = page.evaluate("window.calls")
        assert set(calls) == {"board_read", "board_act"} and calls.count("board_act") == 2
    page.close()


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

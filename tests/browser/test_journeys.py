"""The board as its users meet it, in Chromium and Firefox: live updates while a real Worker
runs, the critical path of a workflow, retry, cancel with confirmation, filters and search,
reconnection after the server went away."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import anyio
from playwright.sync_api import Browser, Page, expect

from mcp_taskqueue.models import Task
from mcp_taskqueue.worker import Job, Worker
from tests.browser import axe_harness
from tests.browser.conftest import Site
from tests.servers import http_server

LIVE = 20_000  # ms: generous for a loaded 2-core machine; the measured figures are far lower


def open_board(browser: Browser, site: Any, route: str = "#/p/demo", axe: bool = False, **context: Any) -> Page:
    """A new context and page on `route`, once it is drawn and live. Every engine gets the page with
    its real CSP, so tests read state through locators (Firefox over BiDi runs `evaluate` as eval,
    which the CSP forbids); `axe=True` adds axe-core the CSP-compatible way (axe_harness.py)."""
    opened = browser.new_context(reduced_motion="reduce", **context)
    if axe:
        axe_harness.install(opened, site.base)
    page = opened.new_page()
    goto(page, site.base, route)
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE)
    return page


def goto(page: Page, base: str, route: str, ready: str | None = None) -> None:
    """Open `route` (`#/...`) and wait until the page has drawn it (`main[data-ready]`), not for a time."""
    page.goto(f"{base}/{route}")
    expect(page.locator("#view")).to_have_attribute("data-ready", ready or route or "#/", timeout=LIVE)


def type_into(field: Any, text: str) -> None:
    """Click a text field and type, as a person does (Playwright's `fill` runs script in the page,
    which the CSP refuses in Firefox)."""
    field.click()
    field.page.keyboard.type(text)


def card(page: Page, column: str, title: str) -> Any:
    return page.locator(f'section[data-column="{column}"] li.card', has_text=title)


def test_watch_a_task_go_ready_running_completed_while_a_worker_runs(
    browsers: dict[str, Browser], engine: str, fresh_site: Site
) -> None:
    page = open_board(browsers[engine], fresh_site, "#/p/live")
    started = time.monotonic()
    task = fresh_site.queue.create({"project": "live", "title": "Render the report", "kind": "render"})
    expect(card(page, "ready", "Render the report")).to_be_visible(timeout=LIVE)
    first_push = time.monotonic() - started

    release = threading.Event()
    worker = Worker("browser-worker", project="live", poll_interval=0.1, lease_seconds=30)

    @worker.handler("render")
    async def render(claimed: Task, job: Job) -> dict[str, Any]:
        await job.progress(0.5, "half way")
        while not release.is_set():
            await anyio.sleep(0.05)
        return {"pages": 3}

    stats: list[Any] = []
    thread = threading.Thread(
        target=lambda: stats.append(worker.run_sync(fresh_site.base + "/mcp", max_tasks=1, handle_signals=False)),
        daemon=True,
    )
    thread.start()
    running = card(page, "running", "Render the report")
    expect(running).to_be_visible(timeout=LIVE)
    expect(running).to_contain_text("browser-worker")
    expect(running.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "50", timeout=LIVE)
    expect(card(page, "ready", "Render the report")).to_have_count(0)
    # the polite live region told screen-reader users
    expect(page.locator("#announcer")).to_contain_text("now running", timeout=LIVE)
    release.set()
    expect(card(page, "completed", "Render the report")).to_be_visible(timeout=LIVE)
    thread.join(timeout=30)
    assert stats and stats[0].completed == 1
    assert fresh_site.queue.get(task.id).result == {"pages": 3}
    conn = page.locator("#conn")  # the page's counters, read without running script (the CSP)
    assert int(conn.get_attribute("data-changes") or 0) >= 3  # pushed, never polled
    assert int(conn.get_attribute("data-updates") or 0) >= 3
    assert first_push < 3.0, f"first live update took {first_push:.2f}s"


def test_open_a_workflow_and_see_its_critical_path(browsers: dict[str, Browser], engine: str, site: Site) -> None:
    page = open_board(browsers[engine], site, "#/")
    page.get_by_role("link", name="Release 1.2").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Release 1.2")
    path = [site.ids["workflow_refs"][ref] for ref in ("server", "tests", "ship")]
    critical = page.locator('a.node[data-critical="true"]')
    expect(critical).to_have_count(3)
    assert sorted(node.get_attribute("data-task-id") for node in critical.all()) == sorted(path)
    expect(page.locator("ol.critical-path li")).to_have_text(
        ["Build the server", "Integration tests", "Ship the release"]
    )
    expect(page.locator("path.edge.critical")).to_have_count(2)
    # a node is a link to its task
    page.locator(f'a.node[data-task-id="{path[0]}"]').click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Build the server")


def test_retry_a_failed_task_and_see_it_return_to_ready(
    browsers: dict[str, Browser], engine: str, fresh_site: Site
) -> None:
    page = open_board(browsers[engine], fresh_site)
    failed = card(page, "failed", "Migrate the old database")
    failed.get_by_role("button", name="Retry Migrate the old database").click()
    expect(card(page, "ready", "Migrate the old database")).to_be_visible(timeout=LIVE)
    expect(page.locator('section[data-column="failed"] .count')).to_have_text("0")
    expect(page.locator("#announcer")).to_contain_text("Migrate the old database", timeout=LIVE)
    assert fresh_site.queue.get(fresh_site.ids["Migrate the old database"]).status.value == "ready"


def test_cancel_asks_first_and_keep_it_changes_nothing(browsers: dict[str, Browser], fresh_site: Site) -> None:
    page = open_board(browsers["chromium"], fresh_site)
    target = card(page, "ready", "Translate the README")
    target.get_by_role("button", name="Cancel Translate the README").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Cancel “Translate the README”?")
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    assert fresh_site.queue.get(fresh_site.ids["Translate the README"]).status.value == "ready"
    target.get_by_role("button", name="Cancel Translate the README").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel task").click()
    expect(card(page, "cancelled", "Translate the README")).to_be_visible(timeout=LIVE)
    # release of a stuck lease asks too, and then the task is ready again
    card(page, "running", "Refactor the parser").get_by_role("button", name="Release Refactor the parser").click()
    page.get_by_role("dialog").get_by_role("button", name="Release lease").click()
    expect(card(page, "ready", "Refactor the parser")).to_be_visible(timeout=LIVE)


def test_filter_and_search(browsers: dict[str, Browser], engine: str, site: Site) -> None:
    page = open_board(browsers[engine], site)
    type_into(page.get_by_label("Search"), "parser")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("li.card")).to_have_count(1)
    expect(page.locator("li.card")).to_contain_text("Refactor the parser")
    expect(page.locator(".summary")).to_have_text("1 task match the filters.")
    page.get_by_role("link", name="Clear filters").click()
    expect(page.locator("li.card")).to_have_count(16)
    type_into(page.get_by_label("Kind"), "code")
    page.keyboard.press("Shift+Tab")  # to the status list: choose by typing, as with a keyboard
    expect(page.get_by_label("Status")).to_be_focused()
    page.keyboard.type("Com")
    expect(page.get_by_label("Status")).to_have_value("completed")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("section.column")).to_have_count(1)
    expect(page.locator("li.card h3")).to_have_text(["Fix the login bug", "Update dependencies"])
    goto(page, site.base, "#/p/demo?worker=agent-bob")
    expect(page.locator("li.card")).to_have_count(1)
    expect(page.locator("li.card")).to_contain_text("Triage new issues")


def test_task_page_shows_everything_and_takes_a_note_and_a_priority(
    browsers: dict[str, Browser], fresh_site: Site
) -> None:
    page = open_board(browsers["chromium"], fresh_site)
    page.get_by_role("link", name="Fix the login bug").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Fix the login bug")
    expect(page.locator("section", has=page.get_by_role("heading", name="Result"))).to_contain_text('"ok": true')
    history = page.locator("table tbody tr")
    expect(history).to_have_count(3)
    note = page.get_by_role("textbox", name="Note")
    note.fill("Verified on staging")
    page.get_by_role("combobox", name="Priority").select_option("low")
    # an agent writes on the task meanwhile: the page updates live and keeps what the user typed and chose
    fresh_site.queue.add_note(fresh_site.ids["Fix the login bug"], "agent was here", actor="agent-ada")
    expect(page.get_by_role("heading", name="Notes (1)")).to_be_visible(timeout=LIVE)
    expect(note).to_have_value("Verified on staging")
    expect(page.get_by_role("combobox", name="Priority")).to_have_value("low")
    page.get_by_role("button", name="Add note").click()
    expect(page.get_by_role("heading", name="Notes (2)")).to_be_visible(timeout=LIVE)
    expect(history).to_have_count(5)
    expect(note).to_have_value("")
    page.get_by_role("button", name="Set priority").click()
    expect(page.locator("dl.fields .p-low")).to_be_visible(timeout=LIVE)
    assert fresh_site.queue.get(fresh_site.ids["Fix the login bug"]).priority.value == "low"


def test_reconnects_and_resyncs_after_the_server_went_away(browsers: dict[str, Browser], tmp_path: Any) -> None:
    from tests.browser.conftest import serve_demo

    sites = serve_demo(tmp_path)
    site = next(sites)
    port = int(site.base.rsplit(":", 1)[1])
    page = open_board(browsers["chromium"], site)
    sites.close()  # the server stops
    expect(page.locator("#conn")).to_have_attribute("data-state", "down", timeout=LIVE)
    # a change while the page cannot hear about it
    from mcp_taskqueue.queue import TaskQueue
    from mcp_taskqueue.store import Store

    queue = TaskQueue(Store(site.db))
    queue.create({"project": "demo", "title": "Made while offline", "priority": "critical"})
    with http_server(site.db, port=port):
        expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=20_000)
        expect(card(page, "ready", "Made while offline")).to_be_visible(timeout=LIVE)
        assert int(page.locator("#conn").get_attribute("data-resyncs") or 0) >= 1


def test_lease_time_left_counts_down_between_pushes(browsers: dict[str, Browser], fresh_site: Site) -> None:
    """A hung worker sends nothing, so nothing is pushed: the lease left must still count down."""
    task = fresh_site.queue.create({"project": "lease", "title": "Long job"})
    assert fresh_site.queue.claim("agent-slow", project="lease", lease_seconds=80) is not None
    page = open_board(browsers["chromium"], fresh_site, "#/p/lease")
    lease = card(page, "running", "Long job").locator("li", has_text="lease")
    for where in (lease, None):
        if where is None:  # the task page's "Lease" field too
            goto(page, fresh_site.base, f"#/t/{task.id}")
            where = page.locator("dd", has_text=" left")
        text = where.inner_text()
        updates = page.locator("#conn").get_attribute("data-updates")
        expect(where).not_to_have_text(text, timeout=LIVE)
        assert page.locator("#conn").get_attribute("data-updates") == updates  # ticked, not re-read
        seconds = [int(m.group(1)) for m in map(re.compile(r"(\d+)s").search, (text, where.inner_text())) if m]
        assert len(seconds) == 2 and seconds[1] < seconds[0] <= 80, (text, where.inner_text())


def test_charts_draw_a_bucket_that_stands_alone(browsers: dict[str, Browser], site: Site) -> None:
    """Failure rate and claim latency are null in buckets without work: a lone value must still show."""
    page = open_board(browsers["chromium"], site, "#/p/demo/charts")
    for title in ("Failure rate", "Claim latency (median seconds)"):
        figure = page.locator("figure.chart", has=page.locator("figcaption", has_text=title))
        values = [t for t in figure.locator("tbody td:nth-child(2)").all_text_contents() if t != "—"]
        assert values, f"{title}: the demo has work in the last hour"
        expect(figure.locator("svg circle.point")).to_have_count(len(values))
        assert all((box := p.bounding_box()) and box["width"] > 0 for p in figure.locator("svg circle.point").all())


def test_a_long_history_is_cut_and_shown_in_full_on_request(browsers: dict[str, Browser], fresh_site: Site) -> None:
    task_id = fresh_site.ids["Fix the login bug"]  # created, claimed, complete
    for i in range(510):
        fresh_site.queue.add_note(task_id, f"note {i}", actor="agent-ada")
    page = open_board(browsers["chromium"], fresh_site, f"#/t/{task_id}")
    rows = page.locator('section[aria-labelledby="h-history"] tbody tr')
    expect(page.get_by_role("heading", name="History (the newest 500 events)")).to_be_visible()
    expect(rows).to_have_count(500)
    page.get_by_role("button", name="Show the full history").click()
    expect(page.get_by_role("heading", name="History (513 events)")).to_be_visible(timeout=LIVE)
    expect(rows).to_have_count(513)
    expect(rows.first).to_contain_text("created")
    expect(page.get_by_role("heading", name="Notes (510)")).to_be_visible()
    expect(page.get_by_role("button", name="Show the full history")).to_have_count(0)


def test_a_workflow_page_follows_its_tasks_live(browsers: dict[str, Browser], engine: str, fresh_site: Site) -> None:
    workflow, client = fresh_site.ids["workflow"], fresh_site.ids["workflow_refs"]["client"]
    page = open_board(browsers[engine], fresh_site, f"#/w/{workflow}")
    node = page.locator(f'a.node[data-task-id="{client}"]')
    expect(node).to_have_attribute("aria-label", "Build the client: ready")
    fresh_site.queue.cancel(client, reason="another process cancels it")
    expect(node).to_have_attribute("aria-label", "Build the client: cancelled", timeout=LIVE)
    assert int(page.locator("#conn").get_attribute("data-changes") or 0) >= 1  # pushed, not re-opened

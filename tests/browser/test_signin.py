"""The board on a server with tokens, as a person meets it in Chromium and Firefox: the sign-in
form, a read-only token that sees everything and is told why it cannot act, a write token that
acts, a project-limited token that sees only its project; axe on each of these states. Also the
board under `serve --transport sse` alone, and the charts' time ranges."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Request, expect

from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store
from tests.board_data import DEMO_COUNTS, populate
from tests.browser import axe_harness
from tests.browser.conftest import Site
from tests.browser.test_journeys import LIVE, card, goto, type_into
from tests.browser.test_quality import assert_accessible
from tests.servers import http_server
from tests.service_servers import cli, make_token, serve


class TokenSite(Site):
    """A served, populated board whose server needs tokens; `tokens` by name."""

    tokens: dict[str, str]


@pytest.fixture
def token_site(tmp_path: Path) -> Iterator[TokenSite]:
    db = tmp_path / "board.db"
    store = Store(db)
    queue = TaskQueue(store)
    ids = populate(queue)
    tokens = {
        "reader": make_token(db, "reader", "read"),
        "writer": make_token(db, "writer", "read,write"),
        "opsie": make_token(db, "opsie", "read,write", "ops"),
        "worker": make_token(db, "worker", "claim"),
    }
    with serve(db) as server:
        site = TokenSite(server.base, queue, ids, db)
        site.tokens = tokens
        yield site
    store.close()


def open_signed_out(browser: Browser, site: Site, route: str, requests: list[Request]) -> Page:
    context = browser.new_context(reduced_motion="reduce")
    axe_harness.install(context, site.base)
    page = context.new_page()
    page.on("request", lambda request: requests.append(request))
    goto(page, site.base, route, ready="sign-in")
    return page


def sign_in(page: Page, token: str, ready: str) -> None:
    type_into(page.get_by_label("Access token"), token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#view")).to_have_attribute("data-ready", ready, timeout=LIVE)


def test_sign_in_read_only_sees_but_may_not_act_write_acts(
    browsers: dict[str, Browser], engine: str, token_site: TokenSite
) -> None:
    site = token_site
    requests: list[Request] = []
    page = open_signed_out(browsers[engine], site, "#/p/demo", requests)
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(page.locator("#conn")).to_have_attribute("data-state", "down")
    assert_accessible(page, "sign-in form")
    # a token the server does not know: said so, and the form is back
    sign_in(page, "tq_mistyped", "sign-in")
    expect(page.get_by_role("alert").filter(has_text="did not accept")).to_be_visible()
    assert_accessible(page, "sign-in form with a refused token")
    # a real token without `read` (a worker's): told so, and back at the form to try another
    sign_in(page, site.tokens["worker"], "sign-in")
    expect(page.get_by_role("alert").filter(has_text="may not read the board")).to_contain_text("'read'")
    # read-only: the whole board, live, and a clear refusal of an action
    sign_in(page, site.tokens["reader"], "#/p/demo")
    expect(page.locator("li.card")).to_have_count(16)
    expect(page.locator("#who")).to_contain_text("Signed in as reader (read)")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE)
    failed = site.ids["Migrate the old database"]
    card(page, "failed", "Migrate the old database").get_by_role(
        "button", name="Retry Migrate the old database"
    ).click()
    flash = page.locator("#flash")
    expect(flash).to_be_visible(timeout=LIVE)
    expect(flash).to_contain_text("Could not retry “Migrate the old database”: this needs scope 'write'")
    assert_accessible(page, "signed in, an action refused")
    assert site.queue.get(failed).status.value == "failed"
    # live with a token: a change by another process arrives over the feed
    site.queue.create({"project": "demo", "title": "Seen by the reader", "priority": "critical"})
    expect(card(page, "ready", "Seen by the reader")).to_be_visible(timeout=LIVE)
    # the token lives in this tab's session: a reload keeps it, signing out forgets it
    page.reload()
    expect(page.locator("#view")).to_have_attribute("data-ready", "#/p/demo", timeout=LIVE)
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#view")).to_have_attribute("data-ready", "sign-in")
    page.reload()
    expect(page.locator("#view")).to_have_attribute("data-ready", "sign-in", timeout=LIVE)
    # a write token acts, and the history names it
    sign_in(page, site.tokens["writer"], "#/p/demo")
    card(page, "failed", "Migrate the old database").get_by_role(
        "button", name="Retry Migrate the old database"
    ).click()
    expect(card(page, "ready", "Migrate the old database")).to_be_visible(timeout=LIVE)
    assert site.queue.history(failed).events[-1].actor == "writer"
    # never in a URL (where logs keep it); always in the header of the data and feed requests
    for token in site.tokens.values():
        assert not [r.url for r in requests if token in r.url]
    sent = {r.url.split("?")[0].removeprefix(site.base): r.headers.get("authorization") for r in requests}
    assert sent["/board/events"] == f"Bearer {site.tokens['writer']}"
    assert sent["/board/api/me"] == f"Bearer {site.tokens['writer']}"
    # revoked while the page is open: the feed ends, and the page asks for a token again
    assert cli(site.db, "token", "revoke", "writer").returncode == 0
    expect(page.locator("#view")).to_have_attribute("data-ready", "sign-in", timeout=LIVE)
    expect(page.get_by_role("alert")).to_contain_text("no longer accepts this token")


def test_a_project_limited_token_sees_only_its_project(
    browsers: dict[str, Browser], engine: str, token_site: TokenSite
) -> None:
    site = token_site
    page = open_signed_out(browsers[engine], site, "#/", [])
    sign_in(page, site.tokens["opsie"], "#/")
    expect(page.locator("#who")).to_contain_text("Signed in as opsie (read, write · ops)")
    expect(page.locator("ul.projects > li h2")).to_have_text(["ops"])
    assert_accessible(page, "projects of a project-limited token")
    goto(page, site.base, "#/p/demo")
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    expect(page.locator("main")).to_contain_text("may only see project(s) ops")
    assert_accessible(page, "a project it may not see")
    goto(page, site.base, f"#/t/{site.ids['Refactor the parser']}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    goto(page, site.base, "#/p/ops")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE)
    site.queue.create({"project": "demo", "title": "Not for ops"})
    site.queue.create({"project": "ops", "title": "For ops", "priority": "critical"})
    expect(card(page, "ready", "For ops")).to_be_visible(timeout=LIVE)
    expect(page.locator("li.card", has_text="Not for ops")).to_have_count(0)
    goto(page, site.base, "#/p/ops/charts")
    expect(page.get_by_role("heading", level=1)).to_have_text("ops: charts")


def test_the_board_under_transport_sse_alone_is_served_and_live(browsers: dict[str, Browser], tmp_path: Path) -> None:
    db = tmp_path / "board.db"
    store = Store(db)
    queue = TaskQueue(store)
    ids = populate(queue)
    with http_server(db, transport="sse") as base:
        context = browsers["chromium"].new_context(reduced_motion="reduce")
        page = context.new_page()
        goto(page, base, "#/p/demo")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE)
        queue.create({"project": "demo", "title": "Made beside an SSE server", "priority": "critical"})
        expect(card(page, "ready", "Made beside an SSE server")).to_be_visible(timeout=LIVE)
        card(page, "failed", "Migrate the old database").get_by_role(
            "button", name="Retry Migrate the old database"
        ).click()
        expect(card(page, "ready", "Migrate the old database")).to_be_visible(timeout=LIVE)
        assert queue.get(ids["Migrate the old database"]).status.value == "ready"
        context.close()
    store.close()


def throughput(page: Page) -> int:
    """Tasks completed over the whole range, from the throughput chart's data table."""
    figure = page.locator("figure", has_text="Throughput")
    expect(figure.locator("tbody tr")).to_have_count(30)
    return sum(int(text) for text in figure.locator("tbody td:nth-child(2)").all_text_contents())


def test_charts_offer_the_last_hour_day_and_week(browsers: dict[str, Browser], fresh_site: Site) -> None:
    # a task finished three hours ago: outside the last hour, inside the last day and week
    hours_ago = TaskQueue(Store(fresh_site.db), clock=lambda: time.time() - 3 * 3600)
    old = hours_ago.create({"project": "demo", "title": "Finished this morning", "priority": "critical"})
    claimed = hours_ago.claim("agent-old", project="demo")
    assert claimed is not None and claimed.id == old.id
    hours_ago.complete(old.id, "agent-old", {"ok": True})
    context = browsers["chromium"].new_context(reduced_motion="reduce")
    page = context.new_page()
    goto(page, fresh_site.base, "#/p/demo/charts")
    expect(page.locator("#range-summary")).to_have_text("The last hour in 2-minute buckets; updated live.")
    expect(page.get_by_role("link", name="Last hour")).to_have_attribute("aria-current", "true")
    hour = throughput(page)
    page.get_by_role("link", name="Last 24 hours").click()
    expect(page.locator("#view")).to_have_attribute("data-ready", "#/p/demo/charts?range=24h", timeout=LIVE)
    expect(page.locator("#range-summary")).to_have_text("The last 24 hours in 48-minute buckets; updated live.")
    expect(page.get_by_role("link", name="Last 24 hours")).to_have_attribute("aria-current", "true")
    assert throughput(page) == hour + 1
    page.get_by_role("link", name="Last 7 days").click()
    expect(page.locator("#view")).to_have_attribute("data-ready", "#/p/demo/charts?range=7d", timeout=LIVE)
    assert throughput(page) == hour + 1
    assert hour == DEMO_COUNTS["completed"]  # populate completes them now
    context.close()

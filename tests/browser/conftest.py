"""Real browsers for the board: Debian's Chromium and Firefox ESR driven by Playwright.

Every test here is marked `browser` (skip them locally with `-m "not browser"`; CI runs them).
Browsers are never downloaded: `make test` installs the Debian packages when they are missing.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store
from tests.board_data import populate
from tests.servers import http_server

CHROMIUM = "/usr/bin/chromium"
FIREFOX_RELAY = Path(__file__).with_name("firefox_bidi.py")
ENGINES = ("chromium", "firefox")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


# Module scope, not session: Playwright's sync API keeps an asyncio loop running in this thread
# while it is open, and the rest of the suite (anyio tests) needs the thread free afterwards.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


def firefox_executable(folder: Path) -> str:
    """A one-line launcher that runs Firefox ESR behind the BiDi relay (firefox_bidi.py)."""
    script = folder / "firefox-esr-bidi"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FIREFOX_RELAY}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def launch(playwright: Playwright, engine: str, folder: Path) -> Browser:
    if engine == "chromium":
        return playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--headless=new", "--disable-gpu", "--font-render-hinting=none"],
        )
    return playwright.firefox.launch(channel="moz-firefox", executable_path=firefox_executable(folder))


@pytest.fixture(scope="module")
def browsers(playwright: Playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Browser]]:
    """Each engine launched once per module, on first use."""
    opened: dict[str, Browser] = {}
    folder = tmp_path_factory.mktemp("browsers")

    class Lazy(dict[str, Browser]):
        def __missing__(self, engine: str) -> Browser:
            opened[engine] = self[engine] = launch(playwright, engine, folder)
            return opened[engine]

    yield Lazy()
    for browser in opened.values():
        browser.close()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Site:
    """A served, populated board: base URL, the queue on the same file, and the demo ids."""

    def __init__(self, base: str, queue: TaskQueue, ids: dict[str, Any], db: Path) -> None:
        self.base, self.queue, self.ids, self.db = base, queue, ids, db


def serve_demo(folder: Path) -> Iterator[Site]:
    db = folder / "board.db"
    store = Store(db)
    queue = TaskQueue(store)
    ids = populate(queue)
    with http_server(db) as base:
        yield Site(base, queue, ids, db)
    store.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Shared by read-only tests of a module: nothing may change it."""
    yield from serve_demo(tmp_path_factory.mktemp("site"))


@pytest.fixture
def fresh_site(tmp_path: Path) -> Iterator[Site]:
    """A board of its own, for a test that changes things."""
    yield from serve_demo(tmp_path)


def update_baselines() -> bool:
    """`make board-baselines` (BOARD_BASELINES=update) rewrites the screenshots on purpose."""
    return os.environ.get("BOARD_BASELINES") == "update"

"""`mcp-taskqueue top`, driven with textual's pilot: locally on the file and over `--url`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from textual.widgets import OptionList, Static

from mcp_taskqueue.cli import main
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store
from mcp_taskqueue.top import LocalSource, RemoteSource, TopApp, board_base
from tests.board_data import DEMO_COUNTS, populate
from tests.servers import http_server

pytestmark = pytest.mark.anyio


def column_titles(app: TopApp, key: str) -> list[str]:
    widget = app.query_one(f"#col-{key}", OptionList)
    return [str(widget.get_option_at_index(i).prompt).split("\n")[0] for i in range(widget.option_count)]


async def wait_for(pilot: Any, check: Any, seconds: float = 15.0) -> None:
    """Let the app run until `check()` holds (generous: the machine is shared)."""
    for _ in range(int(seconds / 0.1)):
        if check():
            return
        await pilot.pause(0.1)
    raise AssertionError("the terminal board did not show the change in time")


@pytest.fixture
def demo(tmp_path: Path) -> tuple[Path, TaskQueue, dict[str, Any]]:
    db = tmp_path / "top.db"
    queue = TaskQueue(Store(db))
    return db, queue, populate(queue)


async def test_local_board_columns_detail_live_updates_and_actions(
    demo: tuple[Path, TaskQueue, dict[str, Any]],
) -> None:
    db, queue, ids = demo
    app = TopApp(LocalSource(db))
    async with app.run_test(size=(180, 50)) as pilot:
        await wait_for(pilot, lambda: app.refreshes >= 1)
        counts = {key: app.query_one(f"#col-{key}", OptionList).option_count for key in DEMO_COUNTS}
        assert counts == {key: n for key, n in DEMO_COUNTS.items()} | {"ready": 7}  # + ops
        assert "Refactor the parser" in column_titles(app, "running")
        assert str(app.query_one("#col-failed", OptionList).border_title) == "Failed 1"

        # another process (here: another connection) adds a task; the board shows it, pushed by the watcher
        queue.create({"project": "ops", "title": "Appears by itself", "priority": "critical"})
        await wait_for(pilot, lambda: "Appears by itself" in column_titles(app, "ready"))

        # move to the failed column, the detail pane shows the task, r retries it
        await pilot.press("right", "right", "right")
        assert app.focused is app.query_one("#col-failed", OptionList)
        await pilot.press("down")
        await wait_for(pilot, lambda: "disk full" in str(app.query_one("#detail", Static).render()))
        await pilot.press("r")
        await wait_for(pilot, lambda: queue.get(ids["Migrate the old database"]).status.value == "ready")
        await wait_for(pilot, lambda: "Migrate the old database" in column_titles(app, "ready"))

        # release asks first: n keeps the lease, then l + y releases it
        await pilot.press("left", "left")
        assert app.focused is app.query_one("#col-running", OptionList)
        await pilot.press("down")
        await wait_for(pilot, lambda: app.selected in (ids["Refactor the parser"], ids["Triage new issues"]))
        chosen = app.selected
        assert chosen is not None
        await pilot.press("l")
        await pilot.press("n")
        await pilot.pause(0.3)
        assert queue.get(chosen).status.value == "running"
        await pilot.press("l")
        await pilot.press("y")
        await wait_for(pilot, lambda: queue.get(chosen).status.value == "ready")
        history = queue.history(chosen).events
        assert history[-1].action == "lease_revoked" and history[-1].actor == "top"

        # a refused action is reported, nothing changes
        await pilot.press("right", "right", "right", "down")  # completed column
        await wait_for(pilot, lambda: app.selected is not None and app.cards[app.selected].column == "completed")
        done = app.selected
        await pilot.press("r")
        await pilot.pause(0.5)
        assert queue.get(done).status.value == "completed"  # type: ignore[arg-type]
        await pilot.press("q")


async def test_remote_board_over_url(demo: tuple[Path, TaskQueue, dict[str, Any]]) -> None:
    db, queue, ids = demo
    with http_server(db) as base:
        assert board_base(base + "/mcp") == base
        app = TopApp(RemoteSource(base + "/mcp"))
        async with app.run_test(size=(180, 50)) as pilot:
            await wait_for(pilot, lambda: app.refreshes >= 1)
            assert "Refactor the parser" in column_titles(app, "running")
            queue.create({"project": "ops", "title": "Seen over the wire", "priority": "critical"})
            await wait_for(pilot, lambda: "Seen over the wire" in column_titles(app, "ready"))
            # cancel a ready task through the server, confirming
            app.query_one("#col-ready", OptionList).focus()
            await pilot.press("down")
            await wait_for(pilot, lambda: app.selected is not None)
            target = app.selected
            await pilot.press("c", "y")
            await wait_for(pilot, lambda: queue.get(target).status.value == "cancelled")  # type: ignore[arg-type]
            assert queue.history(target).events[-1].actor == "board"  # type: ignore[arg-type]
            await pilot.press("q")
    assert ids


def test_top_is_a_cli_command() -> None:
    result = CliRunner().invoke(main, ["top", "--help"])
    assert result.exit_code == 0 and "retry" in result.output and "--project" in result.output


async def test_remote_board_that_refuses_us_says_why_and_exits_cleanly(
    demo: tuple[Path, TaskQueue, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server with tokens and no $TASKQUEUE_TOKEN, or no server at all: a message, not a traceback."""
    from tests.service_servers import make_token, serve

    db, _, _ = demo
    make_token(db, "reader", "read")
    monkeypatch.delenv("TASKQUEUE_TOKEN", raising=False)
    with serve(db) as server:
        app = TopApp(RemoteSource(server.base + "/mcp"))
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.failure is not None)
    assert app.return_code == 1 and app.failure is not None and "TASKQUEUE_TOKEN" in app.failure
    gone = TopApp(RemoteSource(server.base + "/mcp"))  # that server has stopped
    async with gone.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: gone.failure is not None)
    assert gone.return_code == 1 and server.base.removeprefix("http://") in (gone.failure or "")

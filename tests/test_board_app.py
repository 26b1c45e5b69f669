"""The board as an MCP App: `show_board` in toolset `board`, bound to `ui://taskqueue/board`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp_types import Implementation
from pydantic_core import to_jsonable_python

from mcp_taskqueue.board import Board, Filters
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.app import build_server
from mcp_taskqueue.server.board_routes import web_file
from mcp_taskqueue.store import Store
from tests.board_data import DEMO_COUNTS, populate
from tests.mcp_calls import call, call_error

pytestmark = pytest.mark.anyio


@pytest.fixture
def populated(db_path: Path) -> dict[str, object]:
    store = Store(db_path)
    ids = populate(TaskQueue(store))
    store.close()
    return ids


async def test_show_board_is_bound_to_the_app_resource(db_path: Path, populated: dict[str, object]) -> None:
    async with Client(build_server(db_path), client_info=Implementation(name="host", version="1")) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        tool = tools["show_board"]
        assert tool.meta == {"ui": {"resourceUri": "ui://taskqueue/board"}}
        assert tool.annotations is not None and tool.annotations.read_only_hint
        assert tool.output_schema is not None and {"counts", "cards"} <= set(tool.output_schema["properties"])
        resource = (await client.read_resource("ui://taskqueue/board")).contents[0]
        assert resource.mime_type == APP_MIME_TYPE
        html = resource.text  # type: ignore[union-attr]
        # self-contained: the board's own stylesheet and script inlined, nothing is fetched
        assert web_file("board.css").decode() in html and web_file("board.js").decode() in html
        assert "ui/initialize" in html and "board_read" in html and "board_act" in html
        assert "<script src" not in html and "<link" not in html and "/board/static" not in html
        # the full board: every view and every action, and the page's own skeleton (dialog, live region)
        for name in ("showProjects", "showBoard", "showTask", "showWorkflow", "showCharts", "filterForm"):
            assert f"async function {name}(" in html or f"function {name}(" in html, name
        for action in ("cancel", "retry", "release", '"priority"', '"note"'):
            assert action in html, action
        assert '<dialog id="confirm"' in html and 'id="announcer"' in html and 'id="view"' in html
        # the board reads through the host when the App's bridge is there, and over HTTP otherwise
        app, board = html.index("window.taskqueueBridge = {"), html.index("const bridge = window.taskqueueBridge")
        assert app < board


async def test_show_board_degrades_to_a_compact_text_summary(db_path: Path, populated: dict[str, object]) -> None:
    async with Client(build_server(db_path)) as client:
        result = await client.call_tool("show_board", {"project": "demo"})
        assert not result.is_error
        board = result.structured_content
        assert board is not None
        assert board["counts"] == DEMO_COUNTS
        per_column = [sum(1 for c in board["cards"] if c["column"] == key) for key in DEMO_COUNTS]
        assert per_column == [min(3, n) for n in DEMO_COUNTS.values()]  # no Apps: a few cards per column
        running = [c for c in board["cards"] if c["column"] == "running"]
        assert {c["worker"] for c in running} == {"agent-ada", "agent-bob"}
        text = result.content[0].text  # type: ignore[union-attr]
        assert text.splitlines()[0] == "demo: 6 ready, 2 running, 3 blocked, 1 failed, 3 completed, 1 cancelled"
        assert "Refactor the parser (agent-ada)" in text and populated["Migrate the old database"] in text
        assert len(text) < 600 and not text.startswith("{")
        everything = await client.call_tool("show_board", {})
        counts = everything.structured_content["counts"]  # type: ignore[index]
        assert sum(counts.values()) == 17 and list(counts) == list(DEMO_COUNTS)
        assert json.loads(json.dumps(everything.structured_content))["cards"][0]["column"] == "ready"


async def test_the_board_toolset_alone_and_without_it(db_path: Path) -> None:
    async with Client(build_server(db_path, toolsets="board")) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert list(tools) == ["show_board", "board_read", "board_act"]
        for name in ("board_read", "board_act"):  # the App's bridge: hidden from the model
            assert tools[name].meta == {"ui": {"resourceUri": "ui://taskqueue/board", "visibility": ["app"]}}
        assert tools["board_read"].annotations.read_only_hint  # type: ignore[union-attr]
        assert tools["board_act"].annotations.destructive_hint  # type: ignore[union-attr]
    async with Client(build_server(db_path, toolsets="tasks,queue")) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert "show_board" not in names and "claim_task" in names
        with pytest.raises(Exception, match="ui://taskqueue/board|not found|Unknown"):
            await client.read_resource("ui://taskqueue/board")
    with pytest.raises(ValueError, match="board"):
        build_server(db_path, toolsets="bored")
    assert EXTENSION_ID == "io.modelcontextprotocol/ui"


async def test_the_apps_bridge_answers_what_the_browser_boards_api_answers(
    db_path: Path, populated: dict[str, object]
) -> None:
    """board_read gives the App the same JSON as GET /board/api/... (one board.py behind both);
    board_act acts as POST /board/api/tasks/{id}/{action} does."""
    store = Store(db_path)
    board = Board(TaskQueue(store))
    failed = str(populated["Migrate the old database"])
    async with Client(build_server(db_path)) as client:
        view = await call(client, "board_read", path="/board/api/board?project=demo&limit=2")
        expected = to_jsonable_python(board.view(Filters(project="demo"), limit=2))
        assert {**view, "now": None} == {**expected, "now": None}
        assert [len(c["cards"]) for c in view["columns"]] == [min(2, n) for n in DEMO_COUNTS.values()]
        detail = await call(client, "board_read", path=f"/board/api/tasks/{failed}")
        assert detail["task"]["title"] == "Migrate the old database" and detail["column"] == "failed"
        drawing = await call(client, "board_read", path=f"/board/api/workflows/{populated['workflow']}")
        assert sum(1 for n in drawing["nodes"] if n["critical"]) == 3
        charts = await call(client, "board_read", path="/board/api/charts?project=demo&minutes=60")
        assert len(charts["buckets"]) == 30
        # refusals in the server's one error format, with the board's codes
        assert "not_found" in await call_error(client, "board_read", path="/board/api/tasks/nope")
        assert "not_found" in await call_error(client, "board_read", path="/etc/passwd")
        assert "validation_failed" in await call_error(client, "board_read", path="/board/api/charts?minutes=x")
        assert "not_found" in await call_error(client, "board_act", path=f"/board/api/tasks/{failed}/explode")
        # an action, recorded as the board's (no tokens), exactly as over HTTP
        done = await call(client, "board_act", path=f"/board/api/tasks/{failed}/retry")
        assert done["status"] == "ready"
        note = await call(client, "board_act", path=f"/board/api/tasks/{failed}/note", body={"text": "from the App"})
        assert note["actor"] == "board"
    assert board.queue.get(failed).status.value == "ready"
    store.close()

"""The board as an MCP App: `show_board` in toolset `board`, bound to `ui://taskqueue/board`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp_types import Implementation

from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.app import build_server
from mcp_taskqueue.store import Store
from tests.board_data import DEMO_COUNTS, populate

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
        # self-contained: the stylesheet and the script are inlined, nothing is fetched
        assert "/*{{" not in html and "ui/initialize" in html and ".column" in html
        assert (
            "<script src" not in html
            and "<link" not in html
            and "http" not in html.split("<body>")[1].split("window.parent")[0]
        )


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
        assert [t.name for t in (await client.list_tools()).tools] == ["show_board"]
    async with Client(build_server(db_path, toolsets="tasks,queue")) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert "show_board" not in names and "claim_task" in names
        with pytest.raises(Exception, match="ui://taskqueue/board|not found|Unknown"):
            await client.read_resource("ui://taskqueue/board")
    with pytest.raises(ValueError, match="board"):
        build_server(db_path, toolsets="bored")
    assert EXTENSION_ID == "io.modelcontextprotocol/ui"

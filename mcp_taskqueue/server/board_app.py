"""The board inside MCP hosts: toolset `board`, tool `show_board` and the MCP App `ui://taskqueue/board`.

Built with the SDK's MCP Apps extension (`mcp.server.apps`): the tool carries
`_meta.ui.resourceUri`, and the resource is one self-contained HTML document (the board's
stylesheet and a small renderer inlined, since the host's sandboxed iframe loads nothing else).
Hosts that render MCP Apps show the columns; every host, and the model, gets a compact text
summary, with fewer cards for a client that did not negotiate Apps.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.apps import Apps, client_supports_apps
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel

from mcp_taskqueue.board import Board, Filters
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.board_routes import web_file
from mcp_taskqueue.server.tools import READ, ProjectArg, reply, run_queue

APP_URI = "ui://taskqueue/board"
CARDS_FOR_APPS = 20
CARDS_FOR_TEXT = 3


# What the App draws of a card (a subset of board.Card; kept out of the output schema: tools/list
# is paid for on every turn).
SUMMARY_FIELDS = frozenset({"id", "title", "column", "priority", "worker", "progress"})


class BoardSummary(BaseModel):
    """Tasks per column (ready, running, blocked, failed, completed, cancelled) and each column's first cards."""

    project: str | None = None
    counts: dict[str, int]
    cards: list[dict[str, Any]]  # board.Card's SUMMARY_FIELDS


def summary_text(summary: BoardSummary) -> str:
    """`demo: 6 ready, 2 running, ...` and the first cards of the columns that need a person."""
    head = ", ".join(f"{count} {key}" for key, count in summary.counts.items())
    lines = [f"{summary.project or 'all projects'}: {head}"]
    for key in ("running", "failed", "blocked"):
        cards = [c for c in summary.cards if c["column"] == key][:CARDS_FOR_TEXT]
        if cards:
            shown = "; ".join(
                c["title"]
                + (f" ({c['worker']})" if c.get("worker") else "")
                + (f" [{c['id']}]" if key == "failed" else "")
                for c in cards
            )
            lines.append(f"{key}: {shown}")
    return "\n".join(lines)


def app_html() -> str:
    """The App's document: web/app.html with the board's CSS and the App's script inlined."""
    html = web_file("app.html").decode()
    return html.replace("/*{{css}}*/", web_file("board.css").decode()).replace(
        "/*{{js}}*/", web_file("app.js").decode()
    )


def board_apps(queue: TaskQueue) -> Apps:
    """The `board` toolset as an MCP Apps extension (pass to `MCPServer(extensions=[...])`)."""
    apps = Apps()
    board = Board(queue)

    @apps.tool(resource_uri=APP_URI, name="show_board", annotations=READ)
    async def show_board(
        project: ProjectArg = None, ctx: Context | None = None
    ) -> Annotated[CallToolResult, BoardSummary]:
        """Show the live task board."""
        cards = CARDS_FOR_APPS if ctx is not None and client_supports_apps(ctx) else CARDS_FOR_TEXT
        view = await run_queue(board.view, Filters(project=project), cards)
        summary = BoardSummary(
            project=project,
            counts={col.key: col.count for col in view.columns},
            cards=[
                c.model_dump(mode="json", include=set(SUMMARY_FIELDS), exclude_none=True)
                for col in view.columns
                for c in col.cards
            ],
        )
        result = reply(summary)
        result.content = [TextContent(type="text", text=summary_text(summary))]
        return result

    apps.add_html_resource(
        APP_URI, app_html(), name="board", title="Task queue board", description="Live task board", prefers_border=True
    )
    return apps

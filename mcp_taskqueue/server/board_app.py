"""The board inside MCP hosts: toolset `board`, tool `show_board` and the MCP App `ui://taskqueue/board`.

Built with the SDK's MCP Apps extension (`mcp.server.apps`): the tool carries
`_meta.ui.resourceUri`, and the resource is one self-contained HTML document (the board's
stylesheet and a small renderer inlined, since the host's sandboxed iframe loads nothing else).
Hosts that render MCP Apps show the columns; every host, and the model, gets a compact text
summary, with fewer cards for a client that did not negotiate Apps.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from mcp.server.apps import Apps, client_supports_apps
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, ConfigDict
from pydantic_core import to_jsonable_python

from mcp_taskqueue.board import ACTION_SCOPES, Board, Filters
from mcp_taskqueue.errors import Forbidden
from mcp_taskqueue.identity import CURRENT_IDENTITY
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.board_routes import Viewer, act_path, action_of, open_access, read_path, web_file
from mcp_taskqueue.server.tools import DESTRUCTIVE, READ, ProjectArg, reply, run_queue

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


class BoardJSON(BaseModel):
    """What the browser board's `/board/api/...` answers for the same path (docs/board.md)."""

    model_config = ConfigDict(extra="allow")


def app_html() -> str:
    """The App's document: the browser board's own page (web/board.html) with its stylesheet and
    script inlined, preceded by web/app.js, the data source that reads through the host's bridge."""
    html = web_file("board.html").decode()
    head = html.index('<link rel="icon"')
    end = html.index("</head>")
    inline = (
        f"<style>\n{web_file('board.css').decode()}</style>\n"
        f"<script>\n{web_file('app.js').decode()}</script>\n"
        f'<script type="module">\n{web_file("board.js").decode()}</script>\n'
    )
    return html[:head] + inline + html[end:]


def _viewer() -> Viewer:
    """Who called the tool: the identity the server's guard found (no guard: open access)."""
    return Viewer.of(CURRENT_IDENTITY.get() or open_access(None))  # type: ignore[arg-type]


def _json(answer: Any) -> CallToolResult:
    data = to_jsonable_python(answer)
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


def act_with_scope(board: Board, viewer: Viewer, path: str, body: dict[str, Any]) -> Any:
    """`act_path` if the caller holds the action's scope (`board.ACTION_SCOPES`, as over HTTP)."""
    scope = ACTION_SCOPES.get(action_of(path) or "", "admin")
    if scope not in viewer.scopes:
        have = ", ".join(sorted(viewer.scopes)) or "none"
        raise Forbidden(f"this needs scope {scope!r}; token {viewer.actor!r} has {have}")
    return act_path(board, viewer, path, body)


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

    @apps.tool(resource_uri=APP_URI, visibility=["app"], name="board_read", annotations=READ)
    async def board_read(path: str) -> Annotated[CallToolResult, BoardJSON]:
        """For the board App only: the JSON the browser board's `GET path` answers (path: `/board/api/...` with query)."""
        return _json(await run_queue(read_path, board, _viewer(), path))

    @apps.tool(resource_uri=APP_URI, visibility=["app"], name="board_act", annotations=DESTRUCTIVE)
    async def board_act(path: str, body: dict[str, Any] | None = None) -> Annotated[CallToolResult, BoardJSON]:
        """For the board App only: a board action, `POST /board/api/tasks/{id}/{cancel|retry|release|priority|note}`."""
        return _json(await run_queue(act_with_scope, board, _viewer(), path, body or {}))

    apps.add_html_resource(
        APP_URI, app_html(), name="board", title="Task queue board", description="Live task board", prefers_border=True
    )
    return apps

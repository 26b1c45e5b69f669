"""The live board over HTTP: the page at `/` and `/board`, its JSON API and its live feed.

- `GET /`, `/board`: the single page (mcp_taskqueue/web/board.html); assets at `/board/static/`.
- `GET /board/api/...`: JSON from board.py (projects, board, column, tasks/{id}, workflows, charts).
- `POST /board/api/tasks/{id}/{action}`: cancel, retry, release, priority, note (JSON body).
- `GET /board/events`: Server-Sent Events fed by the server's `ResourceWatcher`: a `hello`
  event on connect, then `change` events `{"tasks": [...], "projects": [...], "workflows": [...]}`
  within ~0.2 s of a commit by any process on the store. Browsers reconnect by themselves
  (`retry: 1000`); the page resyncs everything after a reconnect.

Every request goes through `access(request, scope)`, which returns the actor's name: today
everyone is `board` with every scope; a server with tokens replaces `mcp.board_access`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

import anyio
import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.subscriptions import ResourcesListChanged, ResourceUpdated, ServerEvent
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from mcp_taskqueue import __version__
from mcp_taskqueue.board import ACTION_SCOPES, Board, Filters
from mcp_taskqueue.errors import TaskQueueError, ValidationFailed

log = logging.getLogger("mcp_taskqueue.board")

STATIC_TYPES = {"board.js": "text/javascript", "board.css": "text/css", "icon.svg": "image/svg+xml"}
ERROR_STATUS = {"not_found": 404, "validation_failed": 400, "forbidden": 403, "store_busy": 503}
KEEPALIVE_SECONDS = 15.0
COALESCE_SECONDS = 0.05
MAX_STREAMS = 200
# The page runs nothing but its own script and talks to nothing but this server.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class Forbidden(TaskQueueError):
    """The caller's token lacks the scope an action needs."""

    code = "forbidden"


Access = Callable[[Request, str], str]


def open_access(_request: Request, _scope: str) -> str:
    """Everyone may do everything, as `board` (a server without tokens)."""
    return "board"


def web_file(name: str) -> bytes:
    """A file shipped in mcp_taskqueue/web (package data)."""
    return (resources.files("mcp_taskqueue") / "web" / name).read_bytes()


def changes_of(events: list[ServerEvent]) -> dict[str, list[str]]:
    """Resource notifications -> what the page should refresh."""
    out: dict[str, set[str]] = {"tasks": set(), "projects": set(), "workflows": set()}
    for event in events:
        if isinstance(event, ResourcesListChanged):
            out["projects"].add("*")
        if not isinstance(event, ResourceUpdated):
            continue
        parts = event.uri.removeprefix("taskqueue://").split("/")
        if len(parts) == 2 and parts[0] in out:
            out[parts[0]].add(parts[1])
    return {key: sorted(values) for key, values in out.items()}


class BoardFeed:
    """Fans the watcher's notifications out to the open `/board/events` streams."""

    def __init__(self, mcp: MCPServer) -> None:
        self.mcp = mcp
        self.streams = 0

    async def stream(self) -> AsyncIterator[str]:
        watcher = self.mcp.watcher  # type: ignore[attr-defined]
        pending: list[ServerEvent] = []
        wake = anyio.Event()

        def listener(event: ServerEvent) -> None:
            if len(pending) < 10_000:  # beyond that the page resyncs anyway
                pending.append(event)
            wake.set()

        unsubscribe = watcher.bus.subscribe(listener)
        self.streams += 1
        try:
            # With --transport sse the server's lifespan runs per MCP connection; this keeps the watcher going.
            async with watcher.lifespan(self.mcp):
                yield f"retry: 1000\nevent: hello\ndata: {json.dumps({'version': __version__})}\n\n"
                while True:
                    with anyio.move_on_after(KEEPALIVE_SECONDS):
                        await wake.wait()
                    if not pending:
                        yield ": keepalive\n\n"
                        continue
                    await anyio.sleep(COALESCE_SECONDS)  # one message for a burst of commits
                    batch, pending[:] = list(pending), []
                    wake = anyio.Event()
                    yield f"event: change\ndata: {json.dumps(changes_of(batch))}\n\n"
        finally:
            unsubscribe()
            self.streams -= 1


def add_board_routes(mcp: MCPServer, access: Access | None = None) -> None:
    """Serve the board on this server's HTTP app (call before building the app)."""
    board = Board(mcp.queue)  # type: ignore[attr-defined]
    feed = BoardFeed(mcp)
    if not hasattr(mcp, "board_access"):
        mcp.board_access = access or open_access  # type: ignore[attr-defined]

    def allow(request: Request, scope: str) -> str:
        actor: str = mcp.board_access(request, scope)  # type: ignore[attr-defined]
        return actor

    async def answer(request: Request, scope: str, fn: Callable[[str], Any], status: int = 200) -> Response:
        try:
            actor = allow(request, scope)
            result = await anyio.to_thread.run_sync(fn, actor)
        except TaskQueueError as exc:
            return JSONResponse({"error": exc.code, "message": str(exc)}, status_code=ERROR_STATUS.get(exc.code, 409))
        payload: Any
        if isinstance(result, BaseModel):
            payload = result.model_dump(mode="json")
        elif isinstance(result, list):
            payload = [r.model_dump(mode="json") if isinstance(r, BaseModel) else r for r in result]
        else:
            payload = result
        return JSONResponse(payload, status_code=status, headers={"Cache-Control": "no-store"})

    def filters_of(request: Request) -> Filters:
        q = request.query_params
        values = {name: (q.get(name) or None) for name in ("project", "kind", "tag", "worker", "workflow_id")}
        return Filters(**values, query=q.get("q") or None)

    def int_param(request: Request, name: str, default: int) -> int:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ValidationFailed(f"{name} must be a whole number, not {raw!r}") from None

    def page_of(request: Request) -> dict[str, Any]:
        """`limit` and `cursor` of a paged listing."""
        return {"limit": int_param(request, "limit", 50), "cursor": request.query_params.get("cursor") or None}

    @mcp.custom_route("/", methods=["GET"])  # type: ignore[untyped-decorator]
    @mcp.custom_route("/board", methods=["GET"])  # type: ignore[untyped-decorator]
    async def page(_request: Request) -> Response:
        html = web_file("board.html").decode().replace("{{version}}", __version__)
        return Response(
            html,
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    @mcp.custom_route("/board/static/{name}", methods=["GET"])  # type: ignore[untyped-decorator]
    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_TYPES:
            return JSONResponse({"error": "not_found", "message": f"no board asset {name!r}"}, status_code=404)
        return Response(
            web_file(name),
            media_type=STATIC_TYPES[name],
            headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    @mcp.custom_route("/board/api/projects", methods=["GET"])  # type: ignore[untyped-decorator]
    async def projects(request: Request) -> Response:
        return await answer(
            request, "read", lambda _actor: {"projects": [p.model_dump(mode="json") for p in board.projects()]}
        )

    @mcp.custom_route("/board/api/board", methods=["GET"])  # type: ignore[untyped-decorator]
    async def whole_board(request: Request) -> Response:
        def read(_actor: str) -> Any:
            columns = [c for c in request.query_params.get("columns", "").split(",") if c]
            return board.view(filters_of(request), limit=int_param(request, "limit", 50), columns=columns)

        return await answer(request, "read", read)

    @mcp.custom_route("/board/api/column/{key}", methods=["GET"])  # type: ignore[untyped-decorator]
    async def column(request: Request) -> Response:
        def read(_actor: str) -> Any:
            return board.column(request.path_params["key"], filters_of(request), **page_of(request))

        return await answer(request, "read", read)

    @mcp.custom_route("/board/api/tasks/{task_id}", methods=["GET"])  # type: ignore[untyped-decorator]
    async def task(request: Request) -> Response:
        return await answer(request, "read", lambda _actor: board.task(request.path_params["task_id"]))

    @mcp.custom_route("/board/api/workflows", methods=["GET"])  # type: ignore[untyped-decorator]
    async def workflows(request: Request) -> Response:
        def read(_actor: str) -> Any:
            return board.workflows.list(project=request.query_params.get("project") or None, **page_of(request))

        return await answer(request, "read", read)

    @mcp.custom_route("/board/api/workflows/{workflow_id}", methods=["GET"])  # type: ignore[untyped-decorator]
    async def workflow(request: Request) -> Response:
        return await answer(request, "read", lambda _actor: board.workflow(request.path_params["workflow_id"]))

    @mcp.custom_route("/board/api/charts", methods=["GET"])  # type: ignore[untyped-decorator]
    async def charts(request: Request) -> Response:
        def read(_actor: str) -> Any:
            return board.charts(request.query_params.get("project") or None, minutes=int_param(request, "minutes", 60))

        return await answer(request, "read", read)

    @mcp.custom_route("/board/api/tasks/{task_id}/{action}", methods=["POST"])  # type: ignore[untyped-decorator]
    async def act(request: Request) -> Response:
        action = request.path_params["action"]
        task_id = request.path_params["task_id"]
        if action not in ACTION_SCOPES:
            return JSONResponse(
                {"error": "not_found", "message": f"no board action {action!r}; actions: {', '.join(ACTION_SCOPES)}"},
                status_code=404,
            )
        # JSON only: a cross-site form cannot send it without a CORS preflight this server never grants.
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse(
                {"error": "validation_failed", "message": "send the action as application/json"}, status_code=415
            )
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"error": "validation_failed", "message": "the body must be a JSON object"}, 400)

        def run(actor: str) -> Any:
            if action == "cancel":
                return board.cancel(task_id, actor, reason=body.get("reason"))
            if action == "retry":
                return board.retry(task_id, actor)
            if action == "release":
                return board.release(task_id, actor)
            if action == "priority":
                return board.set_priority(task_id, str(body.get("priority")), actor, body.get("expected_version"))
            text = body.get("text")
            if not isinstance(text, str):
                raise ValidationFailed("a note needs {'text': '...'}")
            return board.add_note(task_id, text, actor)

        return await answer(request, ACTION_SCOPES[action], run)

    @mcp.custom_route("/board/events", methods=["GET"])  # type: ignore[untyped-decorator]
    async def events(request: Request) -> Response:
        try:
            allow(request, "read")
        except TaskQueueError as exc:
            return JSONResponse({"error": exc.code, "message": str(exc)}, status_code=ERROR_STATUS.get(exc.code, 409))
        if feed.streams >= MAX_STREAMS:
            return JSONResponse({"error": "busy", "message": "too many open board streams"}, status_code=503)
        return StreamingResponse(
            feed.stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

"""The live board over HTTP: the page at `/` and `/board`, its JSON API and its live feed.

- `GET /`, `/board`: the single page (mcp_taskqueue/web/board.html); assets at `/board/static/`.
- `GET /board/api/...`: JSON from board.py (me, projects, board, column, tasks/{id},
  tasks/{id}/history, workflows, charts).
- `POST /board/api/tasks/{id}/{action}`: cancel, retry, release, priority, note (JSON body).
- `GET /board/events`: Server-Sent Events fed by the server's `ResourceWatcher`: a `hello`
  event on connect, then `change` events `{"tasks": [...], "projects": [...], "workflows": [...]}`
  within ~0.2 s of a commit by any process on the store. The page reads it with `fetch` (so it
  can send its token), reconnects after a second and resyncs everything after a reconnect.

Who may do what: `mcp.board_access(request)` names the caller (an `Identity`; None when the
server needs a token and the request has none or a bad one: 401). Views need scope `read`,
actions the scope `board.ACTION_SCOPES` names (403 otherwise). A token limited to projects sees
only those: the project list, boards, search, tasks, workflows, charts and the live feed are
filtered to them and anything else is refused (403). Without tokens everyone is `board` with
every scope (`open_access`); server/service.py installs the token-aware hook.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.subscriptions import ResourcesListChanged, ResourceUpdated, ServerEvent
from pydantic_core import to_jsonable_python
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from mcp_taskqueue import __version__
from mcp_taskqueue.board import ACTION_SCOPES, Board, Filters
from mcp_taskqueue.errors import Forbidden, NotFound, TaskQueueError, ValidationFailed
from mcp_taskqueue.identity import SCOPES, Identity, Tokens
from mcp_taskqueue.server.auth import still_valid

log = logging.getLogger("mcp_taskqueue.board")
T = TypeVar("T")

STATIC_TYPES = {"board.js": "text/javascript", "board.css": "text/css", "icon.svg": "image/svg+xml"}
ERROR_STATUS = {"not_found": 404, "validation_failed": 400, "unauthorized": 401, "forbidden": 403, "store_busy": 503}
KEEPALIVE_SECONDS = 15.0
REVERIFY_SECONDS = 1.0  # an open feed re-checks its token this often: revoked or expired, it ends
COALESCE_SECONDS = 0.05
MAX_STREAMS = 200
# The page runs nothing but its own script and talks to nothing but this server.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class Unauthenticated(TaskQueueError):
    """The server needs a token and the request brought none, or one it does not know (HTTP 401)."""

    code = "unauthorized"


Access = Callable[[HTTPConnection], Identity | None]


def open_access(_request: HTTPConnection) -> Identity:
    """A server without tokens: everyone may do everything, as `board`."""
    return Identity(name="board", scopes=frozenset(SCOPES))


@dataclass(frozen=True)
class Viewer:
    """Who is looking: the actor actions are recorded as, scopes, and the projects they may see (None: all)."""

    actor: str
    scopes: frozenset[str]
    projects: frozenset[str] | None
    signed_in: bool

    @classmethod
    def of(cls, identity: Identity) -> Viewer:
        actor = identity.name if identity.authenticated else "board"
        return cls(actor, identity.scopes, identity.projects, identity.authenticated)

    def check(self, project: str | None) -> None:
        """Forbidden unless this viewer may see `project` (None: an unknown task or workflow)."""
        if self.projects is not None and project not in self.projects:
            raise Forbidden(f"token {self.actor!r} may only see project(s) {', '.join(sorted(self.projects))}")

    def see(self, read: Callable[[], T], project_of: Callable[[T], str]) -> T:
        """`read()` if what it finds is in a project this viewer may see. For a project-limited
        token an unknown id is refused like another project's, so ids cannot be probed."""
        try:
            found = read()
        except NotFound:
            if self.projects is None:
                raise
            self.check(None)
            raise
        self.check(project_of(found))
        return found

    def project(self, name: str | None) -> str | None:
        """The project a read is about: `name` (checked); none given means every project, or for a
        token limited to one project that project (limited to several: Forbidden, choose one)."""
        if name is None and self.projects is not None:
            if len(self.projects) != 1:
                raise Forbidden(
                    f"token {self.actor!r} is limited to projects {', '.join(sorted(self.projects))}: give one"
                )
            return next(iter(self.projects))
        if name is not None:
            self.check(name)
        return name

    def describe(self) -> dict[str, Any]:
        """`GET /board/api/me`: name, scopes, projects (null: all) and whether a token signed in."""
        return {
            "name": self.actor,
            "scopes": [s for s in SCOPES if s in self.scopes],
            "projects": sorted(self.projects) if self.projects is not None else None,
            "signed_in": self.signed_in,
        }


def refusal(exc: TaskQueueError) -> JSONResponse:
    """An error as JSON `{"error": code, "message": ...}` with its HTTP status (401 asks for a bearer token)."""
    status = ERROR_STATUS.get(exc.code, 409)
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else None
    return JSONResponse({"error": exc.code, "message": str(exc)}, status_code=status, headers=headers)


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

    def __init__(self, mcp: MCPServer, board: Board) -> None:
        self.mcp = mcp
        self.board = board
        self.tokens = Tokens(board.queue.store)
        self.streams = 0
        self.closed = False
        self.wakers: set[Callable[[], None]] = set()

    def close(self) -> None:
        """End every open stream: the server is shutting down (an endless response would keep it
        waiting for the browsers to leave). The pages reconnect to the next server by themselves."""
        self.closed = True
        for wake_up in list(self.wakers):
            wake_up()

    async def stream(self, viewer: Viewer, access: AccessToken | None = None) -> AsyncIterator[str]:
        """`hello`, then one `change` per burst of commits (only what `viewer` may see), keepalives
        between; with a token (`access`) it ends within REVERIFY_SECONDS of its revocation or expiry
        (the page then finds its token refused and asks for another)."""
        watcher = self.mcp.watcher  # type: ignore[attr-defined]
        pending: list[ServerEvent] = []
        wake = anyio.Event()

        def listener(event: ServerEvent) -> None:
            if len(pending) < 10_000:  # beyond that the page resyncs anyway
                pending.append(event)
            wake.set()

        def wake_up() -> None:
            wake.set()

        unsubscribe = watcher.bus.subscribe(listener)
        self.wakers.add(wake_up)
        self.streams += 1
        try:
            # With --transport sse the server's lifespan runs per MCP connection; this keeps the watcher going.
            async with watcher.lifespan(self.mcp):
                yield f"retry: 1000\nevent: hello\ndata: {json.dumps({'version': __version__})}\n\n"
                sent = checked = anyio.current_time()
                while True:
                    with anyio.move_on_after(REVERIFY_SECONDS if access is not None else KEEPALIVE_SECONDS):
                        await wake.wait()
                    if self.closed:
                        return
                    now = anyio.current_time()
                    if access is not None and now - checked >= REVERIFY_SECONDS:
                        checked = now
                        if not await still_valid(self.tokens, access):
                            return
                    if not pending:
                        if now - sent >= KEEPALIVE_SECONDS:
                            sent = now
                            yield ": keepalive\n\n"
                        continue
                    sent = now
                    await anyio.sleep(COALESCE_SECONDS)  # one message for a burst of commits
                    batch, pending[:] = list(pending), []
                    wake = anyio.Event()
                    change = changes_of(batch)
                    if viewer.projects is not None:
                        change = await anyio.to_thread.run_sync(self.board.visible_changes, change, viewer.projects)
                    if any(change.values()):
                        yield f"event: change\ndata: {json.dumps(change)}\n\n"
        finally:
            unsubscribe()
            self.wakers.discard(wake_up)
            self.streams -= 1


def add_board_routes(mcp: MCPServer, access: Access | None = None) -> None:
    """Serve the board on this server's HTTP app (call before building the app)."""
    board = Board(mcp.queue)  # type: ignore[attr-defined]
    feed = BoardFeed(mcp, board)
    mcp.board_feed = feed  # type: ignore[attr-defined]  # server/transports.py closes it on shutdown
    if not hasattr(mcp, "board_access"):
        mcp.board_access = access or open_access  # type: ignore[attr-defined]

    def viewer_of(request: Request, scope: str) -> Viewer:
        """The caller with `scope`, or Unauthenticated (401) / Forbidden (403)."""
        identity: Identity | None = mcp.board_access(request)  # type: ignore[attr-defined]
        if identity is None:
            raise Unauthenticated("this board needs a token: sign in with one made by `mcp-taskqueue token create`")
        if not identity.allows(scope):
            have = ", ".join(sorted(identity.scopes)) or "none"
            raise Forbidden(f"this needs scope {scope!r}; token {identity.name!r} has {have}")
        return Viewer.of(identity)

    async def answer(request: Request, scope: str, fn: Callable[[Viewer], Any]) -> Response:
        try:
            viewer = viewer_of(request, scope)
            result = await anyio.to_thread.run_sync(fn, viewer)
        except TaskQueueError as exc:
            return refusal(exc)
        return JSONResponse(to_jsonable_python(result), headers={"Cache-Control": "no-store"})

    def reading(path: str, read: Callable[[Request, Viewer], Any]) -> None:
        """A `GET` JSON route that needs scope `read`."""

        async def endpoint(request: Request) -> Response:
            return await answer(request, "read", lambda viewer: read(request, viewer))

        mcp.custom_route(path, methods=["GET"])(endpoint)

    def filters_of(request: Request, viewer: Viewer) -> Filters:
        q = request.query_params
        values = {name: (q.get(name) or None) for name in ("kind", "tag", "worker", "workflow_id")}
        return Filters(**values, project=viewer.project(q.get("project") or None), query=q.get("q") or None)

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

    reading("/board/api/me", lambda _request, viewer: viewer.describe())
    reading("/board/api/projects", lambda _request, viewer: {"projects": board.projects(only=viewer.projects)})
    reading(
        "/board/api/board",
        lambda request, viewer: board.view(
            filters_of(request, viewer),
            limit=int_param(request, "limit", 50),
            columns=[c for c in request.query_params.get("columns", "").split(",") if c],
        ),
    )
    reading(
        "/board/api/column/{key}",
        lambda request, viewer: board.column(
            request.path_params["key"], filters_of(request, viewer), **page_of(request)
        ),
    )

    def reading_one(path: str, read: Callable[[str], T], project_of: Callable[[T], str]) -> None:
        """A `GET` of the one task or workflow whose id ends `path`, refused outside the viewer's projects."""
        key = path.rsplit("{", 1)[1].rstrip("}")
        reading(path, lambda request, viewer: viewer.see(lambda: read(request.path_params[key]), project_of))

    reading_one("/board/api/tasks/{task_id}", board.task, lambda detail: detail.task.project)

    def history(request: Request, viewer: Viewer) -> Any:
        task_id = request.path_params["task_id"]
        viewer.see(lambda: board.queue.get(task_id), lambda task: task.project)
        cursor = request.query_params.get("cursor") or None
        return board.history(task_id, cursor, int_param(request, "limit", 1000))

    reading("/board/api/tasks/{task_id}/history", history)
    reading_one("/board/api/workflows/{workflow_id}", board.workflow, lambda drawing: drawing.workflow.project)
    reading(
        "/board/api/workflows",
        lambda request, viewer: board.workflows.list(
            project=viewer.project(request.query_params.get("project") or None), **page_of(request)
        ),
    )
    reading(
        "/board/api/charts",
        lambda request, viewer: board.charts(
            viewer.project(request.query_params.get("project") or None), minutes=int_param(request, "minutes", 60)
        ),
    )

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

        def run(viewer: Viewer) -> Any:
            if viewer.projects is not None:
                viewer.see(lambda: board.queue.get(task_id), lambda task: task.project)
            return board.act(action, task_id, viewer.actor, body)

        return await answer(request, ACTION_SCOPES[action], run)

    @mcp.custom_route("/board/events", methods=["GET"])  # type: ignore[untyped-decorator]
    async def events(request: Request) -> Response:
        try:
            viewer = viewer_of(request, "read")
        except TaskQueueError as exc:
            return refusal(exc)
        if feed.closed or feed.streams >= MAX_STREAMS:
            return JSONResponse({"error": "busy", "message": "too many open board streams"}, status_code=503)
        user = request.scope.get("user")
        access = user.access_token if isinstance(user, AuthenticatedUser) else None
        return StreamingResponse(
            feed.stream(viewer, access),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

"""A typed Python client for the queue's MCP tools, over any transport.

`TaskQueueClient` wraps `mcp.Client`: one method per tool, taking the tool's arguments and
returning the pydantic model of its structured output, with tool errors raised as the
queue's own exceptions (`NotFound`, `Conflict`, `LeaseLost`, ...). The same code talks to a
server in this process (a database path or a server object), to a stdio subprocess, or to
an HTTP server, so a script behaves the same locally and remotely; the CLI uses it for
every command.

    async with TaskQueueClient("tasks.db") as tq:
        task = await tq.create_task("Write the docs", priority="high")

`SyncTaskQueueClient` is the same API for code without an event loop.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INVALID_PARAMS, CallToolResult
from pydantic import BaseModel, ValidationError

from mcp_taskqueue.errors import (
    Conflict,
    Forbidden,
    InvalidTransition,
    LeaseLost,
    NotFound,
    RateLimited,
    StoreBusy,
    StoreFull,
    StoreLost,
    TaskQueueError,
    ValidationFailed,
)
from mcp_taskqueue.models import (
    MAX_BATCH,
    ClaimResult,
    CreatedTasks,
    CreatedWorkflow,
    Event,
    HistoryPage,
    PhaseState,
    Project,
    ProjectList,
    QueueStats,
    Task,
    TaskPage,
    TaskSpec,
    TaskState,
    TaskSummary,
    Workflow,
    WorkflowPage,
    WorkflowSummary,
)
from mcp_taskqueue.notify.models import (
    DeletedNotifier,
    NotifierDetail,
    NotifierInfo,
    NotifierList,
    TestResult,
)
from mcp_taskqueue.webhooks import WebhookVerificationError, verify_webhook

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
RESOURCE_NOT_FOUND = -32002  # older servers' code for an unknown resource
log = logging.getLogger("mcp_taskqueue.client")

__all__ = [
    "Conflict",
    "InvalidTransition",
    "LeaseLost",
    "NotFound",
    "StoreBusy",
    "StoreFull",
    "StoreLost",
    "SyncTaskQueueClient",
    "TaskQueueClient",
    "TaskQueueError",
    "ToolFailed",
    "TransportFailed",
    "UnknownTool",
    "ValidationFailed",
    "WebhookVerificationError",
    "verify_webhook",
]


class UnknownTool(TaskQueueError):
    """The server does not offer this tool (an older server, or a `--toolsets` subset)."""

    code = "unknown_tool"


class ToolFailed(TaskQueueError):
    """A tool error whose text carries none of the queue's error codes."""

    code = "tool_failed"


class TransportFailed(TaskQueueError):
    """The server could not be reached, or the connection broke, and retrying did not help."""

    code = "transport"


ERRORS: dict[str, type[TaskQueueError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        Conflict,
        InvalidTransition,
        LeaseLost,
        ValidationFailed,
        StoreBusy,
        StoreFull,
        StoreLost,
        Forbidden,
        RateLimited,
    )
}
# "Error executing tool claim_task: lease_lost: ..." -> ("claim_task", "lease_lost", "...")
TOOL_ERROR = re.compile(r"^Error executing tool (?P<tool>[\w.-]+): (?:(?P<code>[a-z_]+): )?(?P<message>.*)$", re.S)

# Calls that are safe to send twice: a retry after a broken connection cannot do the work twice.
RETRY_SAFE_TOOLS = frozenset(
    {
        "get_task",
        "list_tasks",
        "queue_stats",
        "list_projects",
        "get_workflow",
        "list_workflows",
        "heartbeat",
        "complete_task",  # fenced by lease_id: a repeat after it committed returns the same task
        "fail_task",
        "release_task",
        "add_dependency",
        "remove_dependency",
        "cancel_task",
        "cancel_workflow",
        "update_project",
    }
)


def error_from_tool(tool: str, text: str) -> TaskQueueError:
    """A tool error's text -> the queue exception it stands for (with `.tool` set)."""
    match = TOOL_ERROR.match(text.strip())
    if text.startswith("Unknown tool"):
        exc: TaskQueueError = UnknownTool(f"the server has no tool {tool!r} (is its toolset enabled?)")
    elif match is None:
        exc = ToolFailed(text)
    elif match["code"] in ERRORS:
        exc = ERRORS[match["code"]](match["message"])
    elif "validation error" in text:
        # Arguments refused by the tool's own schema, before the queue saw them.
        exc = ValidationFailed(_one_line(match["message"] if match["code"] is None else text.split(": ", 1)[1]))
    else:
        exc = ToolFailed(text)
    exc.tool = tool  # type: ignore[attr-defined]
    return exc


def _one_line(pydantic_text: str) -> str:
    """Pydantic's multi-line report as one line, without its documentation links."""
    lines = [ln.strip() for ln in pydantic_text.splitlines() if ln.strip() and "errors.pydantic.dev" not in ln]
    return "; ".join(lines)


def _connection_closed(exc: BaseException) -> bool:
    """The SDK's answer for a call on a connection that has died."""
    return isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED


def _flatten(exc: BaseException) -> list[BaseException]:
    inner = getattr(exc, "exceptions", None)  # an exception group (3.10 has no builtin name for it)
    if isinstance(inner, (list, tuple)):
        return [leaf for child in inner for leaf in _flatten(child)]
    return [exc]


def is_transient(exc: BaseException) -> bool:
    """Connection refused, reset or closed: worth retrying. Tool errors never are."""
    leaves = _flatten(exc)
    transient: tuple[type[BaseException], ...] = (
        OSError,
        anyio.BrokenResourceError,
        anyio.ClosedResourceError,
        anyio.EndOfStream,
    )
    try:
        import httpx2

        transient += (httpx2.TransportError,)
    except ImportError:  # pragma: no cover - the SDK ships it
        pass
    return bool(leaves) and all(isinstance(leaf, transient) for leaf in leaves)


Target = MCPServer | StdioServerParameters | str | os.PathLike[str] | Sequence[str] | None


def endpoint(url: str) -> str:
    """The MCP endpoint of a server URL: a bare `http(s)://host:port[/]` means its `/mcp` (where
    `serve --transport http` answers); any other path is used as given."""
    parts = urlsplit(url)
    if parts.path not in ("", "/"):
        return url
    return urlunsplit((parts.scheme, parts.netloc, "/mcp", parts.query, parts.fragment))


def _resolve(target: Target, toolsets: str | None) -> MCPServer | StdioServerParameters | str:
    """What `mcp.Client` connects to: URL as is, a command as stdio, a db path as an in-memory server."""
    if isinstance(target, (MCPServer, StdioServerParameters)):
        return target
    if isinstance(target, str) and target.startswith(("http://", "https://")):
        return endpoint(target)
    if isinstance(target, (list, tuple)):
        command = [str(part) for part in target]
        return StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    from mcp_taskqueue.server.app import build_server  # only the in-memory mode needs the server
    from mcp_taskqueue.store import is_postgres_url

    # In-process there is no context to save: every toolset.
    if target is None or is_postgres_url(target):
        return build_server(None if target is None else str(target), toolsets=toolsets or "all")
    return build_server(str(Path(str(target)).expanduser()), toolsets=toolsets or "all")


class TaskQueueClient:
    """Typed access to every queue tool. Use as `async with TaskQueueClient(target) as tq:`.

    `target` is a database path or `postgresql://` URL (served in this process), an `MCPServer`, an `http(s)://.../mcp`
    URL, a stdio command (`["mcp-taskqueue", "--db", "x.db", "serve"]` or
    `StdioServerParameters`), or None for the default database. Connecting is retried with
    exponential backoff (`retries`, `backoff`); so are calls that are safe to repeat.
    """

    def __init__(
        self,
        target: Target = None,
        *,
        retries: int = 4,
        backoff: float = 0.25,
        max_backoff: float = 5.0,
        read_timeout: float | None = None,
        toolsets: str | None = None,
        token: str | None = None,
    ) -> None:
        self.target = target
        # Bearer token for an HTTP server with auth (mcp-taskqueue token create); default $TASKQUEUE_TOKEN.
        self.token = token if token is not None else os.environ.get("TASKQUEUE_TOKEN") or None
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.read_timeout = read_timeout
        self.toolsets = toolsets
        self._client: Client | None = None
        self._group: anyio.abc.TaskGroup | None = None
        self._closed: anyio.Event | None = None
        self._generation = 0
        self._reconnect_lock = anyio.Lock()
        self._resolved: MCPServer | StdioServerParameters | str | None = None
        self._leases: dict[str, str] = {}  # task id -> lease_id of the claims this client made

    @classmethod
    def stdio(cls, command: str, *args: str, env: dict[str, str] | None = None, **kw: Any) -> TaskQueueClient:
        """A client for a server started as a subprocess speaking MCP on stdin/stdout."""
        params = StdioServerParameters(
            command=command, args=list(args), env=env if env is not None else dict(os.environ)
        )
        return cls(params, **kw)

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter: retries from many workers do not arrive together."""
        return float(min(self.max_backoff, self.backoff * 2**attempt) * (0.5 + random.random() / 2))

    async def __aenter__(self) -> TaskQueueClient:
        self._resolved = _resolve(self.target, self.toolsets)
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        try:
            await self._connect()
        except BaseException:
            group.cancel_scope.cancel()
            await group.__aexit__(None, None, None)
            self._group = None
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        group, self._group = self._group, None
        self._client = None
        if self._closed is not None:
            self._closed.set()
        if group is not None:
            # The body's own exception is not the group's business: pass None, so it propagates
            # as itself instead of wrapped in an exception group.
            await group.__aexit__(None, None, None)

    async def _connect(self) -> None:
        """Open a connection, retrying transient failures with backoff."""
        assert self._group is not None
        for attempt in range(self.retries + 1):
            try:
                self._client = await self._group.start(self._hold_connection)
                self._generation += 1
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if attempt == self.retries:
                    where = _describe(self._resolved)
                    raise TransportFailed(f"cannot reach the server at {where}: {_flatten(exc)[0]!r}") from exc
            await anyio.sleep(self._delay(attempt))

    async def _hold_connection(self, *, task_status: anyio.abc.TaskStatus[Client]) -> None:
        """Own one `mcp.Client` in a task of our own: when its connection dies, only this task
        sees the crash, and the next call reconnects instead of the caller being cancelled."""
        closed = self._closed = anyio.Event()
        started = False
        target = self._resolved
        assert target is not None
        refused: list[str] = []  # the server's 401/403 answers: the SDK reports them without the status
        try:
            async with AsyncExitStack() as stack:
                if isinstance(target, str):
                    headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
                    import httpx2

                    async def note_refusal(response: httpx2.Response) -> None:
                        if response.status_code in (401, 403):
                            challenge = response.headers.get("www-authenticate", "")
                            refused.append(f"HTTP {response.status_code} {challenge}".strip())

                    timeout = httpx2.Timeout(30.0, read=300.0)  # the SDK's defaults for MCP over HTTP
                    http = await stack.enter_async_context(
                        httpx2.AsyncClient(headers=headers, timeout=timeout, event_hooks={"response": [note_refusal]})
                    )
                    connect: Any = streamable_http_client(target, http_client=http)
                else:
                    connect = target
                client = await stack.enter_async_context(Client(connect, read_timeout_seconds=self.read_timeout))
                task_status.started(client)
                started = True
                await closed.wait()
        except Exception as exc:
            if not started:
                if refused:
                    if not self.token:
                        hint = "send a token (TASKQUEUE_TOKEN)"
                    elif refused[-1].startswith("HTTP 401"):
                        hint = "the token is unknown, revoked or expired"
                    else:
                        hint = "the token lacks a scope this needs"
                    raise Forbidden(f"the server at {target} refused the connection ({refused[-1]}): {hint}") from None
                raise
            log.warning("connection to %s lost: %r", _describe(self._resolved), _flatten(exc)[0])

    def _drop(self, generation: int) -> None:
        """Forget a broken connection (once, however many calls noticed it); the next call reconnects."""
        if generation == self._generation and self._client is not None:
            self._client = None
            if self._closed is not None:
                self._closed.set()

    async def _ensure_connected(self) -> Client:
        async with self._reconnect_lock:
            if self._client is None:
                if self._group is None:
                    raise RuntimeError("use the client inside `async with TaskQueueClient(...) as tq:`")
                await self._connect()
            assert self._client is not None
            return self._client

    @property
    def connected(self) -> bool:
        """True inside `async with`: the connection is open."""
        return self._client is not None

    @property
    def mcp(self) -> Client:
        """The underlying `mcp.Client`, for anything this class does not wrap."""
        if self._client is None:
            if self._group is not None:
                raise TransportFailed("the connection was lost; the next queue call reconnects")
            raise RuntimeError("use the client inside `async with TaskQueueClient(...) as tq:`")
        return self._client

    # --- the one path every call takes ----------------------------------------------------------

    async def _with_retry(self, what: str, safe: bool, request: Callable[[Client], Awaitable[T]]) -> T:
        """Send one request. If the connection breaks, drop it so the next request reconnects (with
        backoff), and repeat this one only when `safe`: doing it twice cannot do the work twice."""
        attempt = 0
        while True:
            client = await self._ensure_connected()  # nothing is sent before this succeeds
            generation = self._generation
            try:
                return await request(client)
            except Exception as exc:
                if not (is_transient(exc) or _connection_closed(exc)):
                    raise
                self._drop(generation)
                if not safe or attempt >= self.retries:
                    raise TransportFailed(f"{what} was interrupted by a broken connection: {exc!r}") from exc
            await anyio.sleep(self._delay(attempt))
            attempt += 1

    async def call(
        self,
        tool: str,
        arguments: dict[str, Any] | None = None,
        progress: ProgressFnT | None = None,
        *,
        send_nulls: bool = False,
    ) -> dict[str, Any]:
        """Call any tool by name; its structured output as a dict, or its error raised. `progress`
        is awaited with (done, total, message) as the server reports progress (long batches).
        Arguments that are None are left out (the tool's default), unless `send_nulls`
        (update_task: null clears)."""
        args = {k: v for k, v in (arguments or {}).items() if v is not None or send_nulls}
        safe = tool in RETRY_SAFE_TOOLS or (tool == "claim_task" and "idempotency_key" in args)
        try:
            result = await self._with_retry(
                tool, safe, lambda client: client.call_tool(tool, args, progress_callback=progress)
            )
        except MCPError as exc:
            raise error_from_tool(tool, f"Error executing tool {tool}: {exc.message}") from exc
        return _structured(tool, result)

    async def _typed(
        self,
        model: type[M],
        tool: str,
        arguments: dict[str, Any] | None = None,
        progress: ProgressFnT | None = None,
        *,
        send_nulls: bool = False,
    ) -> M:
        data = await self.call(tool, arguments, progress, send_nulls=send_nulls)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ToolFailed(f"{tool} returned output this client does not understand: {exc}") from exc

    async def read_resource(self, uri: str) -> Any:
        """Read one of the server's JSON resources (`taskqueue://...`)."""
        try:
            result = await self._with_retry(uri, True, lambda client: client.read_resource(uri))
        except MCPError as exc:
            message = exc.message
            code, _, rest = message.partition(": ")
            if code in ERRORS:
                raise ERRORS[code](rest) from exc
            if exc.code in (INVALID_PARAMS, RESOURCE_NOT_FOUND):  # how MCP says "no such resource"
                raise NotFound(message) from exc
            raise ToolFailed(message) from exc
        text = "".join(getattr(part, "text", "") for part in result.contents)
        return json.loads(text)

    # --- tasks ----------------------------------------------------------------------------------

    async def create_task(self, title: str, **fields: Any) -> TaskState:
        """Create one task (fields as in `TaskSpec`: project, kind, priority, payload, depends_on, ...)."""
        return await self._typed(TaskState, "create_task", {"title": title, **fields})

    async def create_tasks(
        self, tasks: Iterable[TaskSpec | dict[str, Any]], progress: ProgressFnT | None = None
    ) -> CreatedTasks:
        """Create up to 500 tasks atomically; items may name each other's `ref` in depends_on."""
        items = [_spec_dict(t) for t in tasks]
        return await self._typed(CreatedTasks, "create_tasks", {"tasks": items}, progress)

    async def create_many(
        self, tasks: Iterable[TaskSpec | dict[str, Any]], batch_size: int = MAX_BATCH
    ) -> CreatedTasks:
        """Create any number of tasks in batches of `batch_size`, each batch atomic. A ref made in an
        earlier batch may be used by a later one: it is replaced by the id it resolved to."""
        items = [_spec_dict(t) for t in tasks]
        states: list[TaskState] = []
        refs: dict[str, str] = {}
        for start in range(0, len(items), batch_size):
            batch = []
            for item in items[start : start + batch_size]:
                deps = item.get("depends_on") or []
                if deps:
                    item = {**item, "depends_on": [refs.get(d, d) for d in deps]}
                batch.append(item)
            created = await self.create_tasks(batch)
            states.extend(created.tasks)
            refs.update(created.refs)
        return CreatedTasks(tasks=states, refs=refs)

    async def get_task(self, task_id: str) -> Task:
        return await self._typed(Task, "get_task", {"task_id": task_id})

    async def list_tasks(self, **filters: Any) -> TaskPage:
        """One page: filters project, status, kind, tag, worker, workflow_id, query; limit, cursor."""
        return await self._typed(TaskPage, "list_tasks", filters)

    async def iter_tasks(self, **filters: Any) -> AsyncIterator[TaskSummary]:
        """Every matching task, following cursors page by page."""
        cursor: str | None = filters.pop("cursor", None)
        filters.setdefault("limit", 200)
        while True:
            page = await self.list_tasks(**filters, cursor=cursor)
            for summary in page.tasks:
                yield summary
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def update_task(self, task_id: str, expected_version: int | None = None, **changes: Any) -> TaskState:
        """Change the given fields; a field given as None is cleared (run_at, payload, timeout_seconds, ...)."""
        args = {"task_id": task_id, **changes}
        if expected_version is not None:
            args["expected_version"] = expected_version
        return await self._typed(TaskState, "update_task", args, send_nulls=True)

    async def add_note(self, task_id: str, text: str) -> Event:
        return await self._typed(Event, "add_note", {"task_id": task_id, "text": text})

    async def add_dependency(self, task_id: str, depends_on: str) -> TaskState:
        return await self._typed(TaskState, "add_dependency", {"task_id": task_id, "depends_on": depends_on})

    async def remove_dependency(self, task_id: str, depends_on: str) -> TaskState:
        return await self._typed(TaskState, "remove_dependency", {"task_id": task_id, "depends_on": depends_on})

    async def cancel_task(self, task_id: str, reason: str | None = None) -> TaskState:
        return await self._typed(TaskState, "cancel_task", {"task_id": task_id, "reason": reason})

    async def retry_task(self, task_id: str) -> TaskState:
        return await self._typed(TaskState, "retry_task", {"task_id": task_id})

    async def task_history(self, task_id: str) -> HistoryPage:
        """The task's history (latest 1000 events), from the `taskqueue://tasks/{id}/history` resource."""
        return HistoryPage.model_validate(await self.read_resource(f"taskqueue://tasks/{task_id}/history"))

    # --- the worker protocol --------------------------------------------------------------------

    async def claim_task(
        self,
        worker: str,
        *,
        project: str | None = None,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        lease_seconds: int | None = None,
        max_tasks: int = 1,
        idempotency_key: str | None = None,
    ) -> ClaimResult:
        """Lease the next ready task(s) to `worker`; `.task` is None when nothing is ready.

        Each claim carries an idempotency key (a fresh one unless given), so a claim whose reply was
        lost is retried safely. The client remembers each task's `lease_id` and passes it to
        `heartbeat`, `complete_task`, `fail_task` and `release_task` for you.
        """
        args = {
            "worker": worker,
            "project": project,
            "kinds": list(kinds) if kinds else None,
            "tags": list(tags) if tags else None,
            "lease_seconds": lease_seconds,
            "max_tasks": max_tasks if max_tasks != 1 else None,
            "idempotency_key": idempotency_key or secrets.token_urlsafe(12),
        }
        claim = await self._typed(ClaimResult, "claim_task", args)
        for task in claim.tasks or ([claim.task] if claim.task else []):
            if task.lease_id:
                self._leases[task.id] = task.lease_id
        return claim

    def _lease(self, task_id: str, lease_id: str | None) -> str | None:
        return lease_id or self._leases.get(task_id)

    async def _leased(self, tool: str, args: dict[str, Any], lease_id: str | None) -> TaskState:
        """A call on a lease; once the task leaves this client's hands, its lease is forgotten."""
        task_id = args["task_id"]
        state = await self._typed(TaskState, tool, {**args, "lease_id": self._lease(task_id, lease_id)})
        if tool != "heartbeat":
            self._leases.pop(task_id, None)
        return state

    async def heartbeat(
        self,
        task_id: str,
        worker: str,
        *,
        progress: float | None = None,
        message: str | None = None,
        lease_seconds: int | None = None,
        lease_id: str | None = None,
    ) -> TaskState:
        args = {
            "task_id": task_id,
            "worker": worker,
            "progress": progress,
            "message": message,
            "lease_seconds": lease_seconds,
        }
        return await self._leased("heartbeat", args, lease_id)

    async def complete_task(
        self, task_id: str, worker: str, result: Any = None, *, lease_id: str | None = None
    ) -> TaskState:
        args = {"task_id": task_id, "worker": worker, "result": result}
        return await self._leased("complete_task", args, lease_id)

    async def fail_task(
        self, task_id: str, worker: str, error: str, retryable: bool = True, *, lease_id: str | None = None
    ) -> TaskState:
        args = {"task_id": task_id, "worker": worker, "error": error, "retryable": retryable}
        return await self._leased("fail_task", args, lease_id)

    async def release_task(
        self, task_id: str, worker: str, delay_seconds: float = 0, *, lease_id: str | None = None
    ) -> TaskState:
        args = {"task_id": task_id, "worker": worker, "delay_seconds": delay_seconds}
        return await self._leased("release_task", args, lease_id)

    async def queue_stats(self, project: str | None = None) -> QueueStats:
        return await self._typed(QueueStats, "queue_stats", {"project": project})

    # --- projects -------------------------------------------------------------------------------

    async def create_project(self, name: str, description: str = "", **settings: Any) -> Project:
        return await self._typed(Project, "create_project", {"name": name, "description": description, **settings})

    async def list_projects(self) -> ProjectList:
        return await self._typed(ProjectList, "list_projects")

    async def update_project(self, name: str, description: str | None = None, **settings: Any) -> Project:
        return await self._typed(Project, "update_project", {"name": name, "description": description, **settings})

    async def get_project(self, name: str) -> Project:
        """One project with its counts, from the `taskqueue://projects/{name}` resource."""
        return Project.model_validate(await self.read_resource(f"taskqueue://projects/{name}"))

    # --- workflows (tools named in the product spec) --------------------------------------------

    async def create_workflow(
        self,
        spec: dict[str, Any] | None = None,
        *,
        template: str | None = None,
        parameters: dict[str, Any] | None = None,
        progress: ProgressFnT | None = None,
        **arguments: Any,
    ) -> CreatedWorkflow:
        """Create a workflow from an inline spec (name, project, tasks with refs) or a template;
        `refs` maps each ref to its new task id. `progress` hears (done, total, message)."""
        args = {"spec": spec, "template": template, "parameters": parameters, **arguments}
        return await self._typed(CreatedWorkflow, "create_workflow", args, progress)

    async def get_workflow(self, workflow_id: str, include_tasks: bool = True) -> Workflow:
        """Status, progress, running/blocked tasks and critical path (and the tasks, unless excluded)."""
        args = {"workflow_id": workflow_id, "include_tasks": include_tasks}
        return await self._typed(Workflow, "get_workflow", args)

    async def list_workflows(self, **filters: Any) -> WorkflowPage:
        """One page of workflow summaries: filters such as project; limit, cursor."""
        return await self._typed(WorkflowPage, "list_workflows", filters)

    async def cancel_workflow(self, workflow_id: str, reason: str | None = None) -> WorkflowSummary:
        args = {"workflow_id": workflow_id, "reason": reason}
        return await self._typed(WorkflowSummary, "cancel_workflow", args)

    # --- development workflow -------------------------------------------------------------------

    async def advance_phase(self, task_id: str, to: str, **evidence: Any) -> PhaseState:
        """Move a task to development phase `to`, with that gate's evidence (design_doc, coverage, ...)."""
        return await self._typed(PhaseState, "advance_phase", {"task_id": task_id, "to": to, **evidence})

    async def add_review(
        self, task_id: str, reviewer: str, score: float, approved: bool = True, comment: str | None = None
    ) -> PhaseState:
        args = {"task_id": task_id, "reviewer": reviewer, "score": score, "approved": approved, "comment": comment}
        return await self._typed(PhaseState, "add_review", args)

    # --- notifications (docs/notifications.md) ----------------------------------------------------

    async def create_notifier(
        self, name: str, channel: str, target: str, events: Sequence[str], **fields: Any
    ) -> NotifierInfo:
        """Save a notifier; `fields` are create_notifier's other arguments (filters, secret, replace, ...)."""
        args = {"name": name, "channel": channel, "target": target, "events": list(events), **fields}
        return await self._typed(NotifierInfo, "create_notifier", args)

    async def list_notifiers(self) -> NotifierList:
        return await self._typed(NotifierList, "list_notifiers")

    async def get_notifier(self, notifier_id: str) -> NotifierDetail:
        """A notifier with its latest deliveries (the taskqueue://notifiers/{id} resource)."""
        return NotifierDetail.model_validate(await self.read_resource(f"taskqueue://notifiers/{notifier_id}"))

    async def delete_notifier(self, notifier: str) -> DeletedNotifier:
        return await self._typed(DeletedNotifier, "delete_notifier", {"notifier": notifier})

    async def test_notifier(self, notifier: str) -> TestResult:
        """Send a sample event now; the receiver's answer (ok, status_code, latency_ms, error)."""
        return await self._typed(TestResult, "test_notifier", {"notifier": notifier})


def _spec_dict(item: TaskSpec | dict[str, Any]) -> dict[str, Any]:
    if isinstance(item, TaskSpec):
        return item.model_dump(mode="json", exclude_unset=True)
    return dict(item)


def _structured(tool: str, result: CallToolResult) -> dict[str, Any]:
    text = "".join(getattr(part, "text", "") for part in result.content)
    if result.is_error:
        raise error_from_tool(tool, text)
    if isinstance(result.structured_content, dict):
        return result.structured_content
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ToolFailed(f"{tool} returned no structured content: {text[:200]}") from None
    if not isinstance(data, dict):
        raise ToolFailed(f"{tool} returned {type(data).__name__}, not an object")
    return data


def _describe(target: MCPServer | StdioServerParameters | str | None) -> str:
    if isinstance(target, StdioServerParameters):
        return " ".join([target.command, *target.args])
    return str(target) if isinstance(target, str) else "in-memory server"


class SyncTaskQueueClient:
    """`TaskQueueClient` for synchronous code: the same methods, blocking, on a private event loop.

    with SyncTaskQueueClient("tasks.db") as tq:
        tq.create_task("Write the docs")
    """

    def __init__(self, target: Target = None, **kwargs: Any) -> None:
        self.client = TaskQueueClient(target, **kwargs)
        self._portal_cm: AbstractAsyncContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._client_cm: Any = None

    def __enter__(self) -> SyncTaskQueueClient:
        cm = start_blocking_portal("asyncio")
        self._portal = cm.__enter__()
        self._portal_cm = cm  # type: ignore[assignment]
        try:
            self._client_cm = self._portal.wrap_async_context_manager(self.client)
            self._client_cm.__enter__()
        except BaseException:
            cm.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._client_cm is not None:
                self._client_cm.__exit__(exc_type, exc, tb)
        finally:
            if self._portal_cm is not None:
                self._portal_cm.__exit__(None, None, None)  # type: ignore[attr-defined]
            self._portal = self._portal_cm = self._client_cm = None

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.client, name)
        if not callable(method) or name.startswith("_") or name == "iter_tasks":
            raise AttributeError(name)

        def blocking(*args: Any, **kwargs: Any) -> Any:
            if self._portal is None:
                raise RuntimeError("use the client inside `with SyncTaskQueueClient(...) as tq:`")

            async def run() -> Any:
                outcome = method(*args, **kwargs)
                return await outcome if isinstance(outcome, Awaitable) else outcome

            return self._portal.call(run)

        return blocking

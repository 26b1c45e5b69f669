"""The MCP tools: thin async wrappers that translate arguments to `TaskQueue` calls and back.

Descriptions are written for the model that reads them and kept short: the whole
`tools/list` is context an agent pays for on every turn (tests/test_token_budget.py).
Blocking store work runs in a worker thread so one slow write never stalls the event loop.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from mcp_taskqueue.errors import StoreBusy, StoreError, TaskQueueError
from mcp_taskqueue.identity import CURRENT_IDENTITY
from mcp_taskqueue.models import (
    MAX_BATCH,
    MAX_CLAIM,
    MAX_CRITERIA,
    MAX_DEPENDENCIES,
    MAX_FILTER,
    MAX_LIMIT,
    MAX_TAGS,
    ClaimResult,
    CreatedTasks,
    Description,
    Event,
    Key,
    Name,
    Priority,
    Project,
    ProjectList,
    QueueStats,
    Status,
    Tag,
    Task,
    TaskChanges,
    TaskPage,
    TaskSpec,
    TaskState,
    Text,
    Title,
)
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import WouldBlock, abandon_on, is_short_call

T = TypeVar("T")
log = logging.getLogger(__name__)

TOOLSETS = ("tasks", "queue", "projects", "workflows", "development", "notifications")

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
IDEMPOTENT = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)

TaskIdArg = Annotated[str, Field(min_length=1, max_length=64)]
WorkerArg = Annotated[str, Field(min_length=1, max_length=100, description="Your stable worker name.")]
ProjectArg = Annotated[Name | None, Field(description="Project name.")]
LeaseArg = Annotated[str, Field(min_length=1, max_length=64, description="lease_id from claim_task.")]


async def run_off_loop(fn: Callable[..., T], /, *args: Any, inline: bool = True, **kwargs: Any) -> T:
    """Run a store call without ever holding up the event loop.

    Scans (stats, listings, graph walks, batches) always go to a worker thread. The hot-path
    calls (marked `@short_call` in queue.py) are offered to the store to run right here (`Storage.run_inline`):
    SQLite takes them while it needs no waiting, ~170 µs cheaper than a thread hop; a store that
    would wait (a lock, the network) declines before doing anything and the call goes to a thread.
    `inline=False` for a call whose work grows with its input (a payload checked against a schema).

    A call in a thread that is cancelled (the client sent `notifications/cancelled`, or its
    connection dropped) is not waited for: the thread finds its caller gone and rolls its
    transaction back instead of committing (store/abandon.py).
    """
    owner = getattr(fn, "__self__", None)
    if inline and isinstance(owner, TaskQueue) and is_short_call(fn):
        try:
            return owner.store.run_inline(functools.partial(fn, *args, **kwargs))
        except WouldBlock:
            pass
    gone = threading.Event()

    def in_thread() -> T:
        with abandon_on(gone):
            return fn(*args, **kwargs)

    try:
        return await anyio.to_thread.run_sync(in_thread, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        gone.set()
        raise


async def run_queue(fn: Callable[..., T], /, *args: Any, inline: bool = True, **kwargs: Any) -> T:
    """`run_off_loop` for tools: our errors become tool errors that say what to do."""
    try:
        return await run_off_loop(fn, *args, inline=inline, **kwargs)
    except TaskQueueError as exc:
        if isinstance(exc, StoreError) and not isinstance(exc, StoreBusy):
            # The database failed, not the caller (the transaction was rolled back): worth a log line.
            log.exception("store error in %s", getattr(fn, "__name__", fn))
        raise ToolError(f"{exc.code}: {exc}") from exc


# Fields that hold a user's JSON: returned exactly as stored, nulls and empty lists included.
USER_JSON_FIELDS = frozenset({"payload", "result", "old", "new", "parameters", "evidence"})
# Arguments the caller sent as null (dropped before validation, so null means "the default");
# update_task reads it, since there an explicit null clears a field.
NULL_ARGUMENTS: ContextVar[frozenset[str]] = ContextVar("null_arguments", default=frozenset())


def prune(value: Any) -> Any:
    """Drop the server's own nulls and empty lists (absent means the same to the reader and costs no
    tokens), but never inside user JSON: a payload's `{"keep": null, "ids": []}` comes back as sent."""
    if isinstance(value, dict):
        return {
            k: v if k in USER_JSON_FIELDS else prune(v)
            for k, v in value.items()
            if v is not None and (v != [] or k in USER_JSON_FIELDS)
        }
    if isinstance(value, list):
        return [prune(v) for v in value]
    return value


def reply(model: BaseModel) -> CallToolResult:
    """Structured content plus the same JSON, compact, as text for clients that read only text."""
    full = model.model_dump(mode="json")
    data = prune(full)
    # pruning must not drop what the output schema requires, e.g. the `tasks` of an empty page
    for name, info in type(model).model_fields.items():
        if info.is_required() and name not in data:
            data[name] = full[name]
    if isinstance(model, ClaimResult) and model.task is None:
        data = {"task": None}
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


class CreateTasksArgs(BaseModel):
    """create_tasks' arguments as the queue checks them (tools/list sends `tasks` as plain objects)."""

    tasks: list[TaskSpec] = Field(min_length=1)


# Full input schemas for SDK generators and docs, where tools/list keeps an argument generic.
DOCUMENTED_INPUTS: dict[str, dict[str, Any]] = {"create_tasks": CreateTasksArgs.model_json_schema()}


def register_task_tools(mcp: MCPServer, queue: TaskQueue) -> None:
    @mcp.tool(annotations=WRITE)
    async def create_task(
        title: Annotated[Title, Field(description="Short imperative summary.")],
        project: Name = "default",
        description: Description = "",
        kind: Annotated[Name, Field(description="Free text; workers filter on it.")] = "task",
        priority: Priority = Priority.medium,
        payload: Annotated[dict[str, Any] | None, Field(description="JSON input for the worker.")] = None,
        tags: Annotated[list[Tag] | None, Field(max_length=MAX_TAGS)] = None,
        depends_on: Annotated[
            list[Key] | None, Field(max_length=MAX_DEPENDENCIES, description="Task ids to wait for.")
        ] = None,
        parent_id: Key | None = None,
        acceptance_criteria: Annotated[list[Title] | None, Field(max_length=MAX_CRITERIA)] = None,
        run_at: Annotated[Key | None, Field(description="ISO-8601; not claimable before.")] = None,
        max_attempts: int = 3,
        timeout_seconds: Annotated[int | None, Field(description="Default lease for each attempt.")] = None,
        idempotency_key: Annotated[Key | None, Field(description="Repeat calls return the first task.")] = None,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, TaskState]:
        """Create one task. It is `ready` at once unless it waits on depends_on or run_at (`pending`)."""
        spec = _spec(locals())
        # a payload is checked against its kind's schema: work that grows with the input, off the loop
        return reply(TaskState.of(await run_queue(queue.create, spec, actor(ctx), inline=payload is None)))

    @mcp.tool(annotations=WRITE)
    async def create_tasks(
        tasks: Annotated[
            list[dict[str, Any]],
            Field(
                min_length=1,
                max_length=MAX_BATCH,
                description="Each item takes create_task's arguments, plus an optional `ref`.",
            ),
        ],
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, CreatedTasks]:
        """Create several tasks atomically (all or none). Other items may list an item's `ref` in
        depends_on; cycles are refused."""
        # Items are checked against TaskSpec by the queue; the schema does not repeat create_task's.
        created = await run_queue(queue.create_many, tasks, actor(ctx))
        refs = {spec["ref"]: task.id for spec, task in zip(tasks, created, strict=True) if spec.get("ref")}
        return reply(CreatedTasks(tasks=[TaskState.of(t) for t in created], refs=refs))

    @mcp.tool(annotations=READ)
    async def get_task(task_id: TaskIdArg) -> Annotated[CallToolResult, Task]:
        """Everything about one task: payload, result, error, dependencies, lease, timestamps."""
        return reply(await run_queue(queue.get, task_id))

    @mcp.tool(annotations=READ)
    async def list_tasks(
        project: ProjectArg = None,
        status: Status | None = None,
        kind: Key | None = None,
        tag: Key | None = None,
        worker: Key | None = None,
        workflow_id: Key | None = None,
        query: Annotated[Key | None, Field(description="Full-text words in title/description.")] = None,
        limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = 20,
        cursor: Annotated[Key | None, Field(description="next_cursor of the previous page.")] = None,
    ) -> Annotated[CallToolResult, TaskPage]:
        """Compact task summaries in claim order (priority, then age), filtered; paginate with cursor."""
        page = await run_queue(
            queue.list,
            project=project,
            status=status,
            kind=kind,
            tag=tag,
            worker=worker,
            workflow_id=workflow_id,
            query=query,
            limit=limit,
            cursor=cursor,
        )
        return reply(page)

    @mcp.tool(annotations=WRITE)
    async def update_task(
        task_id: TaskIdArg,
        expected_version: Annotated[int | None, Field(description="Refuse if the task's version differs.")] = None,
        title: Title | None = None,
        description: Description | None = None,
        kind: Name | None = None,
        priority: Priority | None = None,
        payload: dict[str, Any] | None = None,
        tags: Annotated[list[Tag] | None, Field(max_length=MAX_TAGS)] = None,
        acceptance_criteria: Annotated[list[Title] | None, Field(max_length=MAX_CRITERIA)] = None,
        run_at: Key | None = None,
        max_attempts: int | None = None,
        timeout_seconds: int | None = None,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, TaskState]:
        """Change a task's descriptive fields (only those given; null clears one). Status moves use the queue
        tools."""
        fields = {k: v for k, v in _spec(locals()).items() if k not in ("task_id", "expected_version")}
        fields.update({k: None for k in NULL_ARGUMENTS.get() if k in TaskChanges.model_fields})
        return reply(TaskState.of(await run_queue(queue.update, task_id, fields, expected_version, actor(ctx))))

    @mcp.tool(annotations=WRITE)
    async def add_note(task_id: TaskIdArg, text: Text, ctx: Context | None = None) -> Annotated[CallToolResult, Event]:
        """Append a note to a task's history (findings, decisions, hand-off context)."""
        return reply(await run_queue(queue.add_note, task_id, text, actor(ctx)))

    @mcp.tool(annotations=IDEMPOTENT)
    async def add_dependency(
        task_id: TaskIdArg,
        depends_on: Annotated[Key, Field(description="Id of the task to wait for.")],
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, TaskState]:
        """Make task_id wait until depends_on completes. Refused if it would create a cycle."""
        return reply(TaskState.of(await run_queue(queue.add_dependency, task_id, depends_on, actor(ctx))))

    @mcp.tool(annotations=IDEMPOTENT)
    async def remove_dependency(
        task_id: TaskIdArg, depends_on: str, ctx: Context | None = None
    ) -> Annotated[CallToolResult, TaskState]:
        """Stop task_id waiting on depends_on; it becomes ready if nothing else holds it."""
        return reply(TaskState.of(await run_queue(queue.remove_dependency, task_id, depends_on, actor(ctx))))

    @mcp.tool(annotations=DESTRUCTIVE)
    async def cancel_task(
        task_id: TaskIdArg, reason: Text | None = None, ctx: Context | None = None
    ) -> Annotated[CallToolResult, TaskState]:
        """Cancel an unfinished task; tasks depending on it are marked blocked_by it."""
        return reply(TaskState.of(await run_queue(queue.cancel, task_id, reason, actor(ctx))))

    @mcp.tool(annotations=WRITE)
    async def retry_task(task_id: TaskIdArg, ctx: Context | None = None) -> Annotated[CallToolResult, TaskState]:
        """Re-queue a failed or cancelled task with fresh attempts."""
        return reply(TaskState.of(await run_queue(queue.retry, task_id, actor(ctx))))


def _spec(args: dict[str, Any]) -> dict[str, Any]:
    """Tool arguments (a tool's locals()) -> the given fields, dropping unset optionals and the
    closure's own names; the queue validates the rest."""
    return {k: v for k, v in args.items() if v is not None and k not in ("queue", "mcp", "ctx")}


def actor(ctx: Context | None) -> str | None:
    """Who is acting, for the history: the token's name over authenticated HTTP (server/auth.py),
    else the connected client's name, when it gave one."""
    identity = CURRENT_IDENTITY.get()
    if identity is not None and identity.authenticated:
        return identity.name
    try:
        params = ctx.session.client_params if ctx is not None else None
    except (AttributeError, RuntimeError, ValueError):
        return None
    return params.client_info.name if params is not None and params.client_info else None


def register_queue_tools(mcp: MCPServer, queue: TaskQueue) -> None:
    @mcp.tool(annotations=WRITE)
    async def claim_task(
        worker: WorkerArg,
        project: ProjectArg = None,
        kinds: Annotated[list[Key] | None, Field(max_length=MAX_FILTER, description="Only these kinds.")] = None,
        tags: Annotated[
            list[Key] | None, Field(max_length=MAX_FILTER, description="Only tasks with any of these tags.")
        ] = None,
        lease_seconds: Annotated[int | None, Field(ge=1, le=86400, description="Default 300.")] = None,
        max_tasks: Annotated[int | None, Field(ge=1, le=MAX_CLAIM, description="Default 1.")] = None,
        idempotency_key: Annotated[Key | None, Field(description="A retry with it returns the same leases.")] = None,
    ) -> Annotated[CallToolResult, ClaimResult]:
        """Atomically lease the highest-priority, oldest ready task to you; task is null when nothing is
        ready. Pass its lease_id to heartbeat (before the lease ends), then complete_task or fail_task."""
        tasks = await run_queue(
            queue.claim_many,
            worker,
            project=project,
            kinds=kinds,
            tags=tags,
            lease_seconds=lease_seconds,
            max_tasks=max_tasks or 1,
            idempotency_key=idempotency_key,
        )
        return reply(ClaimResult.of(tasks, many=(max_tasks or 1) > 1))

    @mcp.tool(annotations=WRITE)
    async def heartbeat(
        task_id: TaskIdArg,
        worker: WorkerArg,
        lease_id: LeaseArg,
        progress: Annotated[float | None, Field(ge=0, le=1, description="Fraction done, 0..1.")] = None,
        message: Text | None = None,
        lease_seconds: Annotated[int | None, Field(ge=1, le=86400)] = None,
    ) -> Annotated[CallToolResult, TaskState]:
        """Extend your lease on a running task and report progress."""
        task = await run_queue(
            queue.heartbeat,
            task_id,
            worker,
            lease_id=lease_id,
            progress=progress,
            message=message,
            lease_seconds=lease_seconds,
        )
        return reply(TaskState.of(task))

    @mcp.tool(annotations=IDEMPOTENT)
    async def complete_task(
        task_id: TaskIdArg,
        worker: WorkerArg,
        lease_id: LeaseArg,
        result: Annotated[Any, Field(description="JSON result for whoever reads it.")] = None,
    ) -> Annotated[CallToolResult, TaskState]:
        """Finish a task you hold; dependents whose dependencies are all done become ready."""
        return reply(TaskState.of(await run_queue(queue.complete, task_id, worker, result, lease_id=lease_id)))

    @mcp.tool(annotations=WRITE)
    async def fail_task(
        task_id: TaskIdArg,
        worker: WorkerArg,
        lease_id: LeaseArg,
        error: Annotated[Text, Field(description="What went wrong, for whoever retries.")],
        retryable: bool | None = None,
    ) -> Annotated[CallToolResult, TaskState]:
        """Report a failed attempt. Retryable (default) with attempts left: retried after exponential
        backoff (see run_at). Otherwise `failed`, and dependents are marked blocked."""
        task = await run_queue(queue.fail, task_id, worker, error, retryable is not False, lease_id=lease_id)
        return reply(TaskState.of(task))

    @mcp.tool(annotations=WRITE)
    async def release_task(
        task_id: TaskIdArg,
        worker: WorkerArg,
        lease_id: LeaseArg,
        delay_seconds: Annotated[float | None, Field(ge=0, le=86400)] = None,
    ) -> Annotated[CallToolResult, TaskState]:
        """Give a task back unfinished without using up an attempt (optionally not before a delay)."""
        task = await run_queue(queue.release, task_id, worker, delay_seconds or 0, lease_id=lease_id)
        return reply(TaskState.of(task))

    @mcp.tool(annotations=READ)
    async def queue_stats(project: ProjectArg = None) -> Annotated[CallToolResult, QueueStats]:
        """Counts by status, ready work by priority, expired leases, blocked tasks, oldest ready age."""
        return reply(await run_queue(queue.stats, project))


def register_project_tools(mcp: MCPServer, queue: TaskQueue) -> None:
    @mcp.tool(annotations=WRITE)
    async def create_project(
        name: Name,
        description: Text = "",
        coverage_threshold: Annotated[float, Field(ge=0, le=100)] = 90.0,
        required_reviews: Annotated[int, Field(ge=0, le=20)] = 3,
        review_score_threshold: Annotated[float, Field(ge=0, le=1)] = 0.8,
    ) -> Annotated[CallToolResult, Project]:
        """Create a project (a namespace for tasks) with its development-workflow thresholds.
        Projects are also created implicitly by the first task that names them."""
        settings = {
            "coverage_threshold": coverage_threshold,
            "required_reviews": required_reviews,
            "review_score_threshold": review_score_threshold,
        }
        return reply(await run_queue(queue.create_project, name, description, settings))

    @mcp.tool(annotations=READ)
    async def list_projects() -> Annotated[CallToolResult, ProjectList]:
        """All projects with their settings and task counts by status."""
        return reply(ProjectList(projects=await run_queue(queue.list_projects)))

    @mcp.tool(annotations=IDEMPOTENT)
    async def update_project(
        name: Name,
        description: Text | None = None,
        coverage_threshold: Annotated[float | None, Field(ge=0, le=100)] = None,
        required_reviews: Annotated[int | None, Field(ge=0, le=20)] = None,
        review_score_threshold: Annotated[float | None, Field(ge=0, le=1)] = None,
        payload_schemas: Annotated[
            dict[str, dict[str, Any] | None] | None,
            Field(description="kind -> JSON Schema its payloads must match (null removes)."),
        ] = None,
    ) -> Annotated[CallToolResult, Project]:
        """Change a project's description, thresholds or payload schemas (only those given)."""
        settings = {
            k: v
            for k, v in (
                ("coverage_threshold", coverage_threshold),
                ("required_reviews", required_reviews),
                ("review_score_threshold", review_score_threshold),
            )
            if v is not None
        }
        return reply(await run_queue(queue.update_project, name, description, settings, payload_schemas))


def register_workflow_toolsets(mcp: MCPServer, queue: TaskQueue, toolset: str) -> None:
    from mcp_taskqueue.server import workflow_tools  # imported late: it builds on this module

    workflow_tools.REGISTRARS[toolset](mcp, queue)


def register_notification_tools(mcp: MCPServer, queue: TaskQueue) -> None:
    from mcp_taskqueue.server.notifier_tools import register_notifier_tools  # imported late: it builds on this module

    register_notifier_tools(mcp, queue)


REGISTRARS: dict[str, Callable[[MCPServer, TaskQueue], None]] = {
    "tasks": register_task_tools,
    "queue": register_queue_tools,
    "projects": register_project_tools,
    "workflows": functools.partial(register_workflow_toolsets, toolset="workflows"),
    "development": functools.partial(register_workflow_toolsets, toolset="development"),
    "notifications": register_notification_tools,
}

"""The live board's read model and its actions: what the browser, the MCP App and `top` show.

Everything here is composed of queue and workflow reads (one store transaction each) and of
the queue's own operations for the actions, so the board can never disagree with an agent's
view. No HTTP here: server/board_routes.py serves these shapes as JSON, server/board_app.py
as an MCP App, top.py in the terminal.

Columns are statuses; the `blocked` column holds pending tasks (waiting on dependencies, on a
dependency that failed, or on `run_at`/backoff). Cards come in claim order (priority, then
age) a page at a time, so a column of 10,000 tasks costs one indexed page read.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from mcp_taskqueue.errors import ValidationFailed
from mcp_taskqueue.inputs import decode_cursor, encode_cursor, parse_time
from mcp_taskqueue.models import (
    MAX_LIMIT,
    PRIORITY_BY_RANK,
    Event,
    HistoryPage,
    Priority,
    Status,
    Task,
    TaskSummary,
    Workflow,
    WorkflowSummary,
)
from mcp_taskqueue.queue import TaskQueue, check_query
from mcp_taskqueue.store import Tx
from mcp_taskqueue.store.board_queries import CARD_COLUMNS
from mcp_taskqueue.store.rows import iso
from mcp_taskqueue.workflows import Workflows

T = TypeVar("T")

# (column key, status it shows, label), left to right.
COLUMNS: tuple[tuple[str, Status, str], ...] = (
    ("ready", Status.ready, "Ready"),
    ("running", Status.running, "Running"),
    ("blocked", Status.pending, "Blocked"),
    ("failed", Status.failed, "Failed"),
    ("completed", Status.completed, "Completed"),
    ("cancelled", Status.cancelled, "Cancelled"),
)
COLUMN_STATUS = {key: status for key, status, _ in COLUMNS}
STATUS_COLUMN = {status.value: key for key, status, _ in COLUMNS}
DEFAULT_PAGE = 50
CHART_BUCKETS = 30
MAX_CHART_EVENTS = 50_000
# Workflow drawing: node box and gaps in SVG user units.
NODE_WIDTH, NODE_HEIGHT, LAYER_GAP, ROW_GAP = 180, 56, 60, 20


class Card(TaskSummary):
    """One task on the board: its summary plus what a supervisor needs at a glance."""

    column: str
    attempts: int = 0
    max_attempts: int = 3
    lease_expires_at: str | None = None
    lease_seconds_left: float | None = Field(None, description="Seconds until the lease runs out; negative: overdue.")
    blocked_by: list[str] = Field(default_factory=list)
    waiting_on: int = Field(0, description="Dependencies not completed yet.")
    run_at: str | None = None
    workflow_id: str | None = None
    tags: list[str] = Field(default_factory=list)
    updated_at: str


class Column(BaseModel):
    key: str
    status: Status
    label: str
    count: int
    cards: list[Card]
    next_cursor: str | None = None


class Filters(BaseModel):
    """What narrows the board; every field optional. `query` is free text (title and description)."""

    project: str | None = None
    kind: str | None = None
    tag: str | None = None
    worker: str | None = None
    query: str | None = None
    workflow_id: str | None = None

    def active(self) -> bool:
        return any(getattr(self, name) for name in ("kind", "tag", "worker", "query", "workflow_id"))


class BoardView(BaseModel):
    project: str | None
    filters: Filters
    now: str
    columns: list[Column]
    total: int


class ProjectCard(BaseModel):
    name: str
    description: str = ""
    counts: dict[str, int]
    total: int
    workflows: list[WorkflowSummary] = Field(default_factory=list)


class TaskDetail(BaseModel):
    task: Task
    column: str
    lease_seconds_left: float | None = None
    history: list[Event]
    notes: list[Event]
    older_events: bool = Field(
        False, description="`history` holds only the newest events; `Board.history` pages through all of them."
    )
    now: str


class NodePosition(BaseModel):
    id: str
    x: int
    y: int
    layer: int
    critical: bool


class Edge(BaseModel):
    source: str = Field(description="The dependency (drawn on the left).")
    target: str
    critical: bool


class WorkflowDrawing(BaseModel):
    workflow: Workflow
    nodes: list[NodePosition]
    edges: list[Edge]
    width: int
    height: int


class Charts(BaseModel):
    """Recent queue history in equal buckets (oldest first); times are the buckets' ends."""

    project: str | None
    minutes: int
    buckets: list[str]
    counted_since: str | None = Field(
        None,
        description="The charts read the store's newest MAX_CHART_EVENTS events, which begin here; buckets "
        "before it are null (not counted). None: the whole range is counted.",
    )
    depth: dict[str, list[int | None]] = Field(description="Tasks per status at each bucket's end.")
    throughput: list[int | None] = Field(description="Tasks completed within each bucket.")
    failure_rate: list[float | None] = Field(description="Failed attempts / finished attempts; null: none finished.")
    claim_latency: list[float | None] = Field(description="Median seconds from ready to claimed; null: no claims.")


def layout(tasks: Sequence[Any], critical_path: Sequence[str]) -> tuple[list[NodePosition], list[Edge], int, int]:
    """Layered drawing of a DAG: a task one layer right of its deepest dependency; rows by the
    mean row of the dependencies (fewer crossings). Returns nodes, edges, width, height."""
    by_id = {t.id: t for t in tasks}
    layer: dict[str, int] = {}
    for task in tasks:  # iterative longest path from the roots
        stack = [task.id]
        while stack:
            current = stack[-1]
            if current in layer:
                stack.pop()
                continue
            deps = [d for d in by_id[current].depends_on if d in by_id]
            todo = [d for d in deps if d not in layer]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            layer[current] = 1 + max((layer[d] for d in deps), default=-1)
    layers: dict[int, list[str]] = {}
    for task in tasks:
        layers.setdefault(layer[task.id], []).append(task.id)
    row: dict[str, float] = {}
    for index in sorted(layers):
        members = layers[index]
        if index:
            members.sort(key=lambda i: statistics.fmean([row[d] for d in by_id[i].depends_on if d in row] or [0.0]))
        for position, task_id in enumerate(members):
            row[task_id] = position
    on_path = set(critical_path)
    path_edges = set(zip(critical_path, critical_path[1:], strict=False))
    nodes = [
        NodePosition(
            id=t.id,
            x=layer[t.id] * (NODE_WIDTH + LAYER_GAP),
            y=int(row[t.id]) * (NODE_HEIGHT + ROW_GAP),
            layer=layer[t.id],
            critical=t.id in on_path,
        )
        for t in tasks
    ]
    edges = [
        Edge(source=d, target=t.id, critical=(d, t.id) in path_edges) for t in tasks for d in t.depends_on if d in by_id
    ]
    width = (max(layers, default=0) + 1) * (NODE_WIDTH + LAYER_GAP) - LAYER_GAP
    height = max((len(m) for m in layers.values()), default=1) * (NODE_HEIGHT + ROW_GAP) - ROW_GAP
    return nodes, edges, width, height


def event_statuses(action: str, old: Any, new: Any) -> tuple[str | None, str | None]:
    """(status before, status after) of a history event, or (None, None) if it moved nothing.

    Creation has no status before; `updated` moves between pending and ready (a new run_at).
    """
    after = new.get("status") if isinstance(new, dict) else None
    if after is None:
        return None, None
    if action == "created":
        return None, after
    if isinstance(old, str):
        return old, after
    if action == "updated" and after in (Status.pending.value, Status.ready.value):
        return (Status.ready.value if after == Status.pending.value else Status.pending.value), after
    return None, None


def charts_from_events(
    rows: Iterable[Any],
    counts_now: Mapping[str, int],
    now: float,
    minutes: int,
    buckets: int = CHART_BUCKETS,
    counted_since: float | None = None,
) -> Charts:
    """Depth is rebuilt backwards from today's counts by undoing each status move; throughput,
    failure rate and claim latency are counted forwards. `rows` come newest first. `rows` that
    begin at `counted_since` (older events exist but were not read) leave earlier buckets null."""
    start = now - minutes * 60
    width = minutes * 60 / buckets
    ends = [start + width * (i + 1) for i in range(buckets)]
    events = [(r["task_seq"], r["at"], r["action"], _loads(r["old"]), _loads(r["new"])) for r in rows]
    counts = {s.value: counts_now.get(s.value, 0) for s in Status}
    depth = {s.value: [0] * buckets for s in Status}
    position = 0
    for index in range(buckets - 1, -1, -1):  # newest bucket first, undoing what came after its end
        while position < len(events) and events[position][1] > ends[index]:
            _, _, action, old, new = events[position]
            before, after = event_statuses(action, old, new)
            if after is not None:
                counts[after] -= 1
            if before is not None:
                counts[before] += 1
            position += 1
        for status, value in counts.items():
            depth[status][index] = max(0, value)
    completed = [0] * buckets
    failed = [0] * buckets
    latencies: list[list[float]] = [[] for _ in range(buckets)]
    ready_since: dict[int, float] = {}
    for task_seq, at, action, old, new in reversed(events):
        index = min(buckets - 1, max(0, int((at - start) // width)))
        before, after = event_statuses(action, old, new)
        if action == "complete":
            completed[index] += 1
        elif action == "fail" or (action == "lease_expired" and before == Status.running.value):
            failed[index] += 1
        if action == "claimed" and task_seq in ready_since:
            latencies[index].append(at - ready_since.pop(task_seq))
        elif after == Status.ready.value:
            ready_since[task_seq] = at

    def counted(values: list[T], whole: bool = True) -> list[T | None]:
        """Null where the bucket (whole: all of it; else its end) lies before `counted_since`."""
        if counted_since is None:
            return list(values)
        return [
            v if (end - width if whole else end) >= counted_since else None for v, end in zip(values, ends, strict=True)
        ]

    return Charts(
        project=None,
        minutes=minutes,
        buckets=[iso(end) or "" for end in ends],
        counted_since=iso(counted_since) if counted_since is not None else None,
        depth={status: counted(values, whole=False) for status, values in depth.items()},
        throughput=counted(completed),
        failure_rate=counted(
            [round(f / (c + f), 4) if c + f else None for c, f in zip(completed, failed, strict=True)]
        ),
        claim_latency=counted([round(statistics.median(v), 3) if v else None for v in latencies]),
    )


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class Board:
    """The board over one queue. Reads are one transaction each; actions are queue operations."""

    def __init__(self, queue: TaskQueue) -> None:
        self.queue = queue
        self.workflows = Workflows(queue)

    # --- reads ------------------------------------------------------------------------------

    def projects(self, workflows_per_project: int = 5, only: Collection[str] | None = None) -> list[ProjectCard]:
        """Every project (or those in `only`) with its task counts and newest workflows."""
        cards = []
        for project in self.queue.list_projects():
            if only is not None and project.name not in only:
                continue
            counts = {s.value: project.task_counts.get(s.value, 0) for s in Status}
            page = self.workflows.list(project=project.name, limit=workflows_per_project)
            cards.append(
                ProjectCard(
                    name=project.name,
                    description=project.description,
                    counts=counts,
                    total=sum(counts.values()),
                    workflows=page.workflows,
                )
            )
        return cards

    def column(
        self, key: str, filters: Filters | None = None, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> Column:
        """One column: its size under the filters and a page of its cards (`cursor` for the next)."""
        if key not in COLUMN_STATUS:
            raise ValidationFailed(f"unknown column {key!r}; columns are {', '.join(COLUMN_STATUS)}")
        filters = filters or Filters()
        return self.queue.store.read(lambda tx: self._column(tx, key, filters, limit, cursor, self.queue.clock()))

    def view(self, filters: Filters | None = None, limit: int = DEFAULT_PAGE, columns: Sequence[str] = ()) -> BoardView:
        """Every column (or the named ones) in one consistent read."""
        filters = filters or Filters()
        keys = [key for key, _, _ in COLUMNS if not columns or key in columns]

        def op(tx: Tx) -> BoardView:
            now = self.queue.clock()
            cols = [self._column(tx, key, filters, limit, None, now) for key in keys]
            return BoardView(
                project=filters.project,
                filters=filters,
                now=iso(now) or "",
                columns=cols,
                total=sum(c.count for c in cols),
            )

        return self.queue.store.read(op)

    def _column(self, tx: Tx, key: str, filters: Filters, limit: int, cursor: str | None, now: float) -> Column:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationFailed(f"limit must be between 1 and {MAX_LIMIT}")
        status = COLUMN_STATUS[key]
        match = check_query(filters.query) if filters.query else None
        after = decode_cursor(cursor, 2) if cursor else None
        criteria: dict[str, Any] = {
            "project": filters.project,
            "status": status.value,
            "kind": filters.kind,
            "tag": filters.tag,
            "worker": filters.worker,
            "workflow_id": filters.workflow_id,
            "parent_id": None,
            "query": match,
        }
        rows = tx.list_tasks(
            **criteria, after=(after[0], after[1]) if after else None, limit=limit + 1, columns=CARD_COLUMNS
        )
        more = len(rows) > limit
        rows = rows[:limit]
        if filters.active():
            count = tx.count_tasks(*tx.task_filters(**criteria))
        else:  # the trigger-kept counts: no scan for the common, unfiltered board
            count = tx.count_by_status(filters.project).get(status.value, 0)
        return Column(
            key=key,
            status=status,
            label=dict((k, label) for k, _, label in COLUMNS)[key],
            count=count,
            cards=[self._card(row, now) for row in rows],
            next_cursor=encode_cursor(rows[-1]["priority"], rows[-1]["seq"]) if more else None,
        )

    @staticmethod
    def _card(row: Any, now: float) -> Card:
        lease = row["lease_expires_at"]
        running = row["status"] == Status.running.value
        return Card(
            id=row["id"],
            title=row["title"],
            status=Status(row["status"]),
            column=STATUS_COLUMN[row["status"]],
            priority=PRIORITY_BY_RANK[row["priority"]],
            project=row["project"],
            kind=row["kind"],
            worker=row["worker"] if running else None,
            progress=row["progress"],
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            lease_expires_at=iso(lease) if running else None,
            lease_seconds_left=round(lease - now, 1) if running and lease is not None else None,
            blocked_by=json.loads(row["blocked_by"]) if row["blocked_by"] else [],
            waiting_on=row["unmet_deps"],
            run_at=iso(row["run_at"]) if row["status"] == Status.pending.value and row["run_at"] > now else None,
            workflow_id=row["workflow_id"],
            tags=json.loads(row["tags"]) if row["tags"] else [],
            version=row["version"],
            updated_at=iso(row["updated_at"]) or "",
        )

    def task(self, task_id: str, history_limit: int = 500) -> TaskDetail:
        """The task with its newest `history_limit` events (oldest first) and the notes among them;
        `older_events` says whether there are more (`history` pages through every event)."""
        task = self.queue.get(task_id)
        history = self.queue.history(task_id, limit=history_limit + 1, latest=True).events
        older = len(history) > history_limit
        history = history[1:] if older else history
        now = self.queue.clock()
        left = None
        if task.status == Status.running and task.lease_expires_at:
            left = round(parse_time(task.lease_expires_at) - now, 1)
        return TaskDetail(
            task=task,
            column=STATUS_COLUMN[task.status.value],
            lease_seconds_left=left,
            history=history,
            notes=[e for e in history if e.action == "note"],
            older_events=older,
            now=iso(now) or "",
        )

    def history(self, task_id: str, cursor: str | None = None, limit: int = 1000) -> HistoryPage:
        """Every event of the task, oldest first, `limit` (1-1000) a page; `next_cursor` for the next."""
        return self.queue.history(task_id, cursor=cursor, limit=limit)

    def workflow(self, workflow_id: str) -> WorkflowDrawing:
        """The workflow (status, progress, critical path) with a layered drawing of its graph."""
        workflow = self.workflows.get(workflow_id)
        nodes, edges, width, height = layout(workflow.tasks, workflow.critical_path)
        return WorkflowDrawing(workflow=workflow, nodes=nodes, edges=edges, width=width, height=height)

    def charts(self, project: str | None = None, minutes: int = 60, max_events: int = MAX_CHART_EVENTS) -> Charts:
        """Depth by status, throughput, failure rate and claim latency over the last `minutes`, from
        the store's newest `max_events` events (buckets before them are null: `counted_since`)."""
        if not 1 <= minutes <= 7 * 24 * 60:
            raise ValidationFailed("minutes must be between 1 and 10080 (a week)")

        def op(tx: Tx) -> Charts:
            now = self.queue.clock()
            since = now - minutes * 60
            rows = tx.recent_events(since, project, max_events)
            counted_since = tx.events_counted_since(max_events)
            if counted_since is not None and counted_since <= since:
                counted_since = None  # the window reaches back far enough
            charts = charts_from_events(rows, tx.count_by_status(project), now, minutes, counted_since=counted_since)
            charts.project = project
            return charts

        return self.queue.store.read(op)

    def visible_changes(self, change: Mapping[str, list[str]], projects: Collection[str]) -> dict[str, list[str]]:
        """A live-feed change (`{"tasks", "projects", "workflows"}` ids and names) cut down to what
        happened in `projects`: one read looks up the projects of the tasks and workflows named.
        `"*"` (the project list changed) stays; deleted ids drop out."""

        def op(tx: Tx) -> dict[str, list[str]]:
            tasks = tx.projects_of("tasks", change.get("tasks", []))
            workflows = tx.projects_of("workflows", change.get("workflows", []))
            return {
                "tasks": [i for i in change.get("tasks", []) if tasks.get(i) in projects],
                "projects": [p for p in change.get("projects", []) if p == "*" or p in projects],
                "workflows": [i for i in change.get("workflows", []) if workflows.get(i) in projects],
            }

        return self.queue.store.read(op)

    # --- actions (each one queue operation; the caller checks the actor's scope first) -------

    def cancel(self, task_id: str, actor: str, reason: str | None = None) -> Task:
        return self.queue.cancel(task_id, reason=reason or f"cancelled on the board by {actor}", actor=actor)

    def retry(self, task_id: str, actor: str) -> Task:
        return self.queue.retry(task_id, actor=actor)

    def release(self, task_id: str, actor: str) -> Task:
        """Take a stuck task away from its worker and make it claimable again."""
        return self.queue.revoke_lease(task_id, actor=actor)

    def set_priority(
        self, task_id: str, priority: Priority | str, actor: str, expected_version: int | None = None
    ) -> Task:
        try:
            level = Priority(priority)
        except ValueError:
            choices = ", ".join(p.value for p in Priority)
            raise ValidationFailed(f"priority {priority!r} is not one of {choices}") from None
        return self.queue.update(task_id, {"priority": level}, expected_version=expected_version, actor=actor)

    def add_note(self, task_id: str, text: str, actor: str) -> Event:
        return self.queue.add_note(task_id, text, actor=actor)

    def act(self, action: str, task_id: str, actor: str, body: Mapping[str, Any]) -> Task | Event:
        """One of `ACTION_SCOPES`' actions with its JSON body: cancel `{reason?}`, retry, release,
        priority `{priority, expected_version?}`, note `{text}`."""
        if action == "cancel":
            return self.cancel(task_id, actor, reason=body.get("reason"))
        if action == "retry":
            return self.retry(task_id, actor)
        if action == "release":
            return self.release(task_id, actor)
        if action == "priority":
            return self.set_priority(task_id, str(body.get("priority")), actor, body.get("expected_version"))
        if action == "note":
            text = body.get("text")
            if not isinstance(text, str):
                raise ValidationFailed("a note needs {'text': '...'}")
            return self.add_note(task_id, text, actor)
        raise ValidationFailed(f"no board action {action!r}; actions: {', '.join(ACTION_SCOPES)}")


# Which scope each board action needs (tokens and scopes: PRODUCT.md "Identity").
ACTION_SCOPES: dict[str, str] = {
    "cancel": "write",
    "retry": "write",
    "release": "admin",
    "priority": "write",
    "note": "write",
}
# Actions that throw work away: the board asks before doing them.
DESTRUCTIVE_ACTIONS = frozenset({"cancel", "release"})

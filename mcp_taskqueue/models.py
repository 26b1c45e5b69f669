"""The vocabulary of the queue: statuses, priorities, tasks and the inputs that create them.

Everything above the store speaks in these models; the MCP tools return them as structured
content, so their field names and limits are part of the public contract.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

# Size limits: documented in docs/reliability.md and enforced for every entry point.
MAX_TITLE = 500
MAX_DESCRIPTION = 20_000
MAX_TEXT = 10_000  # notes, errors, evidence text
MAX_NAME = 100  # project names, kinds, workers, tags
MAX_TAGS = 20
MAX_CRITERIA = 50
MAX_DEPENDENCIES = 200
MAX_BATCH = 500
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_JSON_DEPTH = 32
MAX_LEASE_SECONDS = 24 * 3600
DEFAULT_LEASE_SECONDS = 300
MAX_ATTEMPTS = 100
MAX_LIMIT = 200
MAX_KEY = 200  # idempotency keys, cursors, times, filter values
MAX_FILTER = 50  # values in a claim's kinds/tags filter
# The largest legal call fits in this many bytes of JSON: the HTTP body cap, and a batch's budget.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_CLAIM = 50  # tasks one claim_task may lease at once


class Status(str, Enum):
    """Where a task is in its life. Terminal: completed, failed, cancelled."""

    pending = "pending"
    ready = "ready"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.completed, Status.failed, Status.cancelled})


class Priority(str, Enum):
    """Claim order: critical before high before medium before low."""

    critical = "critical"
    high = "high"
    medium = "medium"
    low = "low"

    @property
    def rank(self) -> int:
        return PRIORITY_RANK[self]


PRIORITY_RANK = {Priority.critical: 0, Priority.high: 1, Priority.medium: 2, Priority.low: 3}
PRIORITY_BY_RANK = {rank: p for p, rank in PRIORITY_RANK.items()}

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]*$")]
Tag = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
TaskId = Annotated[str, Field(min_length=1, max_length=64)]
# Tool-argument bounds: advertised in the schema and checked before any item is validated (server/app.py).
Title = Annotated[str, Field(max_length=MAX_TITLE)]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Key = Annotated[str, Field(max_length=MAX_KEY)]


def invalid_text(value: Any, where: str = "") -> str | None:
    """The path of the first text in a JSON value that is not valid Unicode (a lone surrogate, as
    JavaScript makes by cutting an emoji in half), or None. Such text cannot be stored or sent."""
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return path or "text"
        elif isinstance(item, dict):
            for key, child in item.items():
                name = f"{path}.{key}" if path else str(key)
                if invalid_text(key) is not None:
                    return name.encode("utf-8", "replace").decode()
                stack.append((name, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{index}]", child) for index, child in enumerate(item))
    return None


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of a JSON value, stopping early once past `limit` (deep input is refused)."""
    depth = 0
    frontier = [value]
    while frontier:
        depth += 1
        if depth > limit:
            return depth
        nxt: list[Any] = []
        for item in frontier:
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
        frontier = nxt
    return depth - 1 if depth else 0


class TaskSpec(BaseModel):
    """What a caller supplies to create a task (one item of `create_tasks`)."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=MAX_TITLE)
    project: Name = "default"
    description: str = Field("", max_length=MAX_DESCRIPTION)
    kind: Name = "task"
    priority: Priority = Priority.medium
    payload: dict[str, Any] | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    depends_on: list[TaskId] = Field(default_factory=list, max_length=MAX_DEPENDENCIES)
    parent_id: TaskId | None = None
    acceptance_criteria: list[Annotated[str, Field(max_length=MAX_TITLE)]] = Field(
        default_factory=list, max_length=MAX_CRITERIA
    )
    run_at: str | None = Field(None, description="ISO-8601 time before which the task is not claimable.")
    max_attempts: StrictInt = Field(3, ge=1, le=MAX_ATTEMPTS)
    timeout_seconds: StrictInt | None = Field(None, ge=1, le=MAX_LEASE_SECONDS)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    ref: str | None = Field(None, min_length=1, max_length=MAX_NAME, description="Local name for batch refs.")
    workflow_id: str | None = Field(None, max_length=64)

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, tags: list[str]) -> list[str]:
        return list(dict.fromkeys(tags))

    @field_validator("depends_on")
    @classmethod
    def _unique_deps(cls, deps: list[str]) -> list[str]:
        return list(dict.fromkeys(deps))


class TaskChanges(BaseModel):
    """The descriptive fields `update_task` may change; the same limits as creation."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(None, min_length=1, max_length=MAX_TITLE)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    kind: Name | None = None
    priority: Priority | None = None
    payload: dict[str, Any] | None = None
    tags: list[Tag] | None = Field(None, max_length=MAX_TAGS)
    acceptance_criteria: list[Annotated[str, Field(max_length=MAX_TITLE)]] | None = Field(None, max_length=MAX_CRITERIA)
    run_at: str | None = None
    max_attempts: StrictInt | None = Field(None, ge=1, le=MAX_ATTEMPTS)
    timeout_seconds: StrictInt | None = Field(None, ge=1, le=MAX_LEASE_SECONDS)

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, tags: list[str] | None) -> list[str] | None:
        return None if tags is None else list(dict.fromkeys(tags))


class Task(BaseModel):
    """A task as stored, with every field of the data model."""

    id: str
    project: str
    title: str
    description: str = ""
    kind: str = "task"
    priority: Priority = Priority.medium
    status: Status
    payload: dict[str, Any] | None = None
    result: Any = None
    error: str | None = None
    tags: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)
    parent_id: str | None = None
    workflow_id: str | None = None
    acceptance_criteria: list[str] = Field(default_factory=list)
    phase: str | None = None
    run_at: str | None = None
    attempts: int = 0
    max_attempts: int = 3
    timeout_seconds: int | None = None
    idempotency_key: str | None = None
    worker: str | None = None
    lease_id: str | None = Field(None, description="Fencing token of your lease; only claim_task shows it.")
    lease_expires_at: str | None = None
    progress: float | None = None
    blocked_by: list[str] = Field(default_factory=list, description="Dependencies that failed or were cancelled.")
    version: int
    created_at: str
    updated_at: str
    started_at: str | None = None
    finished_at: str | None = None


class TaskSummary(BaseModel):
    """The compact form used in task lists: enough to decide the next call."""

    id: str
    title: str
    status: Status
    priority: Priority
    project: str
    kind: str | None = None
    worker: str | None = None
    progress: float | None = None
    version: int


class TaskState(BaseModel):
    """What a change left behind: identity, status and the fields the worker protocol moves."""

    id: str
    title: str
    status: Status
    version: int
    attempts: int = 0
    worker: str | None = None
    progress: float | None = None
    run_at: str | None = None
    lease_expires_at: str | None = None
    error: str | None = None
    blocked_by: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, task: Task) -> TaskState:
        return cls(**{name: getattr(task, name) for name in cls.model_fields})


class CreatedTasks(BaseModel):
    """The tasks of a batch in input order, and each local ref resolved to its new id."""

    tasks: list[TaskState]
    refs: dict[str, str] = Field(default_factory=dict)


class TaskPage(BaseModel):
    """One page of a task listing; pass `next_cursor` back as `cursor` for the next page."""

    tasks: list[TaskSummary]
    next_cursor: str | None = None


class Event(BaseModel):
    """One entry of a task's append-only history."""

    seq: int
    task_id: str
    at: str
    actor: str | None = None
    action: str
    old: Any = None
    new: Any = None


class HistoryPage(BaseModel):
    events: list[Event]
    next_cursor: str | None = None


class ProjectSettings(BaseModel):
    """Per-project thresholds for the development workflow."""

    model_config = ConfigDict(extra="forbid")

    coverage_threshold: float = Field(90.0, ge=0, le=100)
    required_reviews: StrictInt = Field(3, ge=0, le=20)
    review_score_threshold: float = Field(0.8, ge=0, le=1)


class Project(BaseModel):
    name: str
    description: str = ""
    settings: ProjectSettings = Field(default_factory=lambda: ProjectSettings())
    created_at: str
    task_counts: dict[str, int] = Field(default_factory=dict)


class ProjectList(BaseModel):
    projects: list[Project]


class QueueStats(BaseModel):
    """Counts by status, plus what needs a human or an agent's attention."""

    project: str | None = None
    total: int
    by_status: dict[str, int]
    by_priority_ready: dict[str, int]
    expired_leases: int
    blocked: int
    oldest_ready_age_seconds: float | None = None


class ClaimResult(BaseModel):
    """The claimed task, or `task: null` when nothing is ready for this worker. With `max_tasks` > 1,
    `tasks` lists every task claimed (the first is also `task`), each with its own `lease_id`."""

    task: Task | None = None
    tasks: list[Task] = Field(default_factory=list)
    lease_id: str | None = None
    lease_expires_at: str | None = None

    @classmethod
    def of(cls, tasks: list[Task], many: bool = False) -> ClaimResult:
        first = tasks[0] if tasks else None
        return cls(
            task=first,
            tasks=tasks if many else [],
            lease_id=first.lease_id if first else None,
            lease_expires_at=first.lease_expires_at if first else None,
        )


# --- workflows ---------------------------------------------------------------------------


class WorkflowTask(BaseModel):
    """One task of a workflow, with what decides when it can run."""

    id: str
    title: str
    status: Status
    priority: Priority
    depends_on: list[str] = Field(default_factory=list)
    worker: str | None = None
    phase: str | None = None


class Workflow(BaseModel):
    """A workflow with its derived state: status, progress, what runs, what is blocked and by what."""

    id: str
    name: str
    project: str
    template: str | None = None
    status: str  # pending|running|blocked|completed|failed|cancelled
    progress: float  # completed fraction of the tasks that are not cancelled
    counts: dict[str, int]
    running: list[str] = Field(default_factory=list)
    blocked: dict[str, list[str]] = Field(default_factory=dict)  # task id -> the dead ends in its way
    critical_path: list[str] = Field(default_factory=list)  # longest chain of unfinished tasks
    critical_path_length: int = 0
    refs: dict[str, str] = Field(default_factory=dict)
    tasks: list[WorkflowTask] = Field(default_factory=list)
    created_at: str


# A workflow's derived status (workflows.derive_status); list_workflows filters by it.
WorkflowStatus = Literal["pending", "running", "blocked", "completed", "failed", "cancelled"]
WORKFLOW_STATUSES: tuple[str, ...] = get_args(WorkflowStatus)


class WorkflowSummary(BaseModel):
    """A workflow in lists and mutation results."""

    id: str
    name: str
    project: str
    status: str
    progress: float
    total: int
    created_at: str

    @classmethod
    def of(cls, workflow: Workflow) -> WorkflowSummary:
        return cls(
            id=workflow.id,
            name=workflow.name,
            project=workflow.project,
            status=workflow.status,
            progress=workflow.progress,
            total=sum(workflow.counts.values()),
            created_at=workflow.created_at,
        )


class CreatedWorkflow(WorkflowSummary):
    """The new workflow, with each local ref resolved to its task id."""

    refs: dict[str, str]


class WorkflowPage(BaseModel):
    workflows: list[WorkflowSummary]
    next_cursor: str | None = None


# --- the development workflow ------------------------------------------------------------


class Phase(str, Enum):
    """Development phases, in order; each advance needs its evidence (development.py)."""

    planning = "planning"
    implementation = "implementation"
    test_creation = "test_creation"
    testing = "testing"
    review = "review"
    done = "done"


class TestReport(BaseModel):
    """A test run's outcome; passing means at least one test passed and none failed or errored."""

    model_config = ConfigDict(extra="forbid")
    __test__ = False  # not a pytest class

    passed: int = Field(ge=0)
    failed: int = Field(0, ge=0)
    errors: int = Field(0, ge=0)
    skipped: int = Field(0, ge=0)
    report_path: str | None = Field(None, max_length=MAX_TITLE)

    @property
    def passing(self) -> bool:
        return self.passed > 0 and self.failed == 0 and self.errors == 0


class Review(BaseModel):
    reviewer: str
    score: float
    approved: bool
    comment: str | None = None
    at: str


class PhaseState(BaseModel):
    """Where a task is in the development workflow and what the next advance needs."""

    task_id: str
    phase: str | None = None
    version: int
    approvals: int = 0
    required_reviews: int
    approved_by: list[str] = Field(default_factory=list)
    next_phase: str | None = None
    next_requires: str | None = None

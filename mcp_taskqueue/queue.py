"""Task semantics over the store: the state machine, dependencies, leases, retries, history.

No MCP and no CLI here. Every public method is one store transaction, so each either
happens completely or not at all, and every change it makes appends a history event.
"""

from __future__ import annotations

import builtins
import json
import random
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import ValidationError

from mcp_taskqueue import progress
from mcp_taskqueue.blocking import propagate_blocked
from mcp_taskqueue.errors import Conflict, InvalidTransition, LeaseLost, NotFound, ValidationFailed
from mcp_taskqueue.ids import new_id
from mcp_taskqueue.inputs import check_text, decode_cursor, dump_json, encode_cursor, parse_time
from mcp_taskqueue.models import (
    DEFAULT_LEASE_SECONDS,
    MAX_BATCH,
    MAX_CLAIM,
    MAX_LEASE_SECONDS,
    MAX_LIMIT,
    PRIORITY_BY_RANK,
    Event,
    HistoryPage,
    Priority,
    Project,
    ProjectSettings,
    QueueStats,
    Status,
    Task,
    TaskChanges,
    TaskPage,
    TaskSpec,
)
from mcp_taskqueue.notify.events import enqueue_for_history
from mcp_taskqueue.payload_schemas import CheckedSchemas, PayloadSchemas, check_schema
from mcp_taskqueue.store import (
    LockedElsewhere,
    Storage,
    Tx,
    WouldBlock,
    no_foreign_wait,
    rows,
    short_call,
    waiting_allowed,
)
from mcp_taskqueue.store.queries import MAX_QUERY, search_terms

# Which status may move to which; anything else is refused with InvalidTransition.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.pending: frozenset({Status.ready, Status.cancelled}),
    Status.ready: frozenset({Status.pending, Status.running, Status.cancelled}),
    Status.running: frozenset({Status.completed, Status.failed, Status.ready, Status.pending, Status.cancelled}),
    Status.completed: frozenset(),
    Status.failed: frozenset({Status.ready, Status.pending}),
    Status.cancelled: frozenset({Status.ready, Status.pending}),
}

T = TypeVar("T")

PROMOTE_ROUNDS = 4  # sweeps per promote_due transaction: at most ~2,400 rows under the write lock
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 300.0


def check_query(text: str) -> str:
    """A free-text search as given, once it is short enough and has a word to search for."""
    if len(text) > MAX_QUERY:
        raise ValidationFailed(f"query is {len(text)} characters; the limit is {MAX_QUERY}")
    if not search_terms(text):
        raise ValidationFailed("query has no searchable words; give one or more words to search for")
    return text


def spec_errors(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{prefix}{loc}: {err['msg']}")
    return "; ".join(parts)


class TaskQueue:
    """The queue's public operations, each one transaction on a store (store/contract.py)."""

    def __init__(self, store: Storage, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.payload_schemas = PayloadSchemas()
        # One promotion at a time in this process: a read that finds work due waits for a running
        # one (the background promoter) and then sees its result, rather than skipping its rows.
        self._promotion = threading.Lock()

    # --- helpers ---------------------------------------------------------------------------

    def _task(self, tx: Tx, row: Any, lease: bool = False) -> Task:
        """A stored row as a Task, decoded by the store (store/rows.py), dependency ids attached.
        The fencing token `lease_id` is shown only to the claim that handed it out (`lease=True`)."""
        return rows.task(row, tx.dependency_ids(row["seq"]), lease)

    # Building blocks for the other concepts' operations (workflows.py, development.py), which
    # run in the caller's transaction.

    def task_row(self, tx: Tx, task_id: str) -> Any:
        """The task's row (locked for this transaction inside a write), or NotFound."""
        row = tx.get_task(task_id)
        if row is None:
            raise NotFound(f"no task with id {task_id!r}; list_tasks shows existing ids")
        return row

    @staticmethod
    def record_event(
        tx: Tx, seq: int, now: float, actor: str | None, action: str, old: Any = None, new: Any = None
    ) -> int:
        """Append a history event (old/new as JSON); returns its own seq."""
        event_seq = tx.insert_event(
            seq,
            now,
            actor,
            action,
            None if old is None else json.dumps(old, ensure_ascii=False, default=str),
            None if new is None else json.dumps(new, ensure_ascii=False, default=str),
        )
        enqueue_for_history(tx, seq, now, actor, action, new)  # same transaction: no lost notification
        return event_seq

    @staticmethod
    def _check_transition(row: Any, target: Status, action: str) -> None:
        current = Status(row["status"])
        if target not in TRANSITIONS[current]:
            raise InvalidTransition(
                f"cannot {action} task {row['id']}: it is {current.value}"
                + (" (a finished task; create a new one instead)" if current == Status.completed else "")
            )

    def set_status(
        self, tx: Tx, row: Any, target: Status, now: float, actor: str | None, action: str, **extra: Any
    ) -> Any:
        """Move a task to `target` (if the state machine allows) and record it; returns the new row."""
        self._check_transition(row, target, action)
        values = {"status": target.value, "updated_at": now, **extra}
        new_row = tx.update_task_returning(row["seq"], values)
        details = {k: v for k, v in extra.items() if k in ("error", "worker") and v is not None}
        self.record_event(tx, row["seq"], now, actor, action, row["status"], {"status": target.value, **details})
        return new_row

    def ensure_project(self, tx: Tx, name: str, now: float) -> None:
        """Create the project with defaults if it does not exist (concurrent creators: one wins)."""
        tx.insert_project(name, "", "{}", now)

    @staticmethod
    def _waiting_status(unmet: int, run_at: float, now: float) -> Status:
        return Status.ready if unmet == 0 and run_at <= now else Status.pending

    # --- dependency bookkeeping -------------------------------------------------------------

    def _on_completed(self, tx: Tx, seq: int, now: float, actor: str | None) -> None:
        """A dependency finished: dependents lose one unmet dependency and may become ready."""
        for dep in tx.dependency_met(seq, now):  # unmet_deps - 1 in SQL: concurrent completions both count
            if dep["status"] == Status.pending.value and dep["unmet_deps"] == 0 and tx.promote_ready(dep["seq"], now):
                self.record_event(tx, dep["seq"], now, actor, "ready", "pending", {"status": "ready"})

    def _on_dead_end(self, tx: Tx, seq: int, task_id: str, now: float, actor: str | None) -> None:
        """A dependency failed or was cancelled: mark everything waiting below it as blocked by it."""
        self.propagate_blocked(tx, [d["seq"] for d in tx.dependents(seq)], now, actor)

    def _on_revived(self, tx: Tx, seq: int, task_id: str, now: float, actor: str | None) -> None:
        """A failed/cancelled task was retried: it no longer blocks anything below it, and its own
        marks are recomputed (they were frozen while it was finished)."""
        self.propagate_blocked(tx, [seq], now, actor)

    def propagate_blocked(self, tx: Tx, seqs: Sequence[int], now: float, actor: str | None) -> None:
        """Recompute blocked_by for these tasks and their waiting descendants (workflows.py)."""
        if seqs:
            propagate_blocked(
                tx, seqs, now, lambda s, action, old, new: self.record_event(tx, s, now, actor, action, old, new)
            )

    def _would_cycle(self, tx: Tx, task_seq: int, depends_on_seq: int) -> list[int] | None:
        """Path depends_on -> ... -> task if adding task->depends_on would close a cycle."""
        if task_seq == depends_on_seq:
            return [task_seq]
        parents: dict[int, int] = {depends_on_seq: depends_on_seq}
        stack = [depends_on_seq]
        while stack:
            current = stack.pop()
            for nxt in tx.dependency_seqs(current):
                if nxt in parents:
                    continue
                parents[nxt] = current
                if nxt == task_seq:
                    path = [nxt]
                    while path[-1] != depends_on_seq:
                        path.append(parents[path[-1]])
                    return list(reversed(path))
                stack.append(nxt)
        return None

    # --- projects ---------------------------------------------------------------------------

    def _project(self, tx: Tx, row: Any, counts: bool = True) -> Project:
        return Project(
            name=row["name"],
            description=row["description"],
            settings=rows.settings(row["settings"]),
            created_at=rows.iso(row["created_at"]) or "",
            task_counts=tx.count_by_status(row["name"]) if counts else {},
        )

    def create_project(self, name: str, description: str = "", settings: dict[str, Any] | None = None) -> Project:
        check_text(description, "description")
        parsed = self._parse_settings(settings or {})

        def op(tx: Tx) -> Project:
            if tx.get_project(name) is not None:
                raise Conflict(f"project {name!r} already exists; use update_project to change it")
            tx.insert_project(name, description, parsed.model_dump_json(), self.clock())
            return self._project(tx, tx.get_project(name))

        return self.store.write(op)

    @staticmethod
    def _parse_settings(settings: dict[str, Any], base: ProjectSettings | None = None) -> ProjectSettings:
        merged = {**(base.model_dump() if base else {}), **settings}
        try:
            return ProjectSettings(**merged)
        except ValidationError as exc:
            raise ValidationFailed("invalid project settings: " + spec_errors(exc)) from None

    def get_project(self, name: str) -> Project:
        def op(tx: Tx) -> Project:
            row = tx.get_project(name)
            if row is None:
                raise NotFound(f"no project named {name!r}; list_projects shows the existing ones")
            return self._project(tx, row)

        return self.store.read(op)

    def list_projects(self) -> list[Project]:
        return self.store.read(lambda tx: [self._project(tx, row) for row in tx.list_projects()])

    def update_project(
        self,
        name: str,
        description: str | None = None,
        settings: dict[str, Any] | None = None,
        payload_schemas: dict[str, Any] | None = None,
    ) -> Project:
        """Change description or settings; `payload_schemas` sets (None removes) the schema of each kind.
        Each schema is checked (valid, references only inside itself, patterns RE2 can run) before the
        write transaction."""
        check_text(description, "description")
        for kind, schema in (payload_schemas or {}).items():
            if schema is not None:
                check_schema(schema, f"payload_schemas[{kind!r}]")

        def op(tx: Tx) -> Project:
            row = tx.get_project(name)
            if row is None:
                raise NotFound(f"no project named {name!r}; create_project makes one")
            current = rows.settings(row["settings"])
            merged = self._parse_settings(settings or {}, current)
            tx.update_project(
                name,
                row["description"] if description is None else description,
                merged.model_dump_json(),
            )
            if payload_schemas:
                self.payload_schemas.register(tx, name, payload_schemas, self.clock())
            return self._project(tx, tx.get_project(name))

        return self.store.write(op)

    # --- creating tasks ---------------------------------------------------------------------

    @short_call
    def create(self, spec: TaskSpec | dict[str, Any], actor: str | None = None) -> Task:
        """Create one task; with an idempotency_key already used in the project, return that task."""
        return self.create_many([spec], actor=actor)[0]

    def create_many(self, specs: Sequence[TaskSpec | dict[str, Any]], actor: str | None = None) -> list[Task]:
        """Create a batch atomically. `depends_on` may name existing ids or other items' `ref`."""
        batch = self.prepare_batch(specs)
        checked = self.check_payloads(batch[0])
        return self.store.write(lambda tx: self.insert_batch(tx, batch, self.clock(), actor, checked))

    def check_payloads(self, items: Sequence[TaskSpec]) -> CheckedSchemas:
        """Check every payload against its kind's schema in a read transaction, before the write one
        (which then only confirms each schema is unchanged): a costly check never holds the write lock."""
        listed = [
            (item.project, item.kind, item.payload, f"tasks[{index}].payload" if len(items) > 1 else "payload")
            for index, item in enumerate(items)
        ]
        return self.store.read(lambda tx: self.payload_schemas.validate_before(tx, listed))

    def prepare_batch(
        self, specs: Sequence[TaskSpec | dict[str, Any]]
    ) -> tuple[list[TaskSpec], list[dict[str, Any]], list[int]]:
        """Validate a batch before any transaction: the specs, their JSON and their order (cycles refused)."""
        if not specs:
            raise ValidationFailed("the batch is empty; give at least one task")
        if len(specs) > MAX_BATCH:
            raise ValidationFailed(f"the batch has {len(specs)} tasks; the limit is {MAX_BATCH}")
        items: list[TaskSpec] = []
        for index, raw in enumerate(specs):
            try:
                if isinstance(raw, dict):  # null for an item's field means its default, as for tool arguments
                    raw = {key: value for key, value in raw.items() if value is not None}
                items.append(raw if isinstance(raw, TaskSpec) else TaskSpec.model_validate(raw))
            except ValidationError as exc:
                raise ValidationFailed(spec_errors(exc, f"tasks[{index}]." if len(specs) > 1 else "")) from None
        prepared = [self._prepare(item, index) for index, item in enumerate(items)]
        order = self._batch_order(items)
        return items, prepared, order

    def insert_batch(
        self,
        tx: Tx,
        batch: tuple[list[TaskSpec], list[dict[str, Any]], list[int]],
        now: float,
        actor: str | None,
        checked: CheckedSchemas | None = None,
    ) -> list[Task]:
        """Insert a prepared batch in the caller's transaction; returns the tasks in input order.
        `checked` is what `check_payloads` returned, if it ran before this transaction."""
        items, prepared, order = batch
        by_ref: dict[str, tuple[int, str, str]] = {}  # ref -> (seq, id, status)
        batch_refs = {item.ref for item in items if item.ref}
        later_parents: dict[int, tuple[int, str]] = {}  # index -> (seq, parent ref inserted later)
        created: dict[int, Task] = {}
        for index in order:
            item = items[index]
            if item.workflow_id is not None:
                self._check_workflow(tx, item.workflow_id)
            where = f"tasks[{index}].payload" if len(items) > 1 else "payload"
            self.payload_schemas.validate(tx, item.project, item.kind, item.payload, where, checked)
            parent_ref = item.parent_id
            if parent_ref in batch_refs and parent_ref not in by_ref:
                # Insertion follows depends_on, so a parent may come later (it often depends on its children).
                item = item.model_copy(update={"parent_id": None})
            seq = self._insert_one(tx, item, prepared[index], by_ref, now, actor)
            if item.parent_id is None and parent_ref is not None and parent_ref in batch_refs:
                later_parents[index] = (seq, parent_ref)
            row = tx.get_task_by_seq(seq)
            if item.ref:
                by_ref[item.ref] = (seq, row["id"], row["status"])
            created[index] = self._task(tx, row)
            if len(created) % progress.EVERY == 0:
                progress.report(len(created), len(items))
        for index, (seq, parent_ref) in later_parents.items():
            tx.set_parent_id(seq, by_ref[parent_ref][1])
            created[index] = self._task(tx, tx.get_task_by_seq(seq))
        progress.report(len(items), len(items))
        return [created[i] for i in range(len(items))]

    def _prepare(self, item: TaskSpec, index: int) -> dict[str, Any]:
        where = f"tasks[{index}]" if index else "task"
        return {
            "payload": None if item.payload is None else dump_json(item.payload, f"{where}.payload"),
            "run_at": None if item.run_at is None else parse_time(item.run_at),
        }

    @staticmethod
    def _batch_order(items: Sequence[TaskSpec]) -> list[int]:
        """Topological order of a batch by local refs; a cycle is named in the error."""
        refs: dict[str, int] = {}
        for index, item in enumerate(items):
            if item.ref:
                if item.ref in refs:
                    raise ValidationFailed(f"ref {item.ref!r} is used by tasks[{refs[item.ref]}] and tasks[{index}]")
                refs[item.ref] = index
        edges = {i: [refs[d] for d in item.depends_on if d in refs] for i, item in enumerate(items)}
        order: list[int] = []
        state: dict[int, int] = {}  # 1 visiting, 2 done
        for start in range(len(items)):
            if state.get(start):
                continue
            stack: list[tuple[int, int]] = [(start, 0)]
            path: list[int] = []
            while stack:
                node, pos = stack.pop()
                if pos == 0:
                    state[node] = 1
                    path.append(node)
                if pos < len(edges[node]):
                    stack.append((node, pos + 1))
                    child = edges[node][pos]
                    if state.get(child) == 1:
                        cycle = path[path.index(child) :] + [child]
                        names = " -> ".join(items[i].ref or f"tasks[{i}]" for i in cycle)
                        raise ValidationFailed(f"dependency cycle in the batch: {names}")
                    if not state.get(child):
                        stack.append((child, 0))
                else:
                    state[node] = 2
                    path.pop()
                    order.append(node)
        return order

    @staticmethod
    def _check_workflow(tx: Tx, workflow_id: str) -> None:
        """Tasks may join an existing workflow, not an unknown or cancelled one."""
        row = tx.get_workflow(workflow_id)
        if row is None:
            raise NotFound(f"no workflow with id {workflow_id!r}; create_workflow makes one")
        if row["cancelled_at"] is not None:
            raise InvalidTransition(f"workflow {workflow_id} is cancelled; it takes no new tasks")

    def _insert_one(
        self,
        tx: Tx,
        item: TaskSpec,
        prepared: dict[str, Any],
        by_ref: dict[str, tuple[int, str, str]],
        now: float,
        actor: str | None,
    ) -> int:
        if item.idempotency_key:
            existing = tx.find_by_idempotency_key(item.project, item.idempotency_key)
            if existing is not None:
                return int(existing["seq"])
        self.ensure_project(tx, item.project, now)
        dep_seqs: list[int] = []
        unmet = 0
        blocked: list[str] = []
        ids_to_find = [d for d in item.depends_on if d not in by_ref]
        found = tx.seqs_for_ids(ids_to_find) if ids_to_find else {}
        for dep in item.depends_on:
            if dep in by_ref:
                dep_seq, dep_id, dep_status = by_ref[dep]
            elif dep in found:
                dep_seq, dep_id, dep_status = found[dep]["seq"], dep, found[dep]["status"]
            else:
                raise NotFound(f"task {item.title[:60]!r} depends on {dep!r}, which is neither a task id nor a ref")
            if dep_seq in dep_seqs:
                continue  # two refs (or a ref and an id) naming one task are one dependency, counted once
            dep_seqs.append(dep_seq)
            if dep_status != Status.completed.value:
                unmet += 1
            if dep_status in (Status.failed.value, Status.cancelled.value):
                blocked.append(dep_id)
        if item.parent_id is not None and not tx.seqs_for_ids([item.parent_id]):
            parent = by_ref.get(item.parent_id)
            if parent is None:
                raise NotFound(f"parent_id {item.parent_id!r} is not a task id")
            item = item.model_copy(update={"parent_id": parent[1]})
        run_at = prepared["run_at"] if prepared["run_at"] is not None else now
        status = self._waiting_status(unmet, run_at, now)
        values = {
            "id": new_id(),
            "project": item.project,
            "title": item.title,
            "description": item.description,
            "kind": item.kind,
            "priority": item.priority.rank,
            "status": status.value,
            "payload": prepared["payload"],
            "tags": json.dumps(item.tags, ensure_ascii=False),
            "parent_id": item.parent_id,
            "workflow_id": item.workflow_id,
            "acceptance_criteria": json.dumps(item.acceptance_criteria, ensure_ascii=False),
            "run_at": run_at,
            "max_attempts": item.max_attempts,
            "timeout_seconds": item.timeout_seconds,
            "idempotency_key": item.idempotency_key,
            "unmet_deps": unmet,
            "blocked_by": json.dumps(blocked) if blocked else None,
            "created_at": now,
            "updated_at": now,
        }
        seq, created = tx.insert_task(values)
        if not created:
            return seq  # another writer created the task with this idempotency key first
        tx.set_tags(seq, item.tags)
        for dep_seq in dep_seqs:
            tx.insert_dependency(seq, dep_seq)
        self.record_event(tx, seq, now, actor, "created", None, {"status": status.value, "title": item.title})
        return seq

    # --- reading ----------------------------------------------------------------------------

    def read_current(self, fn: Callable[[Tx], T]) -> T:
        """`store.read(fn)` after what time alone has done is applied: a read that finds a task due
        (its run_at or backoff passed, its lease ran out) promotes it first, so reads show a task as
        `ready` as soon as it is claimable. One read transaction when nothing is due; a read never
        waits for the write lock for this (if another connection holds it, the snapshot is returned
        and the background promoter applies what is due once the lock is free)."""
        now = self.clock()
        due, value = self.store.read(lambda tx: (tx.sweep_due(now), fn(tx)))
        if not due:
            return value
        try:
            # A read never waits for another process's write lock: then the snapshot is the answer,
            # and the promoter catches up once the lock is free. (This process's writers are waited
            # for; on an event loop a WouldBlock reruns the whole read in a thread.)
            with no_foreign_wait():
                self.promote_due()  # False when another promoter got there first: read again either way
        except LockedElsewhere:
            return value
        return self.store.read(fn)

    @short_call
    def get(self, task_id: str) -> Task:
        return self.read_current(lambda tx: self._task(tx, self.task_row(tx, task_id)))

    def list(
        self,
        *,
        project: str | None = None,
        status: Status | str | None = None,
        kind: str | None = None,
        tag: str | None = None,
        worker: str | None = None,
        workflow_id: str | None = None,
        parent_id: str | None = None,
        query: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> TaskPage:
        """Summaries in claim order (priority, then age); `next_cursor` fetches the next page."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationFailed(f"limit must be between 1 and {MAX_LIMIT}")
        status_value = None if status is None else Status(status).value
        after = decode_cursor(cursor, 2, first_max=max(PRIORITY_BY_RANK)) if cursor else None
        match = check_query(query) if query is not None else None

        def op(tx: Tx) -> TaskPage:
            found = tx.list_tasks(
                project=project,
                status=status_value,
                kind=kind,
                tag=tag,
                worker=worker,
                workflow_id=workflow_id,
                parent_id=parent_id,
                query=match,
                after=(after[0], after[1]) if after else None,
                limit=limit + 1,
            )
            more = len(found) > limit
            found = found[:limit]
            next_cursor = encode_cursor(found[-1]["priority"], found[-1]["seq"]) if more else None
            return TaskPage(tasks=[rows.summary(r) for r in found], next_cursor=next_cursor)

        return self.read_current(op)

    def history(self, task_id: str, cursor: str | None = None, limit: int = 100, latest: bool = False) -> HistoryPage:
        """Events oldest first, a page at a time; `latest=True` gives the newest `limit` (still oldest first)."""
        if not 1 <= limit <= 1000:
            raise ValidationFailed("limit must be between 1 and 1000")
        after = decode_cursor(cursor, 1)[0] if cursor else 0

        def op(tx: Tx) -> HistoryPage:
            row = self.task_row(tx, task_id)
            if latest:
                found = list(reversed(tx.latest_events(row["seq"], limit)))
                more = False
            else:
                found = tx.events(row["seq"], after, limit + 1)
                more = len(found) > limit
                found = found[:limit]
            events = [rows.event(r, task_id) for r in found]
            return HistoryPage(events=events, next_cursor=encode_cursor(found[-1]["seq"]) if more else None)

        return self.store.read(op)

    # --- changing tasks ---------------------------------------------------------------------

    def update(
        self,
        task_id: str,
        changes: TaskChanges | dict[str, Any],
        expected_version: int | None = None,
        actor: str | None = None,
    ) -> Task:
        """Change descriptive fields; with expected_version, refuse if someone else changed it first.

        A field given as null clears it where that means something (payload, run_at,
        timeout_seconds, description, tags, acceptance_criteria).
        """
        try:
            checked = changes if isinstance(changes, TaskChanges) else TaskChanges.model_validate(changes)
        except ValidationError as exc:
            raise ValidationFailed(
                spec_errors(exc) + " (status changes have their own tools: complete_task, cancel_task, retry_task)"
            ) from None
        fields = checked.model_fields_set
        if not fields:
            raise ValidationFailed("nothing to update; pass at least one field to change")
        for required in ("title", "kind", "priority", "max_attempts"):
            if required in fields and getattr(checked, required) is None:
                raise ValidationFailed(f"{required} cannot be null")
        stored_new: dict[str, Any] = {}
        for field in fields:
            value = getattr(checked, field)
            if field == "priority":
                stored_new[field] = value.rank
            elif field in ("tags", "acceptance_criteria"):
                stored_new[field] = json.dumps(value or [], ensure_ascii=False)
            elif field == "payload":
                stored_new[field] = None if value is None else dump_json(value, "payload")
            elif field == "run_at":
                stored_new[field] = None if value is None else parse_time(value)
            elif field == "description":
                stored_new[field] = value or ""
            else:
                stored_new[field] = value
        schema_checked: CheckedSchemas | None = None
        if "payload" in fields:  # checked before the write transaction (see check_payloads)

            def precheck(tx: Tx) -> CheckedSchemas:
                row = self.task_row(tx, task_id)
                item = (row["project"], checked.kind or row["kind"], checked.payload, "payload")
                return self.payload_schemas.validate_before(tx, [item])

            schema_checked = self.store.read(precheck)

        def op(tx: Tx) -> Task:
            now = self.clock()
            row = self.task_row(tx, task_id)
            if expected_version is not None and row["version"] != expected_version:
                raise Conflict(
                    f"task {task_id} is at version {row['version']}, not {expected_version}: it changed since "
                    "you read it. get_task, reapply your change, and pass the new version."
                )
            current = self._task(tx, row).model_dump(mode="json")
            if "kind" in fields or "payload" in fields:
                payload = checked.payload if "payload" in fields else current["payload"]
                kind = checked.kind or row["kind"]
                self.payload_schemas.validate(tx, row["project"], kind, payload, checked=schema_checked)
            values = dict(stored_new)
            if values.get("run_at", 0) is None:
                values["run_at"] = row["created_at"]
            values = {k: v for k, v in values.items() if v != row[k]}
            if not values:
                return self._task(tx, row)
            after = checked.model_dump(mode="json", include=set(values))
            old = {k: current[k] for k in values}
            if "tags" in values:
                tx.set_tags(row["seq"], json.loads(values["tags"]))
            if "run_at" in values and row["status"] in (Status.pending.value, Status.ready.value):
                target = self._waiting_status(row["unmet_deps"], values["run_at"], now)
                if target.value != row["status"]:
                    values["status"] = target.value
                    after["status"] = target.value
            values["updated_at"] = now
            tx.update_task(row["seq"], values)
            self.record_event(tx, row["seq"], now, actor, "updated", old, after)
            return self._task(tx, self.task_row(tx, task_id))

        return self.store.write(op)

    @short_call
    def add_note(self, task_id: str, text: str, actor: str | None = None) -> Event:
        if not text.strip():
            raise ValidationFailed("the note is empty")
        check_text(text, "note")

        def op(tx: Tx) -> Event:
            now = self.clock()
            row = self.task_row(tx, task_id)
            seq = self.record_event(tx, row["seq"], now, actor, "note", None, text)
            tx.update_task(row["seq"], {"updated_at": now})
            return Event(
                seq=seq,
                task_id=task_id,
                at=rows.iso(now) or "",
                actor=actor,
                action="note",
                new=text,
            )

        return self.store.write(op)

    def add_dependency(self, task_id: str, depends_on: str, actor: str | None = None) -> Task:
        """Make task_id wait for depends_on; refused if that would close a cycle (named in the error)."""

        def op(tx: Tx) -> Task:
            now = self.clock()
            row = self.task_row(tx, task_id)
            dep = self.task_row(tx, depends_on)
            if Status(row["status"]).terminal or row["status"] == Status.running.value:
                raise InvalidTransition(
                    f"cannot add a dependency to task {task_id}: it is {row['status']}; only pending or ready "
                    "tasks can gain dependencies"
                )
            if tx.has_dependency(row["seq"], dep["seq"]):
                return self._task(tx, row)
            tx.lock_dependency_graph()  # the cycle check and the edge are one step for every writer
            cycle = self._would_cycle(tx, row["seq"], dep["seq"])
            if cycle is not None:
                names = tx.ids_for_seqs(cycle)
                path = " -> ".join([task_id] + [names[s] for s in cycle])
                raise ValidationFailed(f"adding this dependency would create a cycle: {path}")
            tx.insert_dependency(row["seq"], dep["seq"])
            if dep["status"] != Status.completed.value:
                tx.add_unmet(row["seq"], +1, now)  # a ready task goes back to pending
            else:
                tx.update_task(row["seq"], {"updated_at": now})
            self.record_event(tx, row["seq"], now, actor, "dependency_added", None, {"depends_on": depends_on})
            self.propagate_blocked(tx, [row["seq"]], now, actor)
            return self._task(tx, self.task_row(tx, task_id))

        return self.store.write(op)

    def remove_dependency(self, task_id: str, depends_on: str, actor: str | None = None) -> Task:
        def op(tx: Tx) -> Task:
            now = self.clock()
            row = self.task_row(tx, task_id)
            dep = self.task_row(tx, depends_on)
            if not tx.delete_dependency(row["seq"], dep["seq"]):
                return self._task(tx, row)  # idempotent: already gone (say, a retried call)
            if dep["status"] != Status.completed.value:
                tx.add_unmet(row["seq"], -1, now)  # a pending task left waiting on nothing becomes ready
            else:
                tx.update_task(row["seq"], {"updated_at": now})
            self.record_event(tx, row["seq"], now, actor, "dependency_removed", {"depends_on": depends_on}, None)
            self.propagate_blocked(tx, [row["seq"]], now, actor)
            return self._task(tx, self.task_row(tx, task_id))

        return self.store.write(op)

    def cancel(self, task_id: str, reason: str | None = None, actor: str | None = None) -> Task:
        check_text(reason, "reason")

        def op(tx: Tx) -> Task:
            now = self.clock()
            row = self.task_row(tx, task_id)
            if row["status"] == Status.cancelled.value:
                return self._task(tx, row)  # idempotent: a repeated cancel (say, a retried call) is a no-op
            self.set_status(
                tx,
                row,
                Status.cancelled,
                now,
                actor,
                "cancel",
                error=reason,
                finished_at=now,
                lease_expires_at=None,
            )
            self._on_dead_end(tx, row["seq"], task_id, now, actor)
            return self._task(tx, self.task_row(tx, task_id))

        return self.store.write(op)

    def retry(self, task_id: str, actor: str | None = None) -> Task:
        """Give a failed or cancelled task a fresh set of attempts."""

        def op(tx: Tx) -> Task:
            now = self.clock()
            row = self.task_row(tx, task_id)
            if row["status"] not in (Status.failed.value, Status.cancelled.value):
                raise InvalidTransition(
                    f"cannot retry task {task_id}: it is {row['status']}; only failed or cancelled tasks are "
                    "retried (a running task is retried by fail_task, or comes back when its lease expires)"
                )
            target = self._waiting_status(row["unmet_deps"], now, now)
            self.set_status(
                tx,
                row,
                target,
                now,
                actor,
                "retry",
                attempts=0,
                error=None,
                result=None,
                worker=None,
                finished_at=None,
                run_at=now,
                progress=None,
                lease_expires_at=None,
                lease_id=None,
            )
            self._on_revived(tx, row["seq"], task_id, now, actor)
            return self._task(tx, self.task_row(tx, task_id))

        return self.store.write(op)

    # --- the worker protocol ----------------------------------------------------------------

    def _sweep(self, tx: Tx, now: float) -> int:
        """Apply what time has done: expired leases go back (or fail), due tasks become ready, each
        taken highest priority first. Returns how many tasks changed.

        Run by the claim path itself, so the queue is correct with no background thread.
        """
        expired = tx.expired_leases(now)
        for row in expired:
            if row["attempts"] >= row["max_attempts"]:
                error = f"lease expired on attempt {row['attempts']} of {row['max_attempts']} (worker {row['worker']})"
                tx.update_task(
                    row["seq"],
                    {
                        "status": "failed",
                        "error": error,
                        "finished_at": now,
                        "updated_at": now,
                        "lease_expires_at": None,
                        "lease_id": None,
                    },
                )
                self.record_event(tx, row["seq"], now, "system", "lease_expired", "running", {"status": "failed"})
                self._on_dead_end(tx, row["seq"], row["id"], now, "system")
            else:
                tx.update_task(
                    row["seq"],
                    {"status": "ready", "worker": None, "lease_id": None, "lease_expires_at": None, "updated_at": now},
                )
                self.record_event(
                    tx,
                    row["seq"],
                    now,
                    "system",
                    "lease_expired",
                    "running",
                    {"status": "ready", "worker": row["worker"]},
                )
        due = tx.due_pending(now)
        for row in due:
            tx.update_task(row["seq"], {"status": "ready", "updated_at": now})
            self.record_event(tx, row["seq"], now, "system", "ready", "pending", {"status": "ready"})
        return len(expired) + len(due)

    def promote_due(self) -> bool:
        """Apply what time alone has done (due tasks become ready, expired leases go back or fail),
        so lists, stats and resources show a task as ready as soon as it is claimable, and the change
        feed tells subscribers. A read-only probe first: the write lock is taken only when something is
        due. At most PROMOTE_ROUNDS sweeps per call (a huge backlog drains over several calls). True
        when anything changed. The server runs this in the background; reads run it when they find
        something due."""
        if not self._promotion.acquire(blocking=False):
            if not waiting_allowed():
                raise WouldBlock  # on an event loop: the caller reruns in a thread, where waiting is harmless
            self._promotion.acquire()
        try:
            return self._promote_due()
        finally:
            self._promotion.release()

    def _promote_due(self) -> bool:
        now = self.clock()
        if not self.store.read(lambda tx: tx.sweep_due(now)):
            return False

        def op(tx: Tx) -> bool:
            moment = self.clock()
            changed = 0
            for _ in range(PROMOTE_ROUNDS):
                if not tx.sweep_due(moment):
                    break
                swept = self._sweep(tx, moment)
                changed += swept
                if not swept:
                    break
            return changed > 0

        return self.store.write(op)

    @short_call
    def claim(
        self,
        worker: str,
        *,
        project: str | None = None,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        lease_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> Task | None:
        """`claim_many` of one task: the task leased to `worker` (with its `lease_id`), or None."""
        claimed = self.claim_many(
            worker,
            project=project,
            kinds=kinds,
            tags=tags,
            lease_seconds=lease_seconds,
            idempotency_key=idempotency_key,
        )
        return claimed[0] if claimed else None

    @short_call
    def claim_many(
        self,
        worker: str,
        *,
        project: str | None = None,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        lease_seconds: int | None = None,
        max_tasks: int = 1,
        idempotency_key: str | None = None,
    ) -> builtins.list[Task]:
        """Atomically lease up to `max_tasks` ready tasks, highest priority then oldest first; [] when
        nothing is ready. Each task carries a fresh `lease_id` (its fencing token). A claim repeated with
        the same `idempotency_key` by the same worker returns the tasks it still holds from the first,
        with the same lease ids, instead of claiming more."""
        if lease_seconds is not None and not 1 <= lease_seconds <= MAX_LEASE_SECONDS:
            raise ValidationFailed(f"lease_seconds must be between 1 and {MAX_LEASE_SECONDS}")
        if not 1 <= max_tasks <= MAX_CLAIM:
            raise ValidationFailed(f"max_tasks must be between 1 and {MAX_CLAIM}")
        check_text(idempotency_key, "idempotency_key", 200)

        def op(tx: Tx) -> builtins.list[Task]:
            now = self.clock()
            if idempotency_key is not None:
                held = tx.claimed_with_key(worker, idempotency_key)
                if held:
                    return [self._task(tx, row, lease=True) for row in held]
            if tx.sweep_due(now):
                self._sweep(tx, now)
            claimed: builtins.list[Task] = []
            for _ in range(max_tasks):
                row = tx.claim_next(
                    worker=worker,
                    lease_id=secrets.token_urlsafe(12),
                    claim_key=idempotency_key,
                    project=project,
                    kinds=kinds,
                    tags=tags,
                    lease_seconds=lease_seconds,
                    default_lease=DEFAULT_LEASE_SECONDS,
                    now=now,
                )
                if row is None:
                    break
                new = {"status": "running", "worker": worker, "attempt": row["attempts"]}
                self.record_event(tx, row["seq"], now, worker, "claimed", "ready", new)
                claimed.append(self._task(tx, row, lease=True))
            return claimed

        return self.store.write(op)

    def _leased_write(
        self,
        tx: Tx,
        task_id: str,
        worker: str,
        lease_id: str | None,
        action: str,
        values: Callable[[Any], dict[str, Any]],
        settled: frozenset[str] = frozenset(),
        lease_seconds: int | None = None,
    ) -> tuple[Any, Any]:
        """Apply `values(row)` to a task only while `worker` holds it under `lease_id`: (old row, new row).

        The store's conditional UPDATE decides, so a stale attempt never writes. When the lease is no
        longer running but this very lease already moved the task to one of the `settled` statuses (a
        retried call whose first reply was lost), the new row is None and nothing changes.
        """
        row = self.task_row(tx, task_id)
        new_row = tx.update_leased(row["seq"], worker, lease_id, values(row), lease_seconds)
        if new_row is not None:
            return row, new_row
        if lease_id is not None and row["lease_id"] == lease_id and row["status"] in settled:
            return row, None
        if row["status"] == Status.running.value and row["worker"] == worker:
            holder = "a later attempt of the same worker name holds it"
        elif row["status"] == Status.running.value:
            holder = f"it is held by {row['worker']!r}"
        else:
            holder = f"it is {row['status']}"
        raise LeaseLost(
            f"worker {worker!r} cannot {action} task {task_id}: it is not leased to you ({holder}). "
            "Your lease may have expired and the task been reclaimed; drop it and claim_task for new work."
        )

    @short_call
    def heartbeat(
        self,
        task_id: str,
        worker: str,
        *,
        lease_id: str | None = None,
        progress: float | None = None,
        message: str | None = None,
        lease_seconds: int | None = None,
    ) -> Task:
        """Extend the lease (and record progress 0..1) for the worker holding it under `lease_id`."""
        if progress is not None and not 0 <= progress <= 1:
            raise ValidationFailed("progress must be between 0 and 1 (a fraction, e.g. 0.5 for half done)")
        if lease_seconds is not None and not 1 <= lease_seconds <= MAX_LEASE_SECONDS:
            raise ValidationFailed(f"lease_seconds must be between 1 and {MAX_LEASE_SECONDS}")
        check_text(message, "message")

        def op(tx: Tx) -> Task:
            now = self.clock()
            values: dict[str, Any] = {"updated_at": now}
            if progress is not None:
                values["progress"] = progress
            row, new_row = self._leased_write(
                tx, task_id, worker, lease_id, "heartbeat", lambda _row: values, lease_seconds=lease_seconds or 0
            )
            # Pure lease extensions are not history; progress and messages are.
            if (progress is not None and progress != row["progress"]) or message:
                new = {"progress": progress, "message": message}
                self.record_event(tx, row["seq"], now, worker, "progress", row["progress"], new)
            return self._task(tx, new_row)

        return self.store.write(op)

    @short_call
    def complete(self, task_id: str, worker: str, result: Any = None, *, lease_id: str | None = None) -> Task:
        """Finish a task you hold. Retried with the same `lease_id` after it committed, it returns the
        completed task again (unchanged) rather than `lease_lost`."""
        result_text = None if result is None else dump_json(result, "result")

        def op(tx: Tx) -> Task:
            now = self.clock()
            values = {
                "status": Status.completed.value,
                "result": result_text,
                "finished_at": now,
                "lease_expires_at": None,
                "progress": 1.0,
                "updated_at": now,
            }
            row, done = self._leased_write(
                tx, task_id, worker, lease_id, "complete", lambda _row: values, frozenset({"completed"})
            )
            if done is None:
                return self._task(tx, row)
            self.record_event(tx, row["seq"], now, worker, "complete", "running", {"status": "completed"})
            self._on_completed(tx, row["seq"], now, worker)  # changes dependents, not this row
            return self._task(tx, done)

        return self.store.write(op)

    @short_call
    def fail(
        self, task_id: str, worker: str, error: str, retryable: bool = True, *, lease_id: str | None = None
    ) -> Task:
        """Record a failed attempt: retry after backoff while attempts remain, else fail for good."""
        check_text(error, "error")

        def op(tx: Tx) -> Task:
            now = self.clock()

            def values(row: Any) -> dict[str, Any]:
                common = {"error": error, "lease_expires_at": None, "updated_at": now}
                if retryable and row["attempts"] < row["max_attempts"]:
                    delay = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (row["attempts"] - 1))
                    delay *= 0.5 + random.random() / 2  # jitter: spread retries of a burst of failures
                    return {**common, "status": Status.pending.value, "worker": None, "run_at": now + delay}
                return {**common, "status": Status.failed.value, "finished_at": now}

            row, new_row = self._leased_write(
                tx, task_id, worker, lease_id, "fail", values, frozenset({"pending", "ready", "failed"})
            )
            if new_row is None:
                return self._task(tx, row)
            new = {"status": new_row["status"], "error": error}
            self.record_event(tx, row["seq"], now, worker, "fail", "running", new)
            if new_row["status"] == Status.failed.value:
                self._on_dead_end(tx, row["seq"], task_id, now, worker)
            return self._task(tx, new_row)

        return self.store.write(op)

    @short_call
    def release(self, task_id: str, worker: str, delay_seconds: float = 0, *, lease_id: str | None = None) -> Task:
        """Give a task back without counting the attempt; optionally not before delay_seconds."""
        if not 0 <= delay_seconds <= MAX_LEASE_SECONDS:
            raise ValidationFailed(f"delay_seconds must be between 0 and {MAX_LEASE_SECONDS}")

        def op(tx: Tx) -> Task:
            now = self.clock()
            target = Status.pending if delay_seconds > 0 else Status.ready

            def values(row: Any) -> dict[str, Any]:
                return {
                    "status": target.value,
                    "worker": None,
                    "lease_expires_at": None,
                    "attempts": max(0, row["attempts"] - 1),
                    "run_at": now + delay_seconds,
                    "updated_at": now,
                }

            row, new_row = self._leased_write(
                tx, task_id, worker, lease_id, "release", values, frozenset({"pending", "ready"})
            )
            if new_row is None:
                return self._task(tx, row)
            self.record_event(tx, row["seq"], now, worker, "release", "running", {"status": target.value})
            return self._task(tx, new_row)

        return self.store.write(op)

    def revoke_lease(self, task_id: str, actor: str | None = None) -> Task:
        """An operator takes a running task from its (stuck) worker: it is ready again at once.

        The attempt counts (as when a lease expires); the old worker's later calls get lease_lost.
        """

        def op(tx: Tx) -> Task:
            now = self.clock()
            row = self.task_row(tx, task_id)
            if row["status"] != Status.running.value:
                raise InvalidTransition(f"cannot release task {task_id}: it is {row['status']}, not running")
            if row["attempts"] >= row["max_attempts"]:
                error = f"lease revoked by {actor or 'an operator'} on the last attempt (worker {row['worker']})"
                self.set_status(
                    tx,
                    row,
                    Status.failed,
                    now,
                    actor,
                    "lease_revoked",
                    error=error,
                    finished_at=now,
                    lease_id=None,
                    lease_expires_at=None,
                )
                self._on_dead_end(tx, row["seq"], task_id, now, actor)
            else:
                self.set_status(
                    tx,
                    row,
                    Status.ready,
                    now,
                    actor,
                    "lease_revoked",
                    worker=None,
                    lease_id=None,
                    lease_expires_at=None,
                )
            return self._task(tx, self.task_row(tx, task_id))

        return self.store.write(op)

    # --- overview ---------------------------------------------------------------------------

    def stats(self, project: str | None = None) -> QueueStats:
        def op(tx: Tx) -> QueueStats:
            now = self.clock()
            by_status = {s.value: 0 for s in Status}
            by_status.update(tx.count_by_status(project))
            ready = {p.value: 0 for p in Priority}
            for rank, count in tx.count_ready_by_priority(project).items():
                ready[PRIORITY_BY_RANK[rank].value] = count
            oldest = tx.oldest_ready_created(project)
            return QueueStats(
                project=project,
                total=sum(by_status.values()),
                by_status=by_status,
                by_priority_ready=ready,
                expired_leases=tx.count_expired_leases(now, project),
                blocked=tx.count_blocked(project),
                oldest_ready_age_seconds=None if oldest is None else round(now - oldest, 3),
            )

        return self.read_current(op)

"""Workflows: named task graphs created in one transaction, and what they derive.

A spec (inline, or a template from `schemas/templates/` filled with parameters) is checked
against `schemas/workflow.schema.json` and for cycles before anything is written; the
tasks are then created by the queue's batch path in the same transaction as the workflow
row. Status, progress and the critical path are derived from the tasks on each read, so
they can never disagree with them. (Blocked marks travel down the graph in blocking.py.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from mcp_taskqueue.blocking import UNFINISHED
from mcp_taskqueue.errors import NotFound, ValidationFailed
from mcp_taskqueue.ids import new_id
from mcp_taskqueue.inputs import check_text, decode_cursor, encode_cursor
from mcp_taskqueue.models import (
    MAX_LIMIT,
    PRIORITY_BY_RANK,
    WORKFLOW_STATUSES,
    Status,
    Workflow,
    WorkflowPage,
    WorkflowSummary,
    WorkflowTask,
)
from mcp_taskqueue.payload_schemas import SCHEMAS_DIR, load_json, violations
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Tx
from mcp_taskqueue.store.rows import iso

PLACEHOLDER = re.compile(r"\{(\w+)\}")


# --- the spec ------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def workflow_validator() -> Draft202012Validator:
    return Draft202012Validator(load_json(SCHEMAS_DIR / "workflow.schema.json"))


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle in `node -> its dependencies` as [a, b, ..., a], or None for a DAG."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    for start in graph:
        if state.get(start):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, pos = stack.pop()
            if pos == 0:
                state[node] = 1
                path.append(node)
            children = graph.get(node, ())
            if pos < len(children):
                stack.append((node, pos + 1))
                child = children[pos]
                if state.get(child) == 1:
                    return path[path.index(child) :] + [child]
                if not state.get(child):
                    stack.append((child, 0))
            else:
                state[node] = 2
                path.pop()
    return None


def validate_spec(spec: Any) -> dict[str, Any]:
    """Check a workflow spec: every schema violation with its JSON pointer, duplicate refs, cycles."""
    found = violations(workflow_validator(), spec, "spec")
    if found:
        raise ValidationFailed("the workflow spec does not match taskqueue://schemas/workflow: " + "; ".join(found))
    assert isinstance(spec, dict)
    refs: dict[str, int] = {}
    for index, task in enumerate(spec["tasks"]):
        if task["ref"] in refs:
            raise ValidationFailed(
                f"spec at /tasks/{index}/ref: ref {task['ref']!r} is already used by /tasks/{refs[task['ref']]}"
            )
        refs[task["ref"]] = index
    graph = {task["ref"]: [d for d in task.get("depends_on", []) if d in refs] for task in spec["tasks"]}
    cycle = find_cycle(graph)
    if cycle is not None:
        raise ValidationFailed("dependency cycle in the workflow: " + " -> ".join(cycle))
    return spec


# --- templates -----------------------------------------------------------------------------


def templates_dir() -> Path:
    return SCHEMAS_DIR / "templates"


def list_templates() -> dict[str, dict[str, Any]]:
    """name -> template document, for every `schemas/templates/<name>.json`."""
    return {path.stem: load_json(path) for path in sorted(templates_dir().glob("*.json"))}


def _substitute(value: Any, params: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value)
        if whole and whole[1] in params:
            return params[whole[1]]  # a lone placeholder keeps the parameter's JSON type
        return PLACEHOLDER.sub(lambda m: str(params[m[1]]) if m[1] in params else m[0], value)
    if isinstance(value, list):
        return [_substitute(item, params) for item in value]
    if isinstance(value, dict):
        return {key: _substitute(item, params) for key, item in value.items()}
    return value


def fill_template(name: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The template's workflow with `{param}` placeholders replaced; unknown or missing params refused."""
    templates = list_templates()
    if name not in templates:
        raise NotFound(f"no workflow template {name!r}; available: {', '.join(templates) or 'none'}")
    template = templates[name]
    declared: dict[str, Any] = template.get("parameters", {})
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValidationFailed(
            f"template {name!r} has no parameter(s) {', '.join(unknown)}; it takes: {', '.join(declared)}"
        )
    values = {key: spec["default"] for key, spec in declared.items() if "default" in spec}
    values.update(parameters)
    missing = [key for key in declared if key not in values]
    if missing:
        described = "; ".join(f"{key}: {declared[key].get('description', '')}" for key in missing)
        raise ValidationFailed(f"template {name!r} needs parameter(s) {', '.join(missing)} ({described})")
    filled: dict[str, Any] = _substitute(template["workflow"], values)
    return filled


def template_summary() -> str:
    """'feature(feature*, project), ...' for tool descriptions: * marks a required parameter."""
    parts = []
    for name, template in list_templates().items():
        params = template.get("parameters", {})
        args = ", ".join(key + ("" if "default" in spec else "*") for key, spec in params.items())
        parts.append(f"{name}({args})")
    return ", ".join(parts)


# --- derived state -------------------------------------------------------------------------


def derive_status(counts: Mapping[str, int], blocked_waiting: int, cancelled: bool) -> str:
    """One word for a workflow: pending, running, blocked, completed, failed or cancelled."""
    if cancelled:
        return "cancelled"
    unfinished = sum(counts.get(s, 0) for s in UNFINISHED)
    if unfinished == 0:
        if counts.get(Status.failed.value):
            return "failed"
        return "completed" if counts.get(Status.completed.value) else "cancelled"
    if not counts.get(Status.running.value) and not counts.get(Status.ready.value) and blocked_waiting >= unfinished:
        return "blocked"  # every unfinished task waits on a dead end: nothing will move without help
    started = sum(counts.get(s, 0) for s in (Status.running.value, Status.completed.value, Status.failed.value))
    return "running" if started else "pending"


def derive_progress(counts: Mapping[str, int]) -> float:
    """Completed tasks over the tasks that still count (cancelled ones do not)."""
    live = sum(counts.values()) - counts.get(Status.cancelled.value, 0)
    return round(counts.get(Status.completed.value, 0) / live, 4) if live else 0.0


def critical_path(unfinished: Iterable[int], deps: Mapping[int, Sequence[int]]) -> list[int]:
    """The longest chain of unfinished tasks, first to run first: the least number of steps left."""
    nodes = set(unfinished)
    longest: dict[int, tuple[int, int | None]] = {}  # seq -> (chain length, next dependency in the chain)
    for start in sorted(nodes):
        stack = [start]
        while stack:
            seq = stack[-1]
            if seq in longest:
                stack.pop()
                continue
            pending = [d for d in deps.get(seq, ()) if d in nodes and d not in longest]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            best: tuple[int, int | None] = (1, None)
            for dep in deps.get(seq, ()):
                if dep in nodes and longest[dep][0] + 1 > best[0]:
                    best = (longest[dep][0] + 1, dep)
            longest[seq] = best
    if not longest:
        return []
    end = max(longest, key=lambda s: (longest[s][0], -s))
    chain = [end]
    while longest[chain[-1]][1] is not None:
        chain.append(longest[chain[-1]][1])  # type: ignore[arg-type]
    return list(reversed(chain))


def iso_time(ts: float | None) -> str | None:
    return iso(ts)


def workflow_view(tx: Tx, row: Any, include_tasks: bool = True) -> Workflow:
    """The workflow with everything derived from its tasks, read in the caller's transaction."""
    rows = tx.workflow_tasks(row["id"])
    deps: dict[int, list[int]] = {}
    for task_seq, dep_seq in tx.workflow_edges(row["id"]):
        deps.setdefault(task_seq, []).append(dep_seq)
    ids = {r["seq"]: r["id"] for r in rows}
    outside = {d for ds in deps.values() for d in ds if d not in ids}
    if outside:
        ids.update(tx.ids_for_seqs(outside))
    counts = {s.value: 0 for s in Status}
    blocked: dict[str, list[str]] = {}
    for r in rows:
        counts[r["status"]] += 1
        if r["blocked_by"] and r["status"] in UNFINISHED:
            blocked[r["id"]] = json.loads(r["blocked_by"])
    path = critical_path((r["seq"] for r in rows if r["status"] in UNFINISHED), deps)
    tasks = [
        WorkflowTask(
            id=r["id"],
            title=r["title"],
            status=Status(r["status"]),
            priority=PRIORITY_BY_RANK[r["priority"]],
            depends_on=[ids[d] for d in sorted(deps.get(r["seq"], []))],
            worker=r["worker"] if r["status"] == Status.running.value else None,
            phase=r["phase"],
        )
        for r in rows
    ]
    return Workflow(
        id=row["id"],
        name=row["name"],
        project=row["project"],
        template=row["template"],
        status=derive_status(counts, len(blocked), row["cancelled_at"] is not None),
        progress=derive_progress(counts),
        counts={k: v for k, v in counts.items() if v},
        running=[r["id"] for r in rows if r["status"] == Status.running.value],
        blocked=blocked,
        critical_path=[ids[s] for s in path],
        critical_path_length=len(path),
        refs=json.loads(row["refs"] or "{}"),
        tasks=tasks if include_tasks else [],
        created_at=iso_time(row["created_at"]) or "",
    )


# --- operations ----------------------------------------------------------------------------


class Workflows:
    """create_workflow / get / list / cancel, each one transaction through the queue's store."""

    def __init__(self, queue: TaskQueue) -> None:
        self.queue = queue

    def create(
        self,
        spec: dict[str, Any] | None = None,
        template: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> Workflow:
        """Create every task of the workflow and the workflow itself, all or nothing."""
        if (spec is None) == (template is None):
            raise ValidationFailed("give either spec (an inline workflow) or template (with parameters), not both")
        if template is not None:
            spec = fill_template(template, parameters or {})
        elif parameters:
            raise ValidationFailed("parameters only apply to a template")
        checked = validate_spec(spec)
        workflow_id = new_id()
        project = checked.get("project", "default")
        items = [{**task, "project": project, "workflow_id": workflow_id} for task in checked["tasks"]]
        batch = self.queue.prepare_batch(items)
        schemas = self.queue.check_payloads(batch[0])  # before the write transaction (queue.check_payloads)

        def op(tx: Tx) -> Workflow:
            now = self.queue.clock()
            self.queue.ensure_project(tx, project, now)
            tx.insert_workflow(
                {
                    "id": workflow_id,
                    "project": project,
                    "name": checked["name"],
                    "description": checked.get("description", ""),
                    "template": template,
                    "parameters": None if template is None else json.dumps(dict(parameters or {})),
                    "created_at": now,
                }
            )
            created = self.queue.insert_batch(tx, batch, now, actor, schemas)
            tx.set_workflow_refs(
                workflow_id, json.dumps({t["ref"]: c.id for t, c in zip(checked["tasks"], created, strict=True)})
            )
            return workflow_view(tx, tx.get_workflow(workflow_id))

        return self.queue.store.write(op)

    def _row(self, tx: Tx, workflow_id: str) -> Any:
        row = tx.get_workflow(workflow_id)
        if row is None:
            raise NotFound(f"no workflow with id {workflow_id!r}; list_workflows shows existing ids")
        return row

    def get(self, workflow_id: str, include_tasks: bool = True) -> Workflow:
        return self.queue.store.read(lambda tx: workflow_view(tx, self._row(tx, workflow_id), include_tasks))

    def list(
        self, project: str | None = None, limit: int = 20, cursor: str | None = None, status: str | None = None
    ) -> WorkflowPage:
        """Newest first, only those whose derived `status` matches if given; `next_cursor` fetches the next page."""

        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationFailed(f"limit must be between 1 and {MAX_LIMIT}")
        if status is not None and status not in WORKFLOW_STATUSES:
            raise ValidationFailed(f"status must be one of {', '.join(WORKFLOW_STATUSES)}")
        before = decode_cursor(cursor, 1)[0] if cursor else 2**62

        def summary(tx: Tx, row: Any) -> WorkflowSummary:
            counts = tx.workflow_task_counts(row["id"])
            return WorkflowSummary(
                id=row["id"],
                name=row["name"],
                project=row["project"],
                status=derive_status(counts, tx.workflow_blocked_count(row["id"]), row["cancelled_at"] is not None),
                progress=derive_progress(counts),
                total=sum(counts.values()),
                created_at=iso_time(row["created_at"]) or "",
            )

        def op(tx: Tx) -> WorkflowPage:
            # Status is derived, not stored: read newest-first batches until a page is full.
            found: list[tuple[int, WorkflowSummary]] = []
            after = before
            while len(found) <= limit:
                rows = tx.list_workflows(project, after, limit + 1)
                for row in rows:
                    item = summary(tx, row)
                    if status is None or item.status == status:
                        found.append((row["seq"], item))
                if len(rows) <= limit:
                    break
                after = rows[-1]["seq"]
            more = len(found) > limit
            found = found[:limit]
            return WorkflowPage(
                workflows=[item for _, item in found], next_cursor=encode_cursor(found[-1][0]) if more else None
            )

        return self.queue.store.read(op)

    def cancel(self, workflow_id: str, reason: str | None = None, actor: str | None = None) -> Workflow:
        """Cancel every unfinished task of the workflow; tasks outside it that wait on them become blocked."""

        check_text(reason, "reason")

        def op(tx: Tx) -> Workflow:
            now = self.queue.clock()
            row = self._row(tx, workflow_id)
            unfinished = [t for t in tx.workflow_tasks(workflow_id) if t["status"] in UNFINISHED]
            # A workflow with nothing left to do keeps its completed/failed status. Marked cancelled
            # first, so its tasks' cancel events do not read as the workflow finishing (notifications).
            if row["cancelled_at"] is None and unfinished:
                tx.cancel_workflow_row(workflow_id, now)
                for task in unfinished:
                    self.queue.set_status(
                        tx,
                        task,
                        Status.cancelled,
                        now,
                        actor,
                        "cancel",
                        error=reason or f"workflow {workflow_id} cancelled",
                        finished_at=now,
                        lease_expires_at=None,
                    )
                self.queue.propagate_blocked(tx, [t["seq"] for t in unfinished], now, actor)
            return workflow_view(tx, self._row(tx, workflow_id))

        return self.queue.store.write(op)

"""Which history events notify whom: outbox rows written inside the queue's own transaction.

The queue appends a history event for every change (queue.py `_event`); `enqueue_for_history`
runs right after, in the same transaction, so the change and its notifications commit together
or not at all. Only a few actions notify; for the rest this costs one dictionary lookup.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Literal

from mcp_taskqueue.ids import new_id
from mcp_taskqueue.store import Tx

NotificationEvent = Literal[
    "task.completed",
    "task.failed",
    "task.dead",
    "task.lease_expired",
    "task.blocked",
    "workflow.completed",
    "workflow.failed",
    "review.requested",
    "queue.depth",
]
EVENTS: tuple[str, ...] = NotificationEvent.__args__  # type: ignore[attr-defined]
HEADLINES = {
    "task.completed": "Task completed",
    "task.failed": "Task attempt failed",
    "task.dead": "Task failed for good",
    "task.lease_expired": "Task lease expired",
    "task.blocked": "Task blocked",
    "workflow.completed": "Workflow completed",
    "workflow.failed": "Workflow failed",
    "review.requested": "Review requested",
    "queue.depth": "Queue depth above threshold",
}
# Task states that end a task's part in its workflow (workflows.derive_status counts the rest).
FINISHED = ("completed", "failed", "cancelled")


def iso_now(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def events_for(action: str, new: Any) -> list[str]:
    """The notification events a history event stands for (usually none)."""
    status = new.get("status") if isinstance(new, dict) else None
    if action == "complete":
        return ["task.completed"]
    if action == "fail":
        return ["task.failed", "task.dead"] if status == "failed" else ["task.failed"]
    if action == "lease_expired":
        return ["task.lease_expired", "task.dead"] if status == "failed" else ["task.lease_expired"]
    if action == "blocked":
        return ["task.blocked"]
    if action == "phase" and isinstance(new, dict) and new.get("phase") == "review":
        return ["review.requested"]
    return []


def envelope(event: str, now: float, data: dict[str, Any]) -> str:
    """The JSON body every channel starts from: {type, timestamp, data} (Standard Webhooks' shape)."""
    return json.dumps({"type": event, "timestamp": iso_now(now), "data": data}, ensure_ascii=False)


def task_data(row: Any, actor: str | None, new: Any) -> dict[str, Any]:
    worker = (new.get("worker") if isinstance(new, dict) else None) or row["worker"]
    data: dict[str, Any] = {
        "id": row["id"],
        "title": row["title"],
        "project": row["project"],
        "kind": row["kind"],
        "status": row["status"],
        "tags": json.loads(row["tags"]) if row["tags"] else [],
        "worker": worker,
        "error": row["error"],
        "attempts": row["attempts"],
        "max_attempts": row["max_attempts"],
        "workflow_id": row["workflow_id"],
    }
    if isinstance(new, dict) and "phase" in new:
        data["phase"] = new["phase"]
    if isinstance(new, dict) and new.get("blocked_by"):
        data["blocked_by"] = new["blocked_by"]
    return {"task": data, "actor": actor}


def matches(filters: dict[str, list[str]], project: str, kind: str | None, tags: list[str]) -> bool:
    """Empty filter lists match everything; tags match when the task has any of them."""
    if filters.get("projects") and project not in filters["projects"]:
        return False
    if filters.get("kinds") and kind not in filters["kinds"]:
        return False
    return not (filters.get("tags") and not set(filters["tags"]) & set(tags))


def workflow_event(tx: Tx, row: Any, events: list[str]) -> tuple[str, dict[str, Any]] | None:
    """workflow.completed/failed when this task's change left its workflow with nothing unfinished."""
    if row["workflow_id"] is None or row["status"] not in FINISHED:
        return None
    counts = tx.workflow_task_counts(row["workflow_id"])
    if any(n for status, n in counts.items() if status not in FINISHED):
        return None
    workflow = tx.get_workflow(row["workflow_id"])
    if workflow is None or workflow["cancelled_at"] is not None:
        return None
    status = "failed" if counts.get("failed") else "completed" if counts.get("completed") else None
    if status is None:
        return None
    info = {
        "id": workflow["id"],
        "name": workflow["name"],
        "project": workflow["project"],
        "status": status,
        "task_counts": counts,
    }
    return f"workflow.{status}", info


def enqueue_for_history(tx: Tx, seq: int, now: float, actor: str | None, action: str, new: Any) -> None:
    """Write an outbox row per notifier that wants what this history event means."""
    events = events_for(action, new)
    if action in ("complete", "fail", "lease_expired", "cancel"):
        events.extend(("workflow.completed", "workflow.failed"))
    if not events:
        return
    subscribed = sorted(tx.notifiers_for_events(events), key=lambda s: (s["seq"], events.index(s["event"])))
    if not subscribed:
        return
    row = tx.get_task_by_seq(seq)
    tags = json.loads(row["tags"]) if row["tags"] else []
    base = task_data(row, actor, new)
    wanted = {e for e in events if not e.startswith("workflow.")}
    found = workflow_event(tx, row, events) if any(s["event"].startswith("workflow.") for s in subscribed) else None
    payloads: dict[str, tuple[str, str]] = {}
    for sub in subscribed:
        event = sub["event"]
        if event.startswith("workflow."):
            if found is None or found[0] != event:
                continue
            if event not in payloads:
                payloads[event] = (found[1]["id"], envelope(event, now, {**base, "workflow": found[1]}))
        elif event in wanted and event not in payloads:
            payloads[event] = (row["id"], envelope(event, now, base))
        if event not in payloads or not matches(json.loads(sub["filters"]), row["project"], row["kind"], tags):
            continue
        order_key, body = payloads[event]
        tx.insert_delivery("msg_" + new_id(), sub["seq"], event, order_key, body, now)

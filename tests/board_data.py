"""A fixed board for the board's tests: every column filled, one workflow with a critical path.

The same titles, priorities, kinds and statuses every time, so screenshots compare; times and
ids differ between runs and the tests mask or ignore them.
"""

from __future__ import annotations

from typing import Any

from mcp_taskqueue.models import Workflow
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.workflows import Workflows

# Tasks per column of project `demo` after `populate`.
DEMO_COUNTS = {"ready": 6, "running": 2, "blocked": 3, "failed": 1, "completed": 3, "cancelled": 1}

RELEASE_PLAN: dict[str, Any] = {
    "name": "Release 1.2",
    "project": "demo",
    "tasks": [
        {"ref": "design", "title": "Design the API", "kind": "plan", "priority": "high"},
        {"ref": "server", "title": "Build the server", "kind": "code", "depends_on": ["design"]},
        {"ref": "client", "title": "Build the client", "kind": "code", "depends_on": ["design"]},
        {"ref": "docs", "title": "Write the docs", "kind": "docs", "depends_on": ["design"], "priority": "low"},
        {"ref": "tests", "title": "Integration tests", "kind": "test", "depends_on": ["server", "client"]},
        {"ref": "ship", "title": "Ship the release", "kind": "release", "depends_on": ["tests", "docs"]},
    ],
}


def populate(queue: TaskQueue) -> dict[str, Any]:
    """Fill project `demo` (all six columns and a workflow) and project `ops`; returns ids by name."""
    ids: dict[str, Any] = {}
    for title, priority, kind in (
        ("Triage new issues", "high", "triage"),
        ("Summarise the changelog", "medium", "write"),
        ("Translate the README", "low", "write"),
    ):
        ids[title] = queue.create({"project": "demo", "title": title, "priority": priority, "kind": kind}).id
    running = queue.create({"project": "demo", "title": "Refactor the parser", "priority": "critical", "kind": "code"})
    queue.create({"project": "demo", "title": "Index the archive", "kind": "data", "tags": ["nightly"]})
    queue.claim("agent-ada", project="demo", lease_seconds=3600)
    queue.claim("agent-bob", project="demo", lease_seconds=3600)
    queue.heartbeat(running.id, "agent-ada", progress=0.4)
    ids["Refactor the parser"] = running.id
    doomed = queue.create({"project": "demo", "title": "Migrate the old database", "kind": "data", "max_attempts": 1})
    ids["Migrate the old database"] = doomed.id
    # the failed one must be claimed by a named worker: take it out of the way of the others first
    queue.update(doomed.id, {"priority": "critical"})
    assert queue.claim("agent-cy", project="demo") is not None
    queue.fail(doomed.id, "agent-cy", "disk full on the replica", retryable=False)
    waiting = queue.create(
        {"project": "demo", "title": "Publish the report", "kind": "write", "depends_on": [doomed.id]}
    )
    ids["Publish the report"] = waiting.id
    for title in ("Fix the login bug", "Update dependencies"):
        task = queue.create({"project": "demo", "title": title, "kind": "code", "priority": "critical"})
        assert queue.claim("agent-dee", project="demo") is not None
        queue.complete(task.id, "agent-dee", {"ok": True})
        ids[title] = task.id
    dropped = queue.create({"project": "demo", "title": "Old experiment", "kind": "research", "priority": "low"})
    queue.cancel(dropped.id, reason="no longer needed")
    ids["Old experiment"] = dropped.id
    workflow: Workflow = Workflows(queue).create(spec=RELEASE_PLAN)
    ids["workflow"] = workflow.id
    ids["workflow_refs"] = workflow.refs
    design = workflow.refs["design"]
    queue.update(design, {"priority": "critical"})
    assert queue.claim("agent-eve", project="demo").id == design  # type: ignore[union-attr]
    queue.complete(design, "agent-eve", {"spec": "docs/api.md"})
    queue.create({"project": "ops", "title": "Rotate the keys", "kind": "ops"})
    return ids

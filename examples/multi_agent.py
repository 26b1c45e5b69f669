"""A planner and three workers sharing one queue over HTTP.

Start a server, then run this against it:

    mcp-taskqueue serve --transport http --port 8765
    python examples/multi_agent.py --url http://127.0.0.1:8765/mcp

The planner writes a small plan as a dependency graph (a workflow when the server has the
workflow tools, else one atomic `create_tasks` batch whose items name each other by `ref`).
Three workers, each with its own connection, then drain it concurrently: a task is claimed
only once its dependencies are complete, so the sections are written in parallel and the
edit waits for all of them. The script prints a JSON summary of who did what, in what order.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import anyio

from mcp_taskqueue.client import TaskQueueClient
from mcp_taskqueue.models import Task
from mcp_taskqueue.worker import Worker

PLAN: list[dict[str, Any]] = [
    {"ref": "research", "title": "Research the topic", "kind": "research", "priority": "high"},
    {"ref": "outline", "title": "Write the outline", "kind": "write", "depends_on": ["research"]},
    {"ref": "intro", "title": "Write the introduction", "kind": "write", "depends_on": ["outline"]},
    {"ref": "body", "title": "Write the body", "kind": "write", "depends_on": ["outline"]},
    {"ref": "examples", "title": "Write the examples", "kind": "write", "depends_on": ["outline"]},
    {"ref": "edit", "title": "Edit the draft", "kind": "edit", "depends_on": ["intro", "body", "examples"]},
    {"ref": "publish", "title": "Publish", "kind": "publish", "depends_on": ["edit"], "priority": "critical"},
]


async def plan(url: str, project: str) -> tuple[str | None, dict[str, str]]:
    """The planner: create the whole graph in one transaction; returns (workflow id, ref -> task id)."""
    async with TaskQueueClient(url) as tq:
        tools = {tool.name for tool in (await tq.mcp.list_tools()).tools}
        if "create_workflow" in tools:
            workflow = await tq.create_workflow({"name": "write-article", "project": project, "tasks": PLAN})
            return workflow.id, dict(workflow.refs)
        created = await tq.create_tasks([{**item, "project": project} for item in PLAN])
        return None, created.refs


def make_worker(name: str, project: str, log: list[dict[str, Any]]) -> Worker:
    """One agent: handles every kind in the plan, taking a little time for each."""
    worker = Worker(name, project=project, lease_seconds=30, poll_interval=0.05)

    async def work(task: Task) -> dict[str, Any]:
        started = time.time()
        await anyio.sleep(0.15)  # stands in for real work (an LLM call, a build, ...)
        log.append({"task": task.id, "title": task.title, "worker": name, "started": started, "finished": time.time()})
        return {"done_by": name}

    for kind in {str(item["kind"]) for item in PLAN}:
        worker.handler(kind)(work)
    return worker


async def run(url: str, project: str, workers: int) -> dict[str, Any]:
    workflow_id, refs = await plan(url, project)
    log: list[dict[str, Any]] = []
    agents = [make_worker(f"agent-{i + 1}", project, log) for i in range(workers)]
    async with anyio.create_task_group() as tg:
        for agent in agents:
            tg.start_soon(lambda a=agent: a.run(url, stop_when_idle=True, handle_signals=False))
    async with TaskQueueClient(url) as tq:
        stats = await tq.queue_stats(project)
    return {
        "project": project,
        "workflow_id": workflow_id,
        "refs": refs,
        "completed": stats.by_status.get("completed", 0),
        "by_worker": {agent.name: agent.stats.completed for agent in agents},
        "log": sorted(log, key=lambda entry: entry["started"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8765/mcp")
    parser.add_argument("--project", default="article")
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    summary = anyio.run(run, args.url, args.project, args.workers)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

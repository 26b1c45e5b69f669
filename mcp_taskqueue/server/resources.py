"""The MCP resources: read-only JSON views of the queue that clients can subscribe to."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from pydantic import BaseModel

from mcp_taskqueue.errors import NotFound, TaskQueueError
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.tools import run_off_loop

T = TypeVar("T")
JSON = "application/json"


async def read_json(fn: Callable[[], Any]) -> str:
    """Run a queue read off the event loop and render it as compact JSON."""
    try:
        value = await run_off_loop(fn)
    except NotFound as exc:
        raise ResourceNotFoundError(str(exc)) from exc
    except TaskQueueError as exc:
        raise ResourceError(f"{exc.code}: {exc}") from exc
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, list):
        return json.dumps([v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value])
    return json.dumps(value)


def register_resources(mcp: MCPServer, queue: TaskQueue) -> None:
    @mcp.resource("taskqueue://stats", name="stats", mime_type=JSON)
    async def stats() -> str:
        """Queue-wide counts by status and priority, expired leases and blocked tasks."""
        return await read_json(queue.stats)

    @mcp.resource("taskqueue://projects", name="projects", mime_type=JSON)
    async def projects() -> str:
        """Every project with its settings and task counts."""
        return await read_json(lambda: {"projects": [p.model_dump(mode="json") for p in queue.list_projects()]})

    @mcp.resource("taskqueue://projects/{name}", name="project", mime_type=JSON)
    async def project(name: str) -> str:
        """One project: settings, task counts and its queue statistics."""

        def read() -> dict[str, Any]:
            return {
                **queue.get_project(name).model_dump(mode="json"),
                "stats": queue.stats(name).model_dump(mode="json"),
            }

        return await read_json(read)

    @mcp.resource("taskqueue://tasks/{task_id}", name="task", mime_type=JSON)
    async def task(task_id: str) -> str:
        """One task with every field."""
        return await read_json(lambda: queue.get(task_id))

    @mcp.resource("taskqueue://tasks/{task_id}/history", name="task_history", mime_type=JSON)
    async def task_history(task_id: str) -> str:
        """A task's append-only history: who changed what, when, old -> new (latest 1000 events)."""
        return await read_json(lambda: queue.history(task_id, limit=1000, latest=True))

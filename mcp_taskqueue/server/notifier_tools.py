"""The `notifications` toolset and the `taskqueue://notifiers/{id}` resource.

Thin wrappers over notify/notifiers.py. Secrets go in (create_notifier's `secret`) and never
come out. test_notifier's send, like every store call, runs in a worker thread.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server import MCPServer
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field

from mcp_taskqueue.notify.events import NotificationEvent
from mcp_taskqueue.notify.models import DeletedNotifier, NotifierInfo, NotifierList, TestResult
from mcp_taskqueue.notify.notifiers import Channel, Notifiers
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.resources import JSON, read_json
from mcp_taskqueue.server.tools import DESTRUCTIVE, READ, reply, run_queue

NotifierArg = Annotated[str, Field(min_length=1, max_length=100, description="Notifier id or name.")]
SEND = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
SAVE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


def register_notifier_tools(mcp: MCPServer, queue: TaskQueue) -> None:
    notifiers = Notifiers(queue.store, queue.clock)

    @mcp.tool(annotations=SAVE)
    async def create_notifier(
        name: Annotated[str, Field(min_length=1, max_length=100)],
        channel: Channel,
        target: Annotated[str, Field(min_length=3, max_length=2000, description="URL, or emails.")],
        events: Annotated[list[NotificationEvent], Field(min_length=1)],
        filters: Annotated[
            dict[str, list[str]] | None, Field(description="{projects?,kinds?,tags?}: name lists.")
        ] = None,
        threshold: Annotated[int | None, Field(ge=0, description="For queue.depth: ready tasks.")] = None,
        templates: Annotated[dict[str, str] | None, Field(description="Jinja2, by key.")] = None,
        options: Annotated[dict[str, Any] | None, Field(description="Per channel.")] = None,
        secret: Annotated[str | None, Field(max_length=500, description="Write-only key, token or password.")] = None,
        replace: bool = False,
    ) -> Annotated[CallToolResult, NotifierInfo]:
        """Send events to a webhook, Slack, Discord, email, twilio (SMS) or fcm (push). Private addresses
        need allowing. replace=true updates by name."""
        info = await run_queue(
            notifiers.create,
            name,
            channel,
            target,
            events,
            filters=filters,
            threshold=threshold,
            templates=templates,
            options=options,
            secret=secret,
            replace=replace,
        )
        return reply(info)

    @mcp.tool(annotations=READ)
    async def list_notifiers() -> Annotated[CallToolResult, NotifierList]:
        """Notifiers and their delivery counts; taskqueue://notifiers/{id} lists deliveries."""
        return reply(await run_queue(notifiers.list_notifiers))

    @mcp.tool(annotations=DESTRUCTIVE)
    async def delete_notifier(notifier: NotifierArg) -> Annotated[CallToolResult, DeletedNotifier]:
        """Remove a notifier and its deliveries (undelivered ones are dropped)."""
        return reply(await run_queue(notifiers.delete, notifier))

    @mcp.tool(annotations=SEND)
    async def test_notifier(notifier: NotifierArg) -> Annotated[CallToolResult, TestResult]:
        """Send a sample task.completed now; returns the receiver's answer."""
        return reply(await run_queue(notifiers.test, notifier))


def register_notifier_resources(mcp: MCPServer, queue: TaskQueue) -> None:
    notifiers = Notifiers(queue.store, queue.clock)

    @mcp.resource("taskqueue://notifiers/{notifier_id}", name="notifier", mime_type=JSON)
    async def notifier(notifier_id: str) -> str:
        """A notifier (no secrets) with its latest 50 deliveries: status, attempts, last response code, latency."""
        return await read_json(lambda: notifiers.get(notifier_id))

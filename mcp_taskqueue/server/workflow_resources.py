"""Workflow and schema resources, and argument completion for prompts and resource templates."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from mcp.server import MCPServer
from mcp_types import Completion, CompletionArgument, CompletionContext, PromptReference, ResourceTemplateReference

from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.resources import JSON, read_json
from mcp_taskqueue.store import Tx
from mcp_taskqueue.workflows import Workflows

MAX_COMPLETIONS = 100  # the protocol's cap on values per completion


def register_workflow_resources(mcp: MCPServer, queue: TaskQueue) -> None:
    workflows = Workflows(queue)

    @mcp.resource("taskqueue://workflows/{workflow_id}", name="workflow", mime_type=JSON)
    async def workflow(workflow_id: str) -> str:
        """A workflow with its tasks, derived status, progress, blocked tasks and critical path."""
        return await read_json(lambda: workflows.get(workflow_id))

    @mcp.resource("taskqueue://schemas/{name}", name="schema", mime_type=JSON)
    async def schema(name: str) -> str:
        """A JSON Schema: 'workflow' (create_workflow's spec), a task kind's payload schema, or
        '<project>:<kind>' for a schema a project registered."""
        return await read_json(lambda: queue.store.read(lambda tx: queue.payload_schemas.named(name, tx)))


def completion_values(tx: Tx, queue: TaskQueue, argument: str, prefix: str) -> list[str]:
    """Candidates for an argument, by its name: projects, task ids, workflow ids, schema names."""
    if argument == "project":
        return tx.project_names(prefix, MAX_COMPLETIONS)
    if argument in ("task_id", "parent_id"):
        return tx.task_ids(prefix, MAX_COMPLETIONS)
    if argument == "workflow_id":
        return tx.workflow_ids(prefix, MAX_COMPLETIONS)
    if argument == "schema":
        names = ["workflow", *queue.payload_schemas.file_kinds()]
        return [n for n in names if n.startswith(prefix)]
    return []


def register_completions(mcp: MCPServer, queue: TaskQueue) -> None:
    @mcp.completion()  # type: ignore[no-untyped-call, untyped-decorator]
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion | None:
        name = argument.name
        if isinstance(ref, ResourceTemplateReference) and name == "name":
            # {name} is a project in taskqueue://projects/{name} and a schema in taskqueue://schemas/{name}
            name = "schema" if ref.uri.startswith("taskqueue://schemas/") else "project"

        def read() -> list[str]:
            return queue.store.read(lambda tx: completion_values(tx, queue, name, argument.value))

        values: list[Any] = await anyio.to_thread.run_sync(read)
        return Completion(values=values[:MAX_COMPLETIONS], has_more=len(values) >= MAX_COMPLETIONS)

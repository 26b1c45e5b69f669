"""MCP tools of the `workflows` and `development` toolsets: thin wrappers over workflows.py and development.py."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult
from pydantic import Field

from mcp_taskqueue.development import Development
from mcp_taskqueue.models import (
    MAX_LIMIT,
    CreatedWorkflow,
    Phase,
    PhaseState,
    Workflow,
    WorkflowPage,
    WorkflowStatus,
    WorkflowSummary,
)
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.tools import DESTRUCTIVE, READ, WRITE, ProjectArg, TaskIdArg, actor, reply, run_queue
from mcp_taskqueue.workflows import Workflows, template_summary

WorkflowIdArg = Annotated[str, Field(min_length=1, max_length=64, description="Workflow id.")]

CREATE_WORKFLOW_DOC = """Create a task graph atomically from `spec` {{name, project?, tasks: [{{ref, title,
depends_on?: [refs|ids], priority?, kind?, payload?, description?, acceptance_criteria?}}]}} (full schema:
taskqueue://schemas/workflow) or from `template` + `parameters`: {templates} (* required)."""


def one_line(text: str) -> str:
    """Docstrings as single-spaced text: indentation costs tokens in every tools/list."""
    return " ".join(text.split())


def register_workflow_tools(mcp: MCPServer, queue: TaskQueue) -> None:
    workflows = Workflows(queue)

    @mcp.tool(annotations=WRITE, description=one_line(CREATE_WORKFLOW_DOC.format(templates=template_summary() or "-")))
    async def create_workflow(
        spec: dict[str, Any] | None = None,
        template: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> Annotated[CallToolResult, CreatedWorkflow]:
        created = await run_queue(workflows.create, spec, template, parameters)
        return reply(CreatedWorkflow(**WorkflowSummary.of(created).model_dump(), refs=created.refs))

    @mcp.tool(
        annotations=READ,
        description="A workflow's status, progress, running tasks, blocked tasks (id -> failed/cancelled tasks in "
        "the way), critical path of unfinished tasks, refs and tasks.",
    )
    async def get_workflow(
        workflow_id: WorkflowIdArg, include_tasks: bool = True
    ) -> Annotated[CallToolResult, Workflow]:
        return reply(await run_queue(workflows.get, workflow_id, include_tasks))

    @mcp.tool(annotations=READ)
    async def list_workflows(
        project: ProjectArg = None,
        limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = 20,
        cursor: str | None = None,
        status: WorkflowStatus | None = None,
    ) -> Annotated[CallToolResult, WorkflowPage]:
        """Workflows, newest first, with status and progress (only those with `status` if given)."""
        return reply(await run_queue(workflows.list, project, limit, cursor, status))

    @mcp.tool(annotations=DESTRUCTIVE)
    async def cancel_workflow(
        workflow_id: WorkflowIdArg, reason: str | None = None
    ) -> Annotated[CallToolResult, WorkflowSummary]:
        """Cancel every unfinished task of a workflow, running ones too."""
        return reply(WorkflowSummary.of(await run_queue(workflows.cancel, workflow_id, reason)))


def register_development_tools(mcp: MCPServer, queue: TaskQueue) -> None:
    development = Development(queue)

    @mcp.tool(
        annotations=WRITE,
        description="Advance a task one development phase (order as in `to`) with that gate's evidence; done "
        "needs approving reviews (add_review). Only review -> implementation goes back.",
    )
    async def advance_phase(
        task_id: TaskIdArg,
        to: Phase,
        design_doc: Annotated[str | None, Field(description="Path; to enter implementation.")] = None,
        coverage: Annotated[float | None, Field(ge=0, le=100, description="Percent; to enter testing.")] = None,
        test_report: Annotated[
            dict[str, Any] | None, Field(description="{passed, failed, errors?, report_path?}; to enter review.")
        ] = None,
        reason: str | None = None,
        by: Annotated[str | None, Field(max_length=100, description="Your name; authors may not review.")] = None,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, PhaseState]:
        state = await run_queue(
            development.advance,
            task_id,
            to,
            design_doc=design_doc,
            coverage=coverage,
            test_report=test_report,
            reason=reason,
            actor=by or actor(ctx),
        )
        return reply(state)

    @mcp.tool(
        annotations=WRITE,
        description="Review a task in the review phase; counts if approved with score >= the project's threshold. "
        "One vote per reviewer per round.",
    )
    async def add_review(
        task_id: TaskIdArg,
        reviewer: Annotated[str, Field(min_length=1, max_length=100)],
        score: Annotated[float, Field(ge=0, le=1)],
        approved: bool = True,
        comment: str | None = None,
    ) -> Annotated[CallToolResult, PhaseState]:
        return reply(await run_queue(development.add_review, task_id, reviewer, score, approved, comment))


REGISTRARS = {"workflows": register_workflow_tools, "development": register_development_tools}

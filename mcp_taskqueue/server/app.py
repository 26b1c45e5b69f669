"""Builds the MCP server: one `MCPServer` over one `TaskQueue`, with the chosen toolsets."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from mcp.server import MCPServer
from mcp.server.extension import Extension
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from pydantic import ValidationError

from mcp_taskqueue import __version__
from mcp_taskqueue.identity import Tokens
from mcp_taskqueue.models import invalid_text
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.auth import still_valid
from mcp_taskqueue.server.board_app import board_apps
from mcp_taskqueue.server.body_limits import limit_of
from mcp_taskqueue.server.compact import compact_tool_schemas
from mcp_taskqueue.server.notifications import LegacySubscriptions, ResourceWatcher, register_subscriptions
from mcp_taskqueue.server.notifier_tools import register_notifier_resources
from mcp_taskqueue.server.prompts import register_prompts
from mcp_taskqueue.server.reporting import CallReports, register_reporting
from mcp_taskqueue.server.resources import register_resources
from mcp_taskqueue.server.service import ServiceOptions, auth_kwargs, install_middleware
from mcp_taskqueue.server.tools import DOCUMENTED_INPUTS, NULL_ARGUMENTS, REGISTRARS, TOOLSETS
from mcp_taskqueue.server.workflow_resources import register_completions, register_workflow_resources
from mcp_taskqueue.store import Storage, open_store

log = logging.getLogger("mcp_taskqueue.server")

INSTRUCTIONS = """\
A durable task queue shared by agents. Plan work as tasks (create_task, create_tasks with \
depends_on), then work it: claim_task -> heartbeat while working -> complete_task or fail_task. \
Pass the claim's lease_id to heartbeat, complete_task, fail_task and release_task: only the \
current lease may move the task. \
Use list_tasks/get_task to look around and queue_stats for an overview. The prompt work_next \
describes the worker loop. Plan larger work as one workflow (create_workflow; prompt plan_project) \
and track it with get_workflow; advance_phase/add_review enforce the development phases."""


# Toolsets that are SDK extensions (applied when the server is built) rather than plain registrars.
EXTENSIONS: dict[str, Callable[[TaskQueue], Extension]] = {"board": board_apps}


def parse_toolsets(value: str | Iterable[str] | None) -> list[str]:
    """'tasks,queue' -> ['tasks', 'queue']; None or 'all' -> every toolset."""
    known = [name for name in TOOLSETS if name in REGISTRARS] + list(EXTENSIONS)
    if value is None:
        return known
    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value) if n.strip()]
    if names == ["all"]:
        return known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown toolset(s) {unknown}; choose from {', '.join(known)} (or 'all')")
    return names


def oversized(arguments: dict[str, Any], properties: dict[str, Any]) -> str | None:
    """The first argument longer than its advertised maxItems/maxLength, checked before any item is validated.

    pydantic checks a list's length only after validating every item: 250 000 tasks sent to
    `create_tasks` would each become a model before the 500-item limit is noticed.
    """
    for key, value in arguments.items():
        if not isinstance(value, (list, str)):
            continue
        limit = limit_of(properties.get(key, {}), "maxItems" if isinstance(value, list) else "maxLength")
        if limit is not None and len(value) > limit:
            unit = "items" if isinstance(value, list) else "characters"
            return f"{key}: at most {limit} {unit} (got {len(value)})"
    return None


class TaskQueueServer(MCPServer):
    """MCPServer whose argument errors read like our own errors: `... validation_failed: <field>: <problem>`.

    The SDK would send pydantic's multi-line report with documentation URLs; agents do better with
    one line per field. Unknown argument names are refused too: a misspelt `priorty` silently
    ignored would create the wrong task.
    """

    reports: CallReports

    def argument_schemas(self, name: str) -> dict[str, Any]:
        """A tool's advertised argument properties ({} for an unknown tool)."""
        tool = self._tool_manager.get_tool(name)
        return dict(tool.parameters.get("properties", {})) if tool is not None else {}

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        return await self.reports.run(context, name, lambda: self._logged_call(name, arguments, context))

    async def _logged_call(self, name: str, arguments: dict[str, Any], context: Any) -> Any:
        log.debug("%s called with %s", name, ", ".join(sorted(arguments)) or "no arguments")  # names, not values
        start = time.perf_counter()
        try:
            result = await self._checked_call(name, arguments, context)
        except ToolError as exc:
            log.info("%s refused after %.0f ms: %s", name, (time.perf_counter() - start) * 1000, str(exc)[:300])
            raise
        log.info("%s done in %.0f ms", name, (time.perf_counter() - start) * 1000)
        return result

    async def _checked_call(self, name: str, arguments: dict[str, Any], context: Any) -> Any:
        tool = self._tool_manager.get_tool(name)
        nulls: frozenset[str] = frozenset()
        if tool is not None:
            known = tool.parameters.get("properties", {})
            refuse = f"Error executing tool {name}: validation_failed:"
            unknown = sorted(set(arguments) - set(known))
            if unknown:
                raise ToolError(f"{refuse} unknown argument(s) {', '.join(unknown)}; {name} takes {', '.join(known)}")
            bad = invalid_text(arguments)
            if bad is not None:
                raise ToolError(
                    f"{refuse} {bad}: text is not valid Unicode (a lone surrogate, e.g. half an emoji); "
                    "send well-formed UTF-8"
                )
            too_long = oversized(arguments, known)
            if too_long:
                raise ToolError(f"Error executing tool {name}: validation_failed: {too_long}")
            for key, value in arguments.items():
                if isinstance(value, bool) and _wants_number(known.get(key, {})):
                    raise ToolError(f"{refuse} {key}: Input should be a number, not a boolean")
            # null for an optional argument means its default (several clients send null for every one)
            required = set(tool.parameters.get("required", []))
            nulls = frozenset(k for k, v in arguments.items() if v is None and k not in required)
            arguments = {k: v for k, v in arguments.items() if k not in nulls}
        token = NULL_ARGUMENTS.set(nulls)
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError) and not isinstance(exc, UnexpectedToolError):
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}" for err in cause.errors()
                )
                raise ToolError(f"Error executing tool {name}: validation_failed: {problems}") from cause
            raise
        finally:
            NULL_ARGUMENTS.reset(token)

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None, context: Any = None) -> Any:
        """An unknown prompt or a bad argument is the caller's mistake: JSON-RPC -32602, no traceback."""
        if name not in {prompt.name for prompt in await self.list_prompts()}:
            raise MCPError(code=INVALID_PARAMS, message=f"unknown prompt {name!r}; prompts/list names the prompts")
        bad = invalid_text(arguments or {})
        if bad is not None:
            raise MCPError(code=INVALID_PARAMS, message=f"validation_failed: {bad}: text is not valid Unicode")
        try:
            return await super().get_prompt(name, arguments, context)
        except MCPError:
            raise
        except Exception as exc:
            raise MCPError(code=INVALID_PARAMS, message=f"prompt {name!r}: {exc}") from None


def _wants_number(schema: dict[str, Any]) -> bool:
    """Does this argument's schema take a number but not a boolean (JSON true is not 1)?"""
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    return ("integer" in kinds or "number" in kinds) and "boolean" not in kinds


def build_server(
    queue: TaskQueue | Storage | str | os.PathLike[str] | None = None,
    toolsets: str | Iterable[str] | None = None,
    service: ServiceOptions | None = None,
) -> MCPServer:
    """The MCP server for a queue (or a store, or a database path or `postgresql://` URL; None is
    the default store).

    `service` switches on what a shared HTTP server needs (server/service.py): auth, rate limits,
    metrics. Without it every caller is the local user, as on stdio.
    Notifications are sent by a `Dispatcher` that `serve` runs for the process's life, whatever the
    transport; a server built here (in-process clients, the CLI's one-off commands) never sends."""
    if queue is None or isinstance(queue, (str, os.PathLike)):
        queue = TaskQueue(open_store(queue))
    elif not isinstance(queue, TaskQueue):
        queue = TaskQueue(queue)
    # Live updates: one watcher per process feeds both subscribe mechanisms (server/notifications.py).
    bus = InMemorySubscriptionBus()
    legacy = LegacySubscriptions(functools.partial(still_valid, Tokens(queue.store)))  # revoked: no more notifications
    watcher = ResourceWatcher(queue.store, bus, legacy, promote=queue.promote_due)
    names = parse_toolsets(toolsets)
    mcp = TaskQueueServer(
        "mcp-taskqueue",
        title="Task queue",
        version=__version__,
        instructions=INSTRUCTIONS,
        warn_on_duplicate_tools=False,
        log_level="WARNING",
        lifespan=watcher.lifespan,
        subscriptions=bus,
        **auth_kwargs(service, queue),
        extensions=[EXTENSIONS[name](queue) for name in names if name in EXTENSIONS],
    )
    register_subscriptions(mcp, legacy)
    mcp.reports = register_reporting(mcp)
    mcp.watcher = watcher  # type: ignore[attr-defined]
    for name in names:
        if name in REGISTRARS:
            REGISTRARS[name](mcp, queue)
    register_resources(mcp, queue)
    register_workflow_resources(mcp, queue)
    register_notifier_resources(mcp, queue)
    register_completions(mcp, queue)
    register_prompts(mcp)
    # tools/list carries outlines; the full, typed output schemas stay here (docs/reference.md, SDK generators)
    inputs, outputs = compact_tool_schemas(mcp, DOCUMENTED_INPUTS)
    mcp.input_schemas, mcp.output_schemas = inputs, outputs  # type: ignore[attr-defined]
    install_middleware(mcp, queue, service)
    mcp.queue = queue  # type: ignore[attr-defined]
    return mcp

"""What a client hears while a tool runs: progress notifications and the server's own log records.

- Progress: when the request carries a progress token, `progress.report` calls made by the queue
  (batch inserts, workflows) are sent as `notifications/progress`, at most every POLL seconds,
  plus a final one with the total.
- Logs: records of the `mcp_taskqueue` loggers made while serving a request are sent to that
  request's client as `notifications/message`, when the client asked for them: by
  `logging/setLevel` on connections that negotiated a protocol version before 2026-07-28 (the
  level is kept per connection), or by the per-request log-level opt-in of 2026-07-28 (SEP-2577:
  `_meta["io.modelcontextprotocol/logLevel"]`, which the SDK's `Client(log_level=...)` sends).
"""

from __future__ import annotations

import logging
import warnings
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import anyio
from mcp import MCPDeprecationWarning
from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp_types import LOG_LEVEL_META_KEY, EmptyResult, LoggingLevel, SetLevelRequestParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcp_taskqueue import progress

T = TypeVar("T")
POLL = 0.1  # seconds between progress/log flushes during a call
PACKAGE_LOGGER = "mcp_taskqueue"
LONG_TOOLS = frozenset({"create_tasks", "create_workflow"})  # calls that report progress as they go

# MCP's RFC 5424 levels <-> Python's.
TO_PYTHON: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO + 5,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "alert": logging.CRITICAL + 5,
    "emergency": logging.CRITICAL + 10,
}


def to_mcp_level(levelno: int) -> LoggingLevel:
    """The highest MCP level at or below a Python level number."""
    found: LoggingLevel = "debug"
    for name, number in TO_PYTHON.items():
        if levelno >= number:
            found = name  # type: ignore[assignment]
    return found


# Context.log is the SDK's way to send a request-scoped log entry; the feature is deprecated from
# 2026-07-28 on but still how both eras deliver it, so its warning is expected here.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning, module=__name__)

Sink = tuple[int, "deque[tuple[LoggingLevel, str, str]]"]
_sink: ContextVar[Sink | None] = ContextVar("mcp_taskqueue_log_sink", default=None)


class ForwardToClient(logging.Handler):
    """Collects records made while serving a request whose client wants logs at that level."""

    def emit(self, record: logging.LogRecord) -> None:
        sink = _sink.get()
        if sink is not None and record.levelno >= sink[0]:
            try:
                sink[1].append((to_mcp_level(record.levelno), record.getMessage(), record.name))
            except Exception:  # a bad format string must not break the request
                self.handleError(record)


def connection_of(session: Any) -> Any:
    """What lives as long as the client: a ServerSession is per request, its connection is not."""
    return getattr(session, "_connection", session)


class CallReports:
    """Per-server state: each connection's `logging/setLevel` level; wraps tool calls."""

    def __init__(self) -> None:
        self.levels: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        logger = logging.getLogger(PACKAGE_LOGGER)
        if not any(isinstance(h, ForwardToClient) for h in logger.handlers):
            logger.addHandler(ForwardToClient())

    async def set_level(self, ctx: ServerRequestContext[Any, Any], params: SetLevelRequestParams) -> EmptyResult:
        """`logging/setLevel`: this connection gets log records at `level` and above from now on."""
        level = TO_PYTHON[params.level]
        self.levels[connection_of(ctx.session)] = level
        allow_records_at(level)
        return EmptyResult()

    def log_threshold(self, rctx: ServerRequestContext[Any, Any]) -> int | None:
        """The Python level from which this request's client wants records; None: no records."""
        if rctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            requested = (rctx.meta or {}).get(LOG_LEVEL_META_KEY)
            level = TO_PYTHON.get(requested) if isinstance(requested, str) else None
            if level is not None:
                allow_records_at(level)
            return level
        return self.levels.get(connection_of(rctx.session))

    async def run(self, context: Any, tool: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run a tool call, sending progress and log records to its client while it runs."""
        try:
            rctx = context.request_context
        except (AttributeError, ValueError):  # called outside a request (tests, in-process use)
            return await call()
        meta: dict[str, Any] = dict(rctx.meta or {})
        # In-process clients get progress through a callback, not a token: long tools always listen.
        wants_progress = tool in LONG_TOOLS or meta.get("progress_token", meta.get("progressToken")) is not None
        threshold = self.log_threshold(rctx)
        if not wants_progress and threshold is None:
            return await call()

        records: deque[tuple[LoggingLevel, str, str]] = deque()
        latest: list[tuple[int, int] | None] = [None]
        sent: list[tuple[int, int] | None] = [None]

        async def flush() -> None:
            while records:
                level, message, logger = records.popleft()
                await rctx.session.send_log_message(
                    level=level, data=message, logger=logger, related_request_id=context.request_id
                )
            now = latest[0]
            if now is not None and now != sent[0]:
                sent[0] = now
                await context.report_progress(now[0], now[1])

        async def poll() -> None:
            while True:
                await anyio.sleep(POLL)
                await flush()

        def on_progress(done: int, total: int) -> None:
            latest[0] = (done, total)

        error: BaseException | None = None
        result: Any = None
        token = _sink.set((threshold, records) if threshold is not None else None)
        try:
            with progress.listening(on_progress):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(poll)
                    try:
                        result = await call()
                    except Exception as exc:  # re-raised below, outside the task group
                        error = exc
                    tg.cancel_scope.cancel()
        finally:
            _sink.reset(token)
        await flush()
        if error is not None:
            raise error
        return result  # type: ignore[no-any-return]


class ToParents(logging.Handler):
    """Passes records at the level the process logged at before to the parent loggers' handlers."""

    def emit(self, record: logging.LogRecord) -> None:
        parent = logging.getLogger(PACKAGE_LOGGER).parent
        if parent is not None:
            parent.handle(record)


def allow_records_at(level: int) -> None:
    """Make our loggers create records at `level` for clients that asked, while stderr (the parent
    loggers' handlers) still gets only what it got before."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    current = logger.getEffectiveLevel()
    if current <= level:
        return
    if logger.propagate:
        to_parents = ToParents(current)
        logger.addHandler(to_parents)
        logger.propagate = False
    else:
        for handler in logger.handlers:
            if isinstance(handler, ToParents):
                handler.setLevel(max(handler.level, current))
    logger.setLevel(level)


def register_reporting(mcp: MCPServer) -> CallReports:
    """Declare the `logging` capability (a `logging/setLevel` handler) and return the call wrapper."""
    reports = CallReports()
    # The SDK's MCPServer has no public hook for logging/setLevel; the lowlevel server has.
    mcp._lowlevel_server.add_request_handler("logging/setLevel", SetLevelRequestParams, reports.set_level)
    return reports

"""Prometheus metrics at /metrics (prometheus-client), and the observer that logs and times each call.

Every metric this server exports is listed in `METRIC_NAMES` (tests check the deploy/
dashboard and alert rules against it):

- `taskqueue_tasks{project,status}`: tasks by status and project (read from the store at scrape);
- `taskqueue_ready_oldest_age_seconds`, `taskqueue_expired_leases`: the stuck-queue signals;
- `taskqueue_claims_total`, `taskqueue_completions_total`, `taskqueue_failures_total`,
  `taskqueue_lease_expiries_total`: from the history, so they count every process on the store,
  since this server started;
- `taskqueue_tool_calls_total{tool,outcome}`, `taskqueue_tool_call_duration_seconds{tool}`;
- `taskqueue_http_requests_total{method,route,status}`, `taskqueue_http_request_duration_seconds{route}`;
- `taskqueue_rate_limited_total{bucket}`, `taskqueue_store_errors_total{code}`;
- `taskqueue_change_feed_lag_seconds`: how long since the change feed last looked at the store.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio.to_thread
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_taskqueue import __version__
from mcp_taskqueue.identity import CURRENT_IDENTITY
from mcp_taskqueue.logs import current_trace_id
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.ratelimit import BUCKETS
from mcp_taskqueue.store.event_counts import count_events_since, latest_event_seq

log = logging.getLogger("mcp_taskqueue.requests")

# History actions -> the counter they feed.
EVENT_COUNTERS = {
    "claimed": ("taskqueue_claims_total", "Tasks claimed."),
    "complete": ("taskqueue_completions_total", "Tasks completed."),
    "fail": ("taskqueue_failures_total", "Failed attempts reported (retried or final)."),
    "lease_expired": ("taskqueue_lease_expiries_total", "Leases that expired before the worker finished."),
}
STORE_ERROR_CODES = frozenset({"store_error", "store_busy", "store_lost", "store_full"})
KNOWN_ROUTES = ("/mcp", "/sse", "/messages/", "/healthz", "/readyz", "/metrics", "/", "/board")
METRIC_NAMES = frozenset(
    {
        "taskqueue_build_info",
        "taskqueue_tasks",
        "taskqueue_ready_oldest_age_seconds",
        "taskqueue_expired_leases",
        *(name for name, _ in EVENT_COUNTERS.values()),
        "taskqueue_tool_calls_total",
        "taskqueue_tool_call_duration_seconds",
        "taskqueue_http_requests_total",
        "taskqueue_http_request_duration_seconds",
        "taskqueue_rate_limited_total",
        "taskqueue_store_errors_total",
        "taskqueue_change_feed_lag_seconds",
    }
)
TOOL_ERROR = re.compile(r"^Error executing tool [\w.-]+: (?P<code>[a-z_]+):")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StoreCollector(Collector):
    """Scrape-time numbers read from the store: task counts, stuck-queue signals, event counters."""

    def __init__(
        self, queue: TaskQueue, rejected: Callable[[], dict[str, int]], feed_age: Callable[[], float | None]
    ) -> None:
        self.queue = queue
        self.rejected = rejected
        self.feed_age = feed_age
        self._seq = latest_event_seq(queue.store)
        self._counts: dict[str, int] = dict.fromkeys(EVENT_COUNTERS, 0)
        self._lock = threading.Lock()

    def _advance(self) -> None:
        with self._lock:
            while True:
                counts, seq = count_events_since(self.queue.store, self._seq)
                for action, n in counts.items():
                    if action in self._counts:
                        self._counts[action] += n
                if seq == self._seq or not counts:
                    break
                self._seq = seq

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("taskqueue_build_info", "Version of this server.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        tasks = GaugeMetricFamily("taskqueue_tasks", "Tasks by project and status.", labels=["project", "status"])
        for project in self.queue.list_projects():
            for status, n in sorted(project.task_counts.items()):
                tasks.add_metric([project.name, status], n)
        yield tasks
        stats = self.queue.stats(None)
        yield GaugeMetricFamily(
            "taskqueue_ready_oldest_age_seconds",
            "Age of the oldest ready task (0 when none is ready).",
            value=stats.oldest_ready_age_seconds or 0.0,
        )
        yield GaugeMetricFamily(
            "taskqueue_expired_leases", "Running tasks whose lease has expired.", value=stats.expired_leases
        )
        self._advance()
        for action, (name, doc) in EVENT_COUNTERS.items():
            yield CounterMetricFamily(name.removesuffix("_total"), doc, value=self._counts[action])
        limited = CounterMetricFamily("taskqueue_rate_limited", "Calls refused over budget.", labels=["bucket"])
        rejected = self.rejected()
        for bucket in sorted({*BUCKETS, *rejected}):
            limited.add_metric([bucket], rejected.get(bucket, 0))
        yield limited
        age = self.feed_age()
        yield GaugeMetricFamily(
            "taskqueue_change_feed_lag_seconds",
            "Seconds since the change feed last read the store (subscribers hear of changes this late).",
            value=age if age is not None else 0.0,
        )


class Metrics:
    """One registry per server: the instrumented counters plus the store collector."""

    def __init__(
        self,
        queue: TaskQueue,
        rejected: Callable[[], dict[str, int]] = dict,
        feed_age: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tool_calls = Counter(
            "taskqueue_tool_calls", "MCP tool calls.", ["tool", "outcome"], registry=self.registry
        )
        self.tool_latency = Histogram(
            "taskqueue_tool_call_duration_seconds",
            "MCP tool call latency.",
            ["tool"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "taskqueue_http_requests", "HTTP requests.", ["method", "route", "status"], registry=self.registry
        )
        self.http_latency = Histogram(
            "taskqueue_http_request_duration_seconds",
            "HTTP request latency (to the end of the response; streams count until they close).",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.store_errors = Counter(
            "taskqueue_store_errors", "Tool calls that failed in the store.", ["code"], registry=self.registry
        )
        for code in sorted(STORE_ERROR_CODES):  # exported as 0 from the start, so rate() and alerts work
            self.store_errors.labels(code)
        self.registry.register(StoreCollector(queue, rejected, feed_age))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def endpoint(self, _request: Request) -> Response:
        body = await anyio.to_thread.run_sync(self.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def route_of(path: str) -> str:
    """A bounded label for a path: the known routes, else `other`."""
    if path.startswith("/messages"):
        return "/messages/"
    return path if path in KNOWN_ROUTES else "other"


class HTTPMetrics:
    """ASGI middleware counting and timing every HTTP request by route and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = route_of(scope.get("path", ""))
            self.metrics.http_requests.labels(scope.get("method", "?"), route, str(status)).inc()
            self.metrics.http_latency.labels(route).observe(time.perf_counter() - start)


def _result_fields(result: Any) -> tuple[bool, str | None, dict[str, Any] | None]:
    """(is_error, error text, structured content) of a tools/call result, dict or model."""
    if isinstance(result, dict):
        content = result.get("content") or []
        text = content[0].get("text") if content and isinstance(content[0], dict) else None
        return bool(result.get("isError")), text, result.get("structuredContent")
    content = getattr(result, "content", None) or []
    text = getattr(content[0], "text", None) if content else None
    return bool(getattr(result, "is_error", False)), text, getattr(result, "structured_content", None)


def _task_id(args: dict[str, Any], structured: dict[str, Any] | None) -> str | None:
    if isinstance(args.get("task_id"), str):
        return str(args["task_id"])
    if isinstance(structured, dict):
        task = structured.get("task") if isinstance(structured.get("task"), dict) else structured
        if isinstance(task, dict) and isinstance(task.get("id"), str):
            return str(task["id"])
    return None


class Observer:
    """Server middleware (outermost of ours): one log record and the metrics for each MCP request."""

    def __init__(self, metrics: Metrics | None) -> None:
        self.metrics = metrics

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.request_id is None:  # notifications: nothing to time
            return await call_next(ctx)
        start = time.perf_counter()
        outcome = "ok"
        result: HandlerResult = None
        reset = CURRENT_IDENTITY.set(None)  # the Guard inside sets it; read back for the log
        try:
            result = await call_next(ctx)
            return result
        except Exception as exc:
            outcome = getattr(getattr(exc, "error", None), "message", "") or type(exc).__name__
            outcome = outcome.split(":", 1)[0] if ":" in outcome else "error"
            raise
        finally:
            elapsed = time.perf_counter() - start
            self._record(ctx, result, outcome, elapsed)
            CURRENT_IDENTITY.reset(reset)

    def _record(self, ctx: ServerRequestContext[Any, Any], result: HandlerResult, outcome: str, elapsed: float) -> None:
        params = ctx.params or {}
        tool = str(params.get("name")) if ctx.method == "tools/call" else None
        raw_args = params.get("arguments")
        args: dict[str, Any] = raw_args if isinstance(raw_args, dict) else {}
        task_id = None
        if tool is not None:
            is_error, text, structured = _result_fields(result)
            if is_error:
                match = TOOL_ERROR.match(text or "")
                outcome = match["code"] if match else "error"
            task_id = _task_id(args, structured)
            if self.metrics is not None:
                self.metrics.tool_calls.labels(tool, outcome).inc()
                self.metrics.tool_latency.labels(tool).observe(elapsed)
                if outcome in STORE_ERROR_CODES:
                    self.metrics.store_errors.labels(outcome).inc()
        identity = CURRENT_IDENTITY.get()
        request = ctx.request if isinstance(ctx.request, HTTPConnection) else None
        session_id = None
        if request is not None:
            session_id = request.headers.get("mcp-session-id") or request.query_params.get("session_id")
        log.info(
            "%s%s %s in %.1f ms",
            ctx.method,
            f" {tool}" if tool else "",
            outcome,
            elapsed * 1000,
            extra={
                "event": "tool_call" if tool else "request",
                "method": ctx.method,
                "session_id": session_id,
                "request_id": str(ctx.request_id),
                "tool": tool,
                "identity": identity.name if identity is not None else None,
                "task_id": task_id,
                "duration_ms": round(elapsed * 1000, 3),
                "outcome": outcome,
                "trace_id": current_trace_id(),
            },
        )

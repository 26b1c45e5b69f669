"""Logs, metrics and tracing from real servers: JSON log lines on stderr (and a rotating file), only
protocol on stdout in stdio mode, /metrics parsed with prometheus-client, and OpenTelemetry spans
through the SDK's middleware into an in-memory exporter."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.mcp_calls import call, call_error
from tests.servers import server_env
from tests.service_servers import make_token, mcp_client, serve

LOG_FIELDS = {"time", "level", "event", "session_id", "request_id", "tool", "identity", "task_id", "duration_ms"}


@pytest.mark.anyio
async def test_json_log_line_per_tool_call_with_identity_and_no_secret(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    token = make_token(db, "build-agent", "read,write,claim")
    with serve(db, "--log-format", "json", "--log-level", "INFO") as server:
        async with mcp_client(server.base, token) as client:
            created = await call(client, "create_task", title="log me")
            await call(client, "get_task", task_id=created["id"])
            await call_error(client, "get_task", task_id="nope")
        async with mcp_client(
            server.base, token, "sse"
        ) as client:  # SSE has sessions (the 2026 HTTP protocol has none)
            await call(client, "get_task", task_id=created["id"])
        time.sleep(0.3)
        lines = [line for line in server.log_lines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    calls = [r for r in records if r.get("event") == "tool_call"]
    by_tool = {(r["tool"], r["outcome"]): r for r in calls}
    got = by_tool[("get_task", "ok")]
    assert LOG_FIELDS - {"session_id"} <= set(got), set(got)
    over_sse = [r for r in calls if r["tool"] == "get_task" and r.get("session_id")]
    assert over_sse and set(over_sse[0]) >= LOG_FIELDS
    assert got["identity"] == "build-agent" and got["task_id"] == created["id"] and got["level"] == "INFO"
    assert isinstance(got["duration_ms"], float) and got["duration_ms"] > 0
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", got["time"])
    assert by_tool[("create_task", "ok")]["task_id"] == created["id"]
    assert ("get_task", "not_found") in by_tool
    assert token not in "\n".join(lines)


@pytest.mark.anyio
async def test_an_http_server_logs_each_request_by_default_with_the_session_where_there_is_one(
    tmp_path: Path,
) -> None:
    """No --log-level: a server on HTTP logs one record per request (INFO), and `session_id` is the
    SDK's session where the protocol has one (initialize-handshake HTTP, SSE); stdio stays quiet."""
    db = tmp_path / "tasks.db"
    with serve(db, "--log-format", "json") as server:
        sessions: dict[str, str] = {}
        for name, transport, mode in (("first", "http", "legacy"), ("second", "http", "legacy"),
                                      ("sse", "sse", "auto"), ("modern", "http", "auto")):  # fmt: skip
            async with mcp_client(server.base, None, transport, mode=mode) as client:
                created = await call(client, "create_task", title=name)
                await call(client, "get_task", task_id=created["id"])
                sessions[created["id"]] = name
        time.sleep(0.3)
        records = server.log_records()
    calls = [r for r in records if r.get("event") == "tool_call"]
    assert len(calls) == 8 and all(r["level"] == "INFO" for r in calls)
    assert not [r for r in records if str(r.get("logger", "")).startswith("mcp.")]  # no SDK chatter twice
    by_client: dict[str, set[Any]] = {}
    for record in calls:
        by_client.setdefault(sessions[record["task_id"]], set()).add(record.get("session_id"))
    assert by_client["modern"] == {None}  # the 2026-07-28 protocol is sessionless
    for name in ("first", "second", "sse"):
        [session] = by_client[name]  # one session for both of the client's calls
        assert isinstance(session, str) and len(session) >= 16, (name, session)
    assert len({next(iter(by_client[n])) for n in ("first", "second", "sse")}) == 3

    quiet = subprocess.run(
        [sys.executable, "-m", "mcp_taskqueue.cli", "--db", str(db), "serve"],
        input='{"jsonrpc": "2.0", "id": 1, "method": "ping"}\n',
        capture_output=True, text=True, env=server_env(), timeout=60,
    )  # fmt: skip
    assert '"id": 1' in quiet.stdout or '"id":1' in quiet.stdout
    assert "tool_call" not in quiet.stderr and '"request"' not in quiet.stderr  # stdio: WARNING by default


@pytest.mark.anyio
async def test_log_file_rotates(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    log_file = tmp_path / "logs" / "server.log"
    log_file.parent.mkdir()
    cfg = tmp_path / "mcp-taskqueue.toml"
    cfg.write_text("[logging]\nmax_bytes = 2048\nbackups = 2\n")
    with serve(db, "--log-file", str(log_file), "--log-level", "info", env={"TASKQUEUE_CONFIG": str(cfg)}) as server:
        async with mcp_client(server.base) as client:
            for i in range(40):
                await call(client, "create_task", title=f"t{i}")
    assert log_file.exists() and (tmp_path / "logs" / "server.log.1").exists()
    assert not (tmp_path / "logs" / "server.log.3").exists()
    for path in (log_file, tmp_path / "logs" / "server.log.1"):
        assert path.stat().st_size <= 4096
        for line in path.read_text().splitlines():
            json.loads(line)
    assert server.log_lines() == [] or all(not line.startswith("{") for line in server.log_lines())


def test_stdio_keeps_stdout_for_protocol_and_logs_json_on_stderr(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "create_task", "arguments": {"title": "x"}}},
    ]  # fmt: skip
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mcp_taskqueue.cli",
            "--db",
            str(db),
            "serve",
            "--log-format",
            "json",
            "--log-level",
            "INFO",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    for message in messages:
        proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()
    answers: list[dict[str, Any]] = []
    while len([a for a in answers if "id" in a]) < 2:
        line = proc.stdout.readline()
        assert line, "server closed stdout early"
        answers.append(json.loads(line))  # stdout: JSON-RPC and nothing else
    proc.stdin.close()  # end of input: the server exits
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.wait(timeout=30) == 0
    assert proc.stdout.read() == ""
    assert all(a.get("jsonrpc") == "2.0" for a in answers)
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(r.get("event") == "tool_call" and r.get("tool") == "create_task" for r in records)


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams: dict[str, Any], name: str, **labels: str) -> float:
    for family in fams.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"no sample {name}{labels}")


@pytest.mark.anyio
async def test_metrics_scrape_parses_and_counts(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    with serve(db) as server:
        async with mcp_client(server.base) as client:
            for title in ("a", "b", "c"):
                await call(client, "create_task", title=title, project="web")
            first = (await call(client, "claim_task", worker="w1"))["task"]
            await call(client, "complete_task", task_id=first["id"], worker="w1", lease_id=first["lease_id"])
            second = (await call(client, "claim_task", worker="w1"))["task"]
            await call(
                client, "fail_task", task_id=second["id"], worker="w1", lease_id=second["lease_id"], error="boom",
                retryable=False,
            )  # fmt: skip
            third = (await call(client, "claim_task", worker="w1", lease_seconds=1))["task"]
            time.sleep(1.5)
            again = (await call(client, "claim_task", worker="w2"))["task"]  # the sweep expires w1's lease
            assert again["id"] == third["id"]
            await call_error(client, "get_task", task_id="missing")
        async with httpx2.AsyncClient() as http:
            response = await http.get(server.base + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    fams = families(response.text)
    assert sample(fams, "taskqueue_tasks", project="web", status="completed") == 1
    assert sample(fams, "taskqueue_tasks", project="web", status="failed") == 1
    assert sample(fams, "taskqueue_tasks", project="web", status="running") == 1
    assert sample(fams, "taskqueue_claims_total") == 4
    assert sample(fams, "taskqueue_completions_total") == 1
    assert sample(fams, "taskqueue_failures_total") == 1
    assert sample(fams, "taskqueue_lease_expiries_total") == 1
    assert sample(fams, "taskqueue_tool_calls_total", tool="claim_task", outcome="ok") == 4
    assert sample(fams, "taskqueue_tool_calls_total", tool="get_task", outcome="not_found") == 1
    assert sample(fams, "taskqueue_tool_call_duration_seconds_count", tool="create_task") == 3
    assert sample(fams, "taskqueue_tool_call_duration_seconds_bucket", tool="create_task", le="+Inf") == 3
    assert sample(fams, "taskqueue_http_requests_total", method="POST", route="/mcp", status="200") >= 9
    assert sample(fams, "taskqueue_store_errors_total", code="store_busy") == 0
    assert sample(fams, "taskqueue_rate_limited_total", bucket="write") == 0
    assert 0 <= sample(fams, "taskqueue_change_feed_lag_seconds") < 30
    assert sample(fams, "taskqueue_expired_leases") == 0


def metric_names_used(text: str) -> set[str]:
    return set(re.findall(r"\btaskqueue_[a-z_]+\b", text))


def exported_names(fams: dict[str, Any]) -> set[str]:
    names = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
    for family in fams.values():
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
        names.update(s.name for s in family.samples)
    return names


@pytest.mark.anyio
async def test_dashboard_and_alert_rules_use_only_metrics_that_exist(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1] / "deploy"
    dashboard = json.loads((root / "grafana" / "taskqueue-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    rules = (root / "prometheus" / "alerts.yml").read_text()
    used = metric_names_used("\n".join(exprs)) | metric_names_used(rules)
    assert {"taskqueue_ready_oldest_age_seconds", "taskqueue_lease_expiries_total"} <= used
    db = tmp_path / "tasks.db"
    with serve(db, env={"TASKQUEUE_RATE_LIMITS__HTTP": "1000/s"}) as server:
        async with mcp_client(server.base) as client:
            await call(client, "create_task", title="x")
            await call_error(client, "get_task", task_id="missing")
        async with httpx2.AsyncClient() as http:
            fams = families((await http.get(server.base + "/metrics")).text)
    missing = used - exported_names(fams)
    assert not missing, f"dashboard/rules use metrics the server does not export: {sorted(missing)}"
    import yaml

    groups = yaml.safe_load(rules)["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    assert {"TaskQueueStuck", "TaskQueueFailureRate", "TaskQueueLeaseExpiries", "TaskQueueSlowToolCalls"} <= alerts


@pytest.mark.anyio
async def test_tracing_spans_through_the_sdk_middleware_and_trace_id_in_logs(tmp_path: Path) -> None:
    import logging

    from mcp import Client
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from mcp_taskqueue.logs import JsonFormatter
    from mcp_taskqueue.server.app import build_server
    from mcp_taskqueue.server.service import ServiceOptions

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        pytest.skip("another test installed a tracer provider first")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(JsonFormatter().format(record))

    handler = Keep(level=logging.INFO)
    logger = logging.getLogger("mcp_taskqueue.requests")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        async with Client(build_server(tmp_path / "tasks.db", service=ServiceOptions())) as client:
            await call(client, "create_task", title="traced")
    finally:
        logger.removeHandler(handler)
    spans = exporter.get_finished_spans()
    tool_span = next(s for s in spans if s.name == "tools/call create_task")
    assert tool_span.attributes is not None and tool_span.attributes["gen_ai.tool.name"] == "create_task"
    logged = [json.loads(r) for r in records if '"tool_call"' in r]
    assert logged and logged[0]["trace_id"] == f"{tool_span.context.trace_id:032x}"


def test_serve_with_tracing_on_exports_spans_from_the_sdk_middleware(tmp_path: Path) -> None:
    """`[tracing] enabled = true` in the settings installs a tracer provider in the server process."""
    import asyncio

    cfg = tmp_path / "mcp-taskqueue.toml"
    cfg.write_text('[tracing]\nenabled = true\nexporter = "console"\n[logging]\nformat = "text"\n')
    db = tmp_path / "tasks.db"

    async def one_call(base: str) -> None:
        async with mcp_client(base) as client:
            await call(client, "create_task", title="traced")

    with serve(db, "--config", str(cfg)) as server:
        asyncio.run(one_call(server.base))
    # the console exporter writes each finished span (batched; flushed at exit) to stderr
    text = server.log.read_text()
    assert '"name": "tools/call create_task"' in text


class OtlpReceiver:
    """A real OTLP/HTTP trace receiver on 127.0.0.1: POST /v1/traces with a protobuf
    ExportTraceServiceRequest (gzip or not), decoded with opentelemetry-proto, answered 200."""

    def __init__(self) -> None:
        import gzip
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.requests: list[Any] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                assert self.headers["Content-Type"] == "application/x-protobuf"
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.paths.append(self.path)
                receiver.requests.append(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received so far."""
        out = []
        for request in list(self.requests):
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    out.extend((resource, span) for span in scope_spans.spans)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    ("service_env", "service_name"), [({}, "mcp-taskqueue"), ({"OTEL_SERVICE_NAME": "queue-eu"}, "queue-eu")]
)
def test_otlp_exporter_sends_the_sdk_spans_to_a_real_receiver(
    tmp_path: Path, service_env: dict[str, str], service_name: str
) -> None:
    """`[tracing] exporter = "otlp"`: spans reach an OTLP/HTTP receiver (protobuf), named by the SDK's
    middleware, under service.name mcp-taskqueue, with the trace id the JSON log line carries."""
    import asyncio

    receiver = OtlpReceiver()
    cfg = tmp_path / "mcp-taskqueue.toml"
    cfg.write_text('[tracing]\nenabled = true\nexporter = "otlp"\n')
    db = tmp_path / "tasks.db"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100", **service_env}

    async def one_call(base: str) -> str:
        async with mcp_client(base) as client:
            return str((await call(client, "create_task", title="traced over otlp"))["id"])

    try:
        with serve(db, "--config", str(cfg), "--log-format", "json", "--log-level", "INFO", env=env) as server:
            task_id = asyncio.run(one_call(server.base))
            deadline = time.monotonic() + 30
            # batched every 100 ms while the server runs: no need to stop it first
            while not any(s.name == "tools/call create_task" for _, s in receiver.spans()):
                assert time.monotonic() < deadline, (
                    f"no span reached the receiver; log: {server.log.read_text()[-2000:]}"
                )
                time.sleep(0.1)
            records = server.log_records()
    finally:
        receiver.close()
    assert set(receiver.paths) == {"/v1/traces"}
    resource, span = next((r, s) for r, s in receiver.spans() if s.name == "tools/call create_task")
    assert resource["service.name"] == service_name  # OTEL_SERVICE_NAME wins over our default
    attributes = {a.key: a.value.string_value for a in span.attributes}
    assert attributes["gen_ai.tool.name"] == "create_task"
    assert span.end_time_unix_nano > span.start_time_unix_nano
    logged = next(r for r in records if r.get("event") == "tool_call" and r.get("tool") == "create_task")
    assert logged["trace_id"] == span.trace_id.hex() and logged["task_id"] == task_id

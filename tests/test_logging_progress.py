"""MCP logging and progress: the server's log records reach clients that ask (logging/setLevel
before 2026-07-28, the per-request opt-in from 2026-07-28 on), and long calls report progress."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import LoggingMessageNotificationParams

from mcp_taskqueue.server.app import build_server
from tests.servers import http_server, server_env

pytestmark = pytest.mark.anyio


class Heard:
    """What a client received: log entries and progress reports."""

    def __init__(self) -> None:
        self.logs: list[LoggingMessageNotificationParams] = []
        self.progress: list[tuple[float, float | None]] = []

    async def log(self, params: LoggingMessageNotificationParams) -> None:
        self.logs.append(params)

    async def on_progress(self, done: float, total: float | None, message: str | None) -> None:
        self.progress.append((done, total))

    def messages(self) -> list[str]:
        return [str(entry.data) for entry in self.logs]


async def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Notifications are handled by the client concurrently with the reply: wait for them to land."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.05)


def assert_progress(heard: Heard, total: int) -> None:
    """Reports over the wire: rising, out of `total`. (The client may drop one that arrives after
    the reply, so the final one is checked only in-process, where delivery is direct.)"""
    done = [d for d, _ in heard.progress]
    assert done == sorted(done) and 0 < done[-1] <= total, heard.progress
    assert {t for _, t in heard.progress} == {total}


def batch(n: int) -> list[dict[str, Any]]:
    return [{"title": f"item {i}", "ref": f"r{i}", **({"depends_on": [f"r{i - 1}"]} if i else {})} for i in range(n)]


async def test_logging_capability_and_set_level_before_2026(db_path: Path) -> None:
    heard = Heard()
    async with Client(build_server(db_path), mode="legacy", logging_callback=heard.log) as client:
        assert client.server_capabilities.logging is not None
        await client.call_tool("create_task", {"title": "quiet"})
        assert heard.logs == []  # nobody asked yet

        await client.set_logging_level("info")
        await client.call_tool("create_task", {"title": "heard"})
        refused = await client.call_tool("get_task", {"task_id": "nope"})
        assert refused.is_error
        assert any(m.startswith("create_task done in") for m in heard.messages()), heard.messages()
        assert any(m.startswith("get_task refused") and "not_found" in m for m in heard.messages())
        assert {entry.level for entry in heard.logs} == {"info"}
        assert {entry.logger for entry in heard.logs} == {"mcp_taskqueue.server"}

        await client.set_logging_level("error")
        before = len(heard.logs)
        await client.call_tool("create_task", {"title": "too low to hear"})
        assert len(heard.logs) == before


async def test_per_request_opt_in_from_2026(db_path: Path) -> None:
    heard, silent = Heard(), Heard()
    async with Client(build_server(db_path), log_level="info", logging_callback=heard.log) as client:
        assert client.protocol_version >= "2026-07-28"
        await client.call_tool("create_task", {"title": "opted in"})
    assert any(m.startswith("create_task done in") for m in heard.messages())
    async with Client(build_server(db_path), logging_callback=silent.log) as client:
        await client.call_tool("create_task", {"title": "not opted in"})
    assert silent.logs == []
    async with Client(build_server(db_path), log_level="error", logging_callback=silent.log) as client:
        await client.call_tool("create_task", {"title": "opted in above info"})
    assert silent.logs == []


async def test_set_level_over_stdio_leaves_stderr_at_its_level(tmp_path: Path) -> None:
    """A client asking for debug records gets them; the server's stderr stays at its --log-level."""
    heard = Heard()
    errlog = tmp_path / "stderr.txt"
    server = [sys.executable, "-m", "mcp_taskqueue.cli", "serve", "--db", str(tmp_path / "s.db"), "--log-level", "INFO"]
    params = StdioServerParameters(
        command="sh", args=["-c", 'exec "$@" 2>"$0"', str(errlog), *server], env=server_env()
    )
    async with Client(params, mode="legacy", logging_callback=heard.log) as client:
        await client.set_logging_level("debug")
        done = await client.call_tool("create_tasks", {"tasks": batch(300)}, progress_callback=heard.on_progress)
        assert not done.is_error
        await eventually(lambda: any(m.startswith("create_tasks done in") for m in heard.messages()))
        await eventually(lambda: bool(heard.progress))  # over a real progress token
        assert_progress(heard, 300)
    assert "create_tasks called with tasks" in heard.messages()  # a debug record, as asked
    stderr = errlog.read_text()
    assert "create_tasks done" in stderr  # --log-level INFO: the operator still sees info records
    assert "called with" not in stderr  # but not the debug ones a client asked for


async def test_progress_of_long_batches_and_workflows(db_path: Path) -> None:
    heard = Heard()
    async with Client(build_server(db_path)) as client:
        created = await client.call_tool("create_tasks", {"tasks": batch(450)}, progress_callback=heard.on_progress)
        assert not created.is_error
        assert heard.progress[-1] == (450, 450)
        assert [done for done, _ in heard.progress] == sorted(done for done, _ in heard.progress)
        assert all(total == 450 for _, total in heard.progress)

        heard.progress.clear()
        spec = {"name": "big", "tasks": batch(420)}
        workflow = await client.call_tool("create_workflow", {"spec": spec}, progress_callback=heard.on_progress)
        assert not workflow.is_error, workflow.content
        assert heard.progress[-1] == (420, 420)  # intermediate reports may arrive after the reply and be dropped


async def test_progress_and_logs_over_streamable_http(db_path: Path) -> None:
    heard = Heard()
    with http_server(db_path) as base:
        async with Client(base + "/mcp", mode="legacy", logging_callback=heard.log) as client:
            await client.set_logging_level("info")
            result = await client.call_tool("create_tasks", {"tasks": batch(250)}, progress_callback=heard.on_progress)
            assert not result.is_error
            await eventually(lambda: bool(heard.progress))
            assert_progress(heard, 250)
            await eventually(lambda: any(m.startswith("create_tasks done in") for m in heard.messages()))

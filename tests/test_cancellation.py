"""Work the client cancelled is not left behind (issue 9, item 2).

A call cancelled before it commits is rolled back, on both engines: cancelled by the client
(`notifications/cancelled`, as an MCP client sends on its own timeout), or abandoned by a dropped
HTTP connection. Each scenario holds the store's write lock from another connection, so the call
is still waiting when it is cancelled.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import anyio
import pytest
from mcp import Client

from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.app import build_server
from mcp_taskqueue.store import open_store
from tests.locks import write_lock_held
from tests.mcp_calls import call
from tests.raw_http import PROTOCOL, call_tool, open_session, tool_call_body
from tests.servers import http_server_process

pytestmark = pytest.mark.anyio


async def cancelled_while_locked(db: Path | str, client: Client, tool: str, args: dict[str, object]) -> None:
    """Another connection holds the write lock for 2 s; the call is cancelled after 0.5 s."""
    with write_lock_held(db):
        with anyio.move_on_after(0.5) as scope:
            await client.call_tool(tool, args)
        assert scope.cancelled_caught, "the call finished although the store was locked"
        await anyio.sleep(1.5)
    await anyio.sleep(1.0)  # the abandoned thread gets the lock now: it must roll back, not commit


async def test_a_cancelled_claim_is_rolled_back(db_path: Path | str) -> None:
    """The issue's example: the claim used to commit, burning an attempt and hiding the task for 300 s."""
    async with Client(build_server(db_path)) as client:
        task = await call(client, "create_task", title="only task")
        await cancelled_while_locked(db_path, client, "claim_task", {"worker": "w7", "lease_seconds": 300})
        after = await call(client, "get_task", task_id=task["id"])
        assert after["status"] == "ready" and after["attempts"] == 0
        again = await call(client, "claim_task", worker="w7")
        deadline = time.monotonic() + 30
        while again["task"] is None and time.monotonic() < deadline:  # PostgreSQL skips a row still locked
            await anyio.sleep(0.2)
            again = await call(client, "claim_task", worker="w7")
        assert again["task"]["id"] == task["id"] and again["task"]["attempts"] == 1


async def test_a_cancelled_batch_is_rolled_back(db_path: Path | str) -> None:
    async with Client(build_server(db_path)) as client:
        await call(client, "create_task", title="before")
        batch = {"tasks": [{"title": f"t{i}"} for i in range(5)]}
        await cancelled_while_locked(db_path, client, "create_tasks", batch)
        assert (await call(client, "queue_stats"))["total"] == 1


async def test_other_cancelled_writes_leave_nothing_behind(db_path: Path | str) -> None:
    """The same rule for any write: a cancelled complete_task leaves the task running under its lease."""
    async with Client(build_server(db_path)) as client:
        await call(client, "create_task", title="t")
        claim = await call(client, "claim_task", worker="w", lease_seconds=300)
        lease = {"task_id": claim["task"]["id"], "worker": "w", "lease_id": claim["lease_id"]}
        await cancelled_while_locked(db_path, client, "complete_task", {**lease, "result": {"done": True}})
        assert (await call(client, "get_task", task_id=lease["task_id"]))["status"] == "running"
        done = await call(client, "complete_task", **lease, result={"done": True})
        assert done["status"] == "completed"


async def test_a_retried_claim_with_its_key_gets_the_same_lease(db_path: Path | str) -> None:
    """A client whose claim committed but whose reply was lost retries safely with the same key."""
    async with Client(build_server(db_path)) as client:
        await call(client, "create_task", title="t")
        first = await call(client, "claim_task", worker="w", idempotency_key="attempt-1")
        retried = await call(client, "claim_task", worker="w", idempotency_key="attempt-1")
        assert (retried["task"]["id"], retried["lease_id"]) == (first["task"]["id"], first["lease_id"])
        assert (await call(client, "claim_task", worker="w"))["task"] is None  # nothing more was taken


def drop_after(base: str, session: str, body: bytes, seconds: float) -> None:
    """POST a call on a raw socket, then close the connection after `seconds` without reading the reply."""
    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": PROTOCOL,
        "Mcp-Session-Id": session,
    }
    conn.request("POST", "/mcp", body=body, headers=headers)
    time.sleep(seconds)
    assert conn.sock is not None
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()


def task_state(db: Path | str, task_id: str) -> tuple[str, int]:
    store = open_store(db)
    try:
        task = TaskQueue(store).get(task_id)
        return task.status.value, task.attempts
    finally:
        store.close()


def test_a_dropped_http_connection_rolls_its_claim_back(db_path: Path | str, tmp_path: Path) -> None:
    """A real server process; the client drops its connection while its claim waits for the write lock."""
    with http_server_process(db_path, "http", "--log-format", "text") as (base, _proc):
        session = open_session(base)
        task = call_tool(base, session, "create_task", {"title": "only task"})["structuredContent"]
        args: dict[str, Any] = {"worker": "w7", "lease_seconds": 300}
        with write_lock_held(db_path):
            drop_after(base, session, tool_call_body("claim_task", json.dumps(args), request_id=7), 0.5)
            time.sleep(1.5)
        time.sleep(1.5)  # the server's thread gets the lock now: it must roll back, not commit
        assert task_state(db_path, task["id"]) == ("ready", 0)
        deadline = time.monotonic() + 30
        again = call_tool(base, session, "claim_task", {"worker": "w7"})["structuredContent"]
        while again["task"] is None and time.monotonic() < deadline:  # PostgreSQL skips a row still locked
            time.sleep(0.2)
            again = call_tool(base, session, "claim_task", {"worker": "w7"})["structuredContent"]
        assert again["task"]["id"] == task["id"] and again["task"]["attempts"] == 1


def sse_post(base: str, endpoint: str, message: dict[str, Any]) -> int:
    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    conn.request("POST", endpoint, body=json.dumps(message), headers={"Content-Type": "application/json"})
    status = conn.getresponse().status
    conn.close()
    return status


def test_a_dropped_sse_stream_rolls_its_claim_back(db_path: Path | str) -> None:
    """The legacy SSE transport: the session lives as long as its GET /sse stream; dropping it while
    a claim waits for the write lock leaves the task ready."""
    with http_server_process(db_path, "sse", "--log-format", "text") as (base, _proc):
        store = open_store(db_path)
        task = TaskQueue(store).create({"title": "only task"})
        store.close()
        url = urlparse(base)
        stream = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
        stream.request("GET", "/sse", headers={"Accept": "text/event-stream"})
        reply = stream.getresponse()
        endpoint = ""
        while not endpoint:
            line = reply.fp.readline().decode().strip()
            if line.startswith("data:"):
                endpoint = line[5:].strip()
        init = {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
        assert sse_post(base, endpoint, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}) == 202
        assert sse_post(base, endpoint, {"jsonrpc": "2.0", "method": "notifications/initialized"}) == 202
        claim = {"name": "claim_task", "arguments": {"worker": "w7", "lease_seconds": 300}}
        with write_lock_held(db_path):
            assert sse_post(base, endpoint, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": claim}) == 202
            time.sleep(0.5)
            assert stream.sock is not None
            stream.sock.shutdown(socket.SHUT_RDWR)
            stream.close()
            time.sleep(1.5)
        time.sleep(1.5)
        assert task_state(db_path, task.id) == ("ready", 0)

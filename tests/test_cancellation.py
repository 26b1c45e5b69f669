"""Work the client cancelled is not left behind (issue 9, item 2)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
from mcp import Client

from mcp_taskqueue.client import TaskQueueClient
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.app import build_server
from mcp_taskqueue.store import Store
from tests.mcp_calls import call

pytestmark = pytest.mark.anyio


async def cancelled_while_locked(db_path: Path, client: Client, tool: str, args: dict[str, object]) -> None:
    """Another connection holds the write lock for 2 s; the call is cancelled after 0.5 s."""
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with anyio.move_on_after(0.5) as scope:
            await client.call_tool(tool, args)
        assert scope.cancelled_caught, "the call finished although the file was locked"
        await anyio.sleep(1.5)
    finally:
        other.execute("ROLLBACK")
        other.close()
    await anyio.sleep(1.0)  # the abandoned thread gets the lock now: it must roll back, not commit


async def test_a_cancelled_claim_is_rolled_back(db_path: Path) -> None:
    """The issue's example: the claim used to commit, burning an attempt and hiding the task for 300 s."""
    async with Client(build_server(db_path)) as client:
        task = await call(client, "create_task", title="only task")
        await cancelled_while_locked(db_path, client, "claim_task", {"worker": "w7", "lease_seconds": 300})
        after = await call(client, "get_task", task_id=task["id"])
        assert after["status"] == "ready" and after["attempts"] == 0
        again = await call(client, "claim_task", worker="w7")
        assert again["task"]["id"] == task["id"] and again["task"]["attempts"] == 1


async def test_a_cancelled_batch_is_rolled_back(db_path: Path) -> None:
    async with Client(build_server(db_path)) as client:
        await call(client, "create_task", title="before")
        batch = {"tasks": [{"title": f"t{i}"} for i in range(5)]}
        await cancelled_while_locked(db_path, client, "create_tasks", batch)
        assert (await call(client, "queue_stats"))["total"] == 1


async def test_a_retried_claim_with_its_key_gets_the_same_lease(db_path: Path) -> None:
    """A client that timed out retries safely: the key returns what the first claim took."""
    queue = TaskQueue(Store(db_path))
    queue.create({"title": "t"})
    queue.store.close()
    async with TaskQueueClient(db_path) as tq:
        first = await tq.claim_task("w", idempotency_key="attempt-1")
        retried = await tq.claim_task("w", idempotency_key="attempt-1")
        assert first.task is not None and retried.task is not None
        assert (retried.task.id, retried.lease_id) == (first.task.id, first.lease_id)
        assert (await tq.claim_task("w")).task is None  # nothing more was taken

"""What is ready looks ready, and the best task is claimed first (issue 9, item 3)."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from mcp import Client

from mcp_taskqueue.queue import TaskQueue, iso
from mcp_taskqueue.server.app import build_server
from tests.conftest import Clock
from tests.mcp_calls import call
from tests.test_subscriptions import next_update, settle

NINE = 1_900_000_000.0 - (1_900_000_000.0 % 86400) + 9 * 3600  # 09:00 UTC on some day


@pytest.mark.anyio
async def test_due_work_shows_ready_in_lists_and_stats(db_path: Path) -> None:
    """Example A: a deferred task and a failed one with retries left, both past due, read as ready."""
    async with Client(build_server(db_path)) as client:
        later = await call(client, "create_task", title="later", run_at=iso(time.time() + 2))
        failing = await call(client, "create_task", title="flaky", max_attempts=3)
        claim = await call(client, "claim_task", worker="w")
        lease = {"task_id": failing["id"], "worker": "w", "lease_id": claim["lease_id"]}
        retry = await call(client, "fail_task", **lease, error="transient")
        assert retry["status"] == "pending"
        assert (await call(client, "queue_stats"))["by_status"]["ready"] == 0
        await anyio.sleep(3.5)  # past run_at and past the first backoff (at most 2 s)
        listed = await call(client, "list_tasks", status="ready")
        assert {t["id"] for t in listed["tasks"]} == {later["id"], failing["id"]}
        stats = await call(client, "queue_stats")
        assert stats["by_status"]["ready"] == 2 and stats["by_status"]["pending"] == 0
        got = await call(client, "get_task", task_id=later["id"])
        assert got["status"] == "ready"


def test_best_due_task_is_claimed_first_behind_a_backlog(timed_queue: TaskQueue, clock: Clock) -> None:
    """Example B: 600 low tasks due at 09:00, one critical due at 09:05; at 09:10 claim takes the critical."""
    clock.now = NINE - 3600
    for start in (0, 300):
        timed_queue.create_many(
            [{"title": f"low {i}", "priority": "low", "run_at": iso(NINE)} for i in range(start, start + 300)]
        )
    critical = timed_queue.create({"title": "page on-call", "priority": "critical", "run_at": iso(NINE + 300)})
    clock.now = NINE + 600
    first = timed_queue.claim("w")
    assert first is not None and first.id == critical.id


def test_best_expired_lease_comes_back_first(timed_queue: TaskQueue, clock: Clock) -> None:
    """The same kind for leases: 150 expired low leases ahead of one expired high lease."""
    timed_queue.create_many([{"title": f"low {i}", "priority": "low", "max_attempts": 5} for i in range(150)])
    high = timed_queue.create({"title": "high", "priority": "high", "max_attempts": 5})
    while timed_queue.claim("w", lease_seconds=60) is not None:
        clock.advance(0.001)
    clock.advance(120)
    assert timed_queue.claim("again").id == high.id  # type: ignore[union-attr]


def test_promotion_is_bounded_per_transaction_and_drains(timed_queue: TaskQueue, clock: Clock) -> None:
    clock.now = NINE - 60
    for start in range(0, 3000, 500):
        timed_queue.create_many([{"title": f"t{i}", "run_at": iso(NINE)} for i in range(start, start + 500)])
    clock.now = NINE + 1
    assert timed_queue.promote_due() is True
    assert 0 < timed_queue.store.read(lambda tx: tx.count_by_status()).get("ready", 0) < 3000
    while timed_queue.promote_due():
        pass
    assert timed_queue.stats().by_status["ready"] == 3000


@pytest.mark.anyio
async def test_a_subscriber_hears_when_time_alone_makes_a_task_ready(db_path: Path) -> None:
    async with Client(build_server(db_path)) as client:
        task = await call(client, "create_task", title="soon", run_at=iso(time.time() + 1.5))
        uri = f"taskqueue://tasks/{task['id']}"
        async with client.listen(resource_subscriptions=[uri]) as sub:
            await settle(sub)
            assert uri in await next_update(sub, timeout=30)  # nobody called anything: time did it
        assert (await call(client, "get_task", task_id=task["id"]))["status"] == "ready"

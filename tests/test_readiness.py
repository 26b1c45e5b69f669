"""What is ready looks ready, and the best task is claimed first (issue 9, item 3)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client

from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.app import build_server
from mcp_taskqueue.store.rows import iso
from tests.conftest import Clock
from tests.locks import write_lock_held
from tests.mcp_calls import call
from tests.test_cli import ok
from tests.test_subscriptions import next_update, settle

NINE = 1_900_000_000.0 - (1_900_000_000.0 % 86400) + 9 * 3600  # 09:00 UTC on some day


def when(ts: float) -> str:
    stamp = iso(ts)
    assert stamp is not None
    return stamp


@pytest.mark.anyio
async def test_due_work_shows_ready_in_lists_and_stats(db_path: Path) -> None:
    """Example A: a deferred task and a failed one with retries left, both past due, read as ready
    in list_tasks, queue_stats, get_task and the resources, before anybody claims."""
    async with Client(build_server(db_path)) as client:
        later = await call(client, "create_task", title="later", run_at=when(time.time() + 2))
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
        assert (await call(client, "get_task", task_id=later["id"]))["status"] == "ready"
        resource = await client.read_resource(f"taskqueue://tasks/{later['id']}")
        assert json.loads(resource.contents[0].text)["status"] == "ready"  # type: ignore[union-attr]
        stats_resource = await client.read_resource("taskqueue://stats")
        assert json.loads(stats_resource.contents[0].text)["by_status"]["ready"] == 2  # type: ignore[union-attr]


def test_reads_apply_what_time_did_without_a_server(timed_queue: TaskQueue, clock: Clock) -> None:
    """No server, no background promoter: the queue's own reads show due tasks ready."""
    deferred = timed_queue.create({"title": "deferred", "run_at": when(clock.now + 30)})
    held = timed_queue.create({"title": "held"})
    assert timed_queue.claim("w", lease_seconds=10) is not None
    assert timed_queue.get(deferred.id).status == "pending"
    clock.advance(31)
    assert timed_queue.get(deferred.id).status == "ready"
    page = timed_queue.list(status="ready")
    assert {t.id for t in page.tasks} == {deferred.id, held.id}  # the expired lease reads ready too
    assert timed_queue.stats().by_status == {**timed_queue.stats().by_status, "ready": 2, "running": 0}


def test_the_cli_lists_due_work_as_ready(db_path: Path | str) -> None:
    due = time.time() + 2
    created = ok(db_path, "task", "add", "soon", "--run-at", when(due))
    assert created["status"] == "pending"
    time.sleep(max(0.0, due - time.time()) + 0.3)
    listed = ok(db_path, "task", "list", "--status", "ready")
    assert [t["id"] for t in listed["tasks"]] == [created["id"]]
    assert ok(db_path, "stats")["by_status"]["ready"] == 1


def test_best_due_task_is_claimed_first_behind_a_backlog(timed_queue: TaskQueue, clock: Clock) -> None:
    """Example B: 600 low tasks due at 09:00, one critical due at 09:05; at 09:10 claim takes the critical."""
    clock.now = NINE - 3600
    for start in (0, 300):
        timed_queue.create_many(
            [{"title": f"low {i}", "priority": "low", "run_at": when(NINE)} for i in range(start, start + 300)]
        )
    critical = timed_queue.create({"title": "page on-call", "priority": "critical", "run_at": when(NINE + 300)})
    clock.now = NINE + 600
    first = timed_queue.claim("w")
    assert first is not None and first.id == critical.id


def test_the_oldest_of_the_best_priority_is_claimed_whatever_the_backlog(timed_queue: TaskQueue, clock: Clock) -> None:
    """Same kind, other shape: 700 due `high` tasks behind 600 due `low` ones; the claim takes
    the oldest `high`, and the next claims keep to claim order (priority, then age)."""
    clock.now = NINE - 3600
    for start in (0, 300):
        timed_queue.create_many(
            [{"title": f"low {i}", "priority": "low", "run_at": when(NINE)} for i in range(start, start + 300)]
        )
    highs = [
        task
        for start in (0, 350)
        for task in timed_queue.create_many(
            [{"title": f"high {i}", "priority": "high", "run_at": when(NINE + 60)} for i in range(start, start + 350)]
        )
    ]
    clock.now = NINE + 120
    taken = [timed_queue.claim("w") for _ in range(3)]
    assert [t.id for t in taken if t is not None] == [h.id for h in highs[:3]]


def test_best_expired_lease_comes_back_first(timed_queue: TaskQueue, clock: Clock) -> None:
    """The same kind for leases: 150 expired low leases ahead of one expired high lease."""
    timed_queue.create_many([{"title": f"low {i}", "priority": "low", "max_attempts": 5} for i in range(150)])
    high = timed_queue.create({"title": "high", "priority": "high", "max_attempts": 5})
    while timed_queue.claim("w", lease_seconds=60) is not None:
        clock.advance(0.001)
    clock.advance(120)
    again = timed_queue.claim("again")
    assert again is not None and again.id == high.id


def test_promotion_is_bounded_per_transaction_and_drains(timed_queue: TaskQueue, clock: Clock) -> None:
    clock.now = NINE - 60
    for start in range(0, 3000, 500):
        timed_queue.create_many([{"title": f"t{i}", "run_at": when(NINE)} for i in range(start, start + 500)])
    clock.now = NINE + 1
    assert timed_queue.promote_due() is True
    assert 0 < timed_queue.store.read(lambda tx: tx.count_by_status()).get("ready", 0) < 3000
    while timed_queue.promote_due():
        pass
    assert timed_queue.stats().by_status["ready"] == 3000
    assert timed_queue.promote_due() is False  # nothing due: a read-only probe, no write


@pytest.mark.anyio
async def test_a_subscriber_hears_when_time_alone_makes_a_task_ready(db_path: Path) -> None:
    async with Client(build_server(db_path)) as client:
        task = await call(client, "create_task", title="soon", run_at=when(time.time() + 1.5))
        uri = f"taskqueue://tasks/{task['id']}"
        async with client.listen(resource_subscriptions=[uri]) as sub:
            await settle(sub)
            assert uri in await next_update(sub, timeout=30)  # nobody called anything: time did it
        assert (await call(client, "get_task", task_id=task["id"]))["status"] == "ready"


@pytest.mark.sqlite_only(
    "the file-wide write lock is SQLite's; PostgreSQL's sweep skips rows others hold (SKIP LOCKED)"
)
def test_a_read_never_waits_for_the_write_lock_to_promote(db_path: Path, queue: TaskQueue) -> None:
    """Something is due but another process holds the write lock: reads answer at once from their
    snapshot, and show the task ready once the lock is free."""
    task = queue.create({"title": "soon", "run_at": when(time.time() + 0.5)})
    time.sleep(0.7)
    with write_lock_held(db_path):
        started = time.monotonic()
        assert queue.get(task.id).status == "pending"
        assert queue.stats().by_status["pending"] == 1
        assert time.monotonic() - started < 1.0
    assert queue.get(task.id).status == "ready"

"""Fencing: every claim hands out a `lease_id`, and only the current attempt's token moves the task.

Issue 9, item 1: a worker name alone does not name a lease (an agent restarted under the same name,
two sessions with one name). Tokens of older attempts get `lease_lost` and change nothing.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import anyio
import pytest
from mcp import Client

from mcp_taskqueue.client import TaskQueueClient
from mcp_taskqueue.errors import LeaseLost
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.app import build_server
from mcp_taskqueue.store import Store
from tests.conftest import Clock
from tests.mcp_calls import call, call_error


@pytest.mark.anyio
async def test_an_earlier_attempt_under_the_same_name_is_fenced_off(db_path: Path) -> None:
    """The issue's example, over MCP with real time: attempt 1's heartbeat and result are refused."""
    async with Client(build_server(db_path)) as client:
        task = await call(client, "create_task", title="t")
        first = await call(client, "claim_task", worker="agent", lease_seconds=1)
        await anyio.sleep(1.3)
        second = await call(client, "claim_task", worker="agent")
        assert second["task"]["id"] == task["id"] and second["task"]["attempts"] == 2
        assert first["lease_id"] != second["lease_id"]
        old = {"task_id": task["id"], "worker": "agent", "lease_id": first["lease_id"]}
        before = await call(client, "get_task", task_id=task["id"])
        assert "lease_lost" in await call_error(client, "heartbeat", **old, progress=0.9)
        assert "lease_lost" in await call_error(client, "complete_task", **old, result={"from": 1})
        assert await call(client, "get_task", task_id=task["id"]) == before  # nothing changed
        new = {"task_id": task["id"], "worker": "agent", "lease_id": second["lease_id"]}
        done = await call(client, "complete_task", **new, result={"from": 2})
        assert done["status"] == "completed"
        assert (await call(client, "get_task", task_id=task["id"]))["result"] == {"from": 2}


def test_every_lease_call_checks_the_token(timed_queue: TaskQueue, clock: Clock) -> None:
    task = timed_queue.create({"title": "t", "max_attempts": 5})
    old = timed_queue.claim("w", lease_seconds=10)
    assert old is not None and old.lease_id
    clock.advance(11)
    new = timed_queue.claim("w", lease_seconds=10)
    assert new is not None and new.lease_id not in (None, old.lease_id)
    before = timed_queue.get(task.id)
    for call_with_old_token in (
        lambda: timed_queue.heartbeat(task.id, "w", lease_id=old.lease_id),
        lambda: timed_queue.complete(task.id, "w", {"stale": True}, lease_id=old.lease_id),
        lambda: timed_queue.fail(task.id, "w", "stale", lease_id=old.lease_id),
        lambda: timed_queue.release(task.id, "w", lease_id=old.lease_id),
    ):
        with pytest.raises(LeaseLost, match="not leased to you"):
            call_with_old_token()
    assert timed_queue.get(task.id) == before
    assert timed_queue.heartbeat(task.id, "w", lease_id=new.lease_id, progress=0.5).progress == 0.5


def test_lease_id_is_shown_only_to_the_claim(queue: TaskQueue) -> None:
    task = queue.create({"title": "t"})
    claimed = queue.claim("w")
    assert claimed is not None and claimed.lease_id
    assert queue.get(task.id).lease_id is None  # a reader cannot pick up someone else's token


def test_a_retried_complete_returns_the_completed_task(queue: TaskQueue) -> None:
    task = queue.create({"title": "t"})
    claimed = queue.claim("w")
    assert claimed is not None
    done = queue.complete(task.id, "w", {"n": 1}, lease_id=claimed.lease_id)
    again = queue.complete(task.id, "w", {"n": 1}, lease_id=claimed.lease_id)  # the first reply was lost
    assert again == done and again.result == {"n": 1}
    assert [e.action for e in queue.history(task.id).events].count("complete") == 1
    with pytest.raises(LeaseLost):
        queue.complete(task.id, "w", {"n": 1}, lease_id="forged")
    with pytest.raises(LeaseLost):  # the token of a completed lease does not fail the task
        queue.fail(task.id, "w", "late", lease_id=claimed.lease_id)


def test_a_retried_fail_or_release_changes_nothing_more(queue: TaskQueue) -> None:
    task = queue.create({"title": "t", "max_attempts": 5})
    claimed = queue.claim("w")
    assert claimed is not None
    failed = queue.fail(task.id, "w", "boom", lease_id=claimed.lease_id)
    assert queue.fail(task.id, "w", "boom", lease_id=claimed.lease_id) == failed
    queue.update(task.id, {"run_at": None})
    claimed = queue.claim("w")
    assert claimed is not None
    released = queue.release(task.id, "w", lease_id=claimed.lease_id)
    assert queue.release(task.id, "w", lease_id=claimed.lease_id) == released


def test_concurrent_writers_with_two_tokens_only_the_current_one_wins(db_path: Path) -> None:
    """Two processes' worth of connections racing: the conditional UPDATE lets exactly one through."""
    setup = TaskQueue(Store(db_path))
    task = setup.create({"title": "raced", "max_attempts": 5})
    old = setup.claim("w", lease_seconds=1)
    assert old is not None
    setup.store.write(lambda tx: tx.conn.execute("UPDATE tasks SET lease_expires_at = 0 WHERE id = ?", (task.id,)))
    new = setup.claim("w")
    assert new is not None
    outcomes: dict[str, str] = {}

    def finish(name: str, lease_id: str | None) -> None:
        queue = TaskQueue(Store(db_path))
        try:
            queue.complete(task.id, "w", {"by": name}, lease_id=lease_id)
            outcomes[name] = "ok"
        except LeaseLost:
            outcomes[name] = "lost"
        finally:
            queue.store.close()

    threads = [
        threading.Thread(target=finish, args=(n, lid)) for n, lid in (("old", old.lease_id), ("new", new.lease_id))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes == {"old": "lost", "new": "ok"}
    row = sqlite3.connect(db_path).execute("SELECT result FROM tasks WHERE id = ?", (task.id,)).fetchone()
    assert row[0] == '{"by":"new"}'


def test_max_tasks_leases_several_each_with_its_own_token(queue: TaskQueue) -> None:
    ids = [queue.create({"title": f"t{i}", "priority": p}).id for i, p in enumerate(["low", "high", "medium"])]
    claimed = queue.claim_many("w", max_tasks=5)
    assert [t.id for t in claimed] == [ids[1], ids[2], ids[0]]  # priority order
    assert len({t.lease_id for t in claimed}) == 3


def test_a_claim_retried_with_its_idempotency_key_returns_the_same_leases(queue: TaskQueue) -> None:
    for i in range(4):
        queue.create({"title": f"t{i}"})
    first = queue.claim_many("w", max_tasks=2, idempotency_key="k1")
    again = queue.claim_many("w", max_tasks=2, idempotency_key="k1")
    assert [(t.id, t.lease_id) for t in again] == [(t.id, t.lease_id) for t in first]
    assert queue.stats().by_status["running"] == 2
    other = queue.claim_many("w", max_tasks=2, idempotency_key="k2")  # a new key is a new claim
    assert len(other) == 2 and not {t.id for t in other} & {t.id for t in first}
    assert queue.claim_many("someone-else", idempotency_key="k1") == []  # keys belong to their worker


@pytest.mark.anyio
async def test_the_python_client_passes_the_token_for_you(db_path: Path) -> None:
    async with TaskQueueClient(db_path) as tq:
        created = await tq.create_task("t", max_attempts=3)
        claim = await tq.claim_task("w")
        assert claim.task is not None and claim.lease_id == claim.task.lease_id
        assert (await tq.heartbeat(created.id, "w", progress=0.3)).progress == 0.3
        done = await tq.complete_task(created.id, "w", {"ok": 1})
        assert done.status == "completed"
        # Explicitly given, the same token again: the retry answers with the completed task.
        assert (await tq.complete_task(created.id, "w", {"ok": 1}, lease_id=claim.lease_id)).status == "completed"
        with pytest.raises(LeaseLost):
            await tq.heartbeat(created.id, "w", lease_id="not-a-lease")

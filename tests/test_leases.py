"""Leases: a claim is a lease; heartbeats extend it; expiry is applied by the claim path itself.

A controllable clock stands in for time, so expiry is tested exactly and without sleeping.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from mcp_taskqueue.errors import LeaseLost, ValidationFailed
from mcp_taskqueue.models import DEFAULT_LEASE_SECONDS, MAX_LEASE_SECONDS
from mcp_taskqueue.queue import TaskQueue, parse_time
from mcp_taskqueue.server.app import build_server
from tests.conftest import Clock


def lease_end(task_lease: str | None) -> float:
    assert task_lease is not None
    return parse_time(task_lease)


def test_claim_leases_for_default_or_requested_or_task_timeout(timed_queue: TaskQueue, clock: Clock) -> None:
    timed_queue.create({"title": "default"})
    timed_queue.create({"title": "own timeout", "timeout_seconds": 42})
    first = timed_queue.claim("w")
    assert first is not None and lease_end(first.lease_expires_at) == pytest.approx(clock.now + DEFAULT_LEASE_SECONDS)
    second = timed_queue.claim("w")
    assert second is not None and lease_end(second.lease_expires_at) == pytest.approx(clock.now + 42)
    timed_queue.create({"title": "asked"})
    third = timed_queue.claim("w", lease_seconds=7)
    assert third is not None and lease_end(third.lease_expires_at) == pytest.approx(clock.now + 7)


@pytest.mark.parametrize("bad", [0, -1, MAX_LEASE_SECONDS + 1])
def test_lease_length_is_bounded(queue: TaskQueue, bad: int) -> None:
    task = queue.create({"title": "t"})
    with pytest.raises(ValidationFailed, match="lease_seconds"):
        queue.claim("w", lease_seconds=bad)
    assert queue.get(task.id).status == "ready"
    queue.claim("w")
    with pytest.raises(ValidationFailed, match="lease_seconds"):
        queue.heartbeat(task.id, "w", lease_seconds=bad)


def test_heartbeat_keeps_a_long_task_alive_past_its_first_lease(timed_queue: TaskQueue, clock: Clock) -> None:
    task = timed_queue.create({"title": "long"})
    timed_queue.claim("slow", lease_seconds=10)
    for step in range(1, 6):
        clock.advance(8)  # always inside the current lease
        timed_queue.heartbeat(task.id, "slow", progress=step / 10)
        assert timed_queue.claim("thief") is None
    held = timed_queue.get(task.id)
    assert held.status == "running" and held.worker == "slow" and held.attempts == 1 and held.progress == 0.5
    assert lease_end(held.lease_expires_at) == pytest.approx(clock.now + 10)
    progress = [e for e in timed_queue.history(task.id).events if e.action == "progress"]
    assert len(progress) == 5


def test_lease_boundary_is_exclusive(timed_queue: TaskQueue, clock: Clock) -> None:
    timed_queue.create({"title": "t"})
    timed_queue.claim("a", lease_seconds=10)
    clock.advance(10)  # exactly at the end: still held
    assert timed_queue.claim("b") is None
    clock.advance(0.001)
    taken = timed_queue.claim("b")
    assert taken is not None and taken.worker == "b" and taken.attempts == 2


def test_expiry_is_applied_by_reads_and_claims_without_a_background_thread(
    timed_queue: TaskQueue, clock: Clock
) -> None:
    task = timed_queue.create({"title": "t"})
    timed_queue.claim("crashed", lease_seconds=5)
    clock.advance(6)
    # The lease ran out: the task is claimable, so every read shows it ready (no thread needed).
    assert timed_queue.get(task.id).status == "ready"
    assert timed_queue.stats().expired_leases == 0
    taken = timed_queue.claim("rescuer")
    assert taken is not None and taken.id == task.id and taken.worker == "rescuer"
    actions = [(e.action, e.actor) for e in timed_queue.history(task.id).events]
    assert actions == [("created", None), ("claimed", "crashed"), ("lease_expired", "system"), ("claimed", "rescuer")]
    assert timed_queue.stats().expired_leases == 0


@pytest.mark.parametrize("late_call", ["complete", "fail", "heartbeat", "release"])
def test_late_call_after_reclaim_is_refused_and_changes_nothing(
    timed_queue: TaskQueue, clock: Clock, late_call: str
) -> None:
    task = timed_queue.create({"title": "t"})
    timed_queue.claim("old", lease_seconds=5)
    clock.advance(6)
    timed_queue.claim("new", lease_seconds=60)
    before = timed_queue.get(task.id)
    calls = {
        "complete": lambda: timed_queue.complete(task.id, "old", {"late": True}),
        "fail": lambda: timed_queue.fail(task.id, "old", "late failure"),
        "heartbeat": lambda: timed_queue.heartbeat(task.id, "old", progress=0.9),
        "release": lambda: timed_queue.release(task.id, "old"),
    }
    with pytest.raises(LeaseLost, match="held by 'new'.*expired"):
        calls[late_call]()
    assert timed_queue.get(task.id) == before
    done = timed_queue.complete(task.id, "new", {"ok": 1})
    assert done.status == "completed" and done.result == {"ok": 1}


def test_late_complete_after_task_finished_elsewhere_is_refused(timed_queue: TaskQueue, clock: Clock) -> None:
    task = timed_queue.create({"title": "t"})
    timed_queue.claim("old", lease_seconds=5)
    clock.advance(6)
    timed_queue.claim("new")
    timed_queue.complete(task.id, "new", "first")
    with pytest.raises(LeaseLost, match="completed"):
        timed_queue.complete(task.id, "old", "second")
    assert timed_queue.get(task.id).result == "first"


def test_expired_but_unclaimed_task_may_still_be_finished_by_its_worker(timed_queue: TaskQueue, clock: Clock) -> None:
    """Nobody else holds it, so the work is not duplicated: the late result is accepted."""
    task = timed_queue.create({"title": "t"})
    timed_queue.claim("slow", lease_seconds=5)
    clock.advance(60)
    done = timed_queue.complete(task.id, "slow", "late but sole")
    assert done.status == "completed"
    assert timed_queue.claim("other") is None


def test_exhausted_attempts_fail_the_task_and_block_dependents(timed_queue: TaskQueue, clock: Clock) -> None:
    parent = timed_queue.create({"title": "flaky", "max_attempts": 2})
    child = timed_queue.create({"title": "after", "depends_on": [parent.id]})
    for worker in ("a", "b"):
        claimed = timed_queue.claim(worker, lease_seconds=1)
        assert claimed is not None and claimed.id == parent.id
        clock.advance(2)
    assert timed_queue.claim("c") is None  # the sweep failed it; nothing left to take
    failed = timed_queue.get(parent.id)
    assert failed.status == "failed" and failed.attempts == 2 and "lease expired" in (failed.error or "")
    assert timed_queue.get(child.id).blocked_by == [parent.id]


def test_many_expired_leases_are_all_recovered(timed_queue: TaskQueue, clock: Clock) -> None:
    """The sweep is bounded per claim (100 rows) but nothing is left behind."""
    ids = {t.id for t in timed_queue.create_many([{"title": f"t{i}"} for i in range(250)])}
    for _ in range(250):
        assert timed_queue.claim("crasher", lease_seconds=1) is not None
    clock.advance(2)
    recovered = set()
    while (task := timed_queue.claim("rescuer")) is not None:
        recovered.add(task.id)
        timed_queue.complete(task.id, "rescuer")
    assert recovered == ids
    assert timed_queue.stats().by_status["completed"] == 250


def test_cancelled_running_task_refuses_its_worker(queue: TaskQueue) -> None:
    task = queue.create({"title": "t"})
    queue.claim("w")
    queue.cancel(task.id, "no longer needed")
    with pytest.raises(LeaseLost, match="cancelled"):
        queue.complete(task.id, "w")


@pytest.mark.anyio
async def test_lease_errors_reach_mcp_clients_as_tool_errors(db_path: Path) -> None:
    async with Client(build_server(db_path)) as client:
        created = await client.call_tool("create_task", {"title": "t"})
        task_id = created.structured_content["id"]  # type: ignore[index]
        bad = await client.call_tool("claim_task", {"worker": "w", "lease_seconds": 0})
        assert bad.is_error
        too_long = await client.call_tool("claim_task", {"worker": "w", "lease_seconds": MAX_LEASE_SECONDS + 1})
        assert too_long.is_error
        ok = await client.call_tool("claim_task", {"worker": "w", "lease_seconds": 30})
        assert ok.structured_content["task"]["id"] == task_id  # type: ignore[index]
        lease = ok.structured_content["lease_id"]  # type: ignore[index]
        lost = await client.call_tool("complete_task", {"task_id": task_id, "worker": "impostor", "lease_id": lease})
        assert lost.is_error
        assert "lease_lost: worker 'impostor'" in lost.content[0].text  # type: ignore[union-attr]

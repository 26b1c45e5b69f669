"""Crashes: a server SIGKILLed holding leases, and one killed in the middle of a batch create.

SIGKILL stops the process at an arbitrary instruction, like a crash; the OS keeps what was
written, so this tests atomicity and recovery, not the loss of the disk cache on power failure
(docs/reliability.md says what `synchronous=NORMAL` promises there).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from benchmarks.stress import kill_during_batch_create, kill_while_leased
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store

pytestmark = pytest.mark.anyio


async def test_leases_of_a_killed_server_expire_and_another_server_finishes_them(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    held, finished, recovery = await kill_while_leased(db, leased=10, lease_seconds=1)
    assert len(held) == 10
    assert sorted(finished) == sorted(held)
    assert recovery < 15
    store = Store(db)
    try:
        queue = TaskQueue(store)
        for task_id in held:
            task = queue.get(task_id)
            assert task.status == "completed" and task.worker == "rescuer" and task.attempts == 2
            actions = [(e.action, e.actor) for e in queue.history(task_id).events]
            assert actions[1:] == [
                ("claimed", "victim"),
                ("lease_expired", "system"),
                ("claimed", "rescuer"),
                ("complete", "rescuer"),
            ]
        assert store.integrity_check() == "ok"
    finally:
        store.close()


async def test_a_batch_create_killed_midway_leaves_all_of_it_or_none(tmp_path: Path) -> None:
    db = tmp_path / "atomic.db"
    rng = random.Random(7)
    counts = [await kill_during_batch_create(db, batch=200, payload_bytes=2000, rng=rng) for _ in range(3)]
    assert counts[-1] > 0  # the writer really wrote before it was killed
    assert all(count % 200 == 0 for count in counts), counts
    store = Store(db)
    try:
        assert store.integrity_check() == "ok"
        queue = TaskQueue(store)
        # every task that exists is whole: readable, with its creation in the history
        page = queue.list(project="atomic", limit=5)
        for summary in page.tasks:
            assert [e.action for e in queue.history(summary.id).events] == ["created"]
    finally:
        store.close()

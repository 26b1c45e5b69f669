"""Several `mcp-taskqueue serve` processes on one SQLite file: nothing claimed twice, nothing lost.

The scenarios live in benchmarks/stress.py; here they run small enough for `make test`
(`make stress` runs them with 2000 tasks).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest
from mcp import Client

from benchmarks.stress import call, drain, server_params
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store

pytestmark = pytest.mark.anyio


async def test_four_servers_drain_a_shared_queue_exactly_once(tmp_path: Path) -> None:
    report = await drain(tmp_path / "shared.db", tasks=300, servers=4)
    assert report.problems == []
    assert sum(report.completed_by.values()) == 300
    assert len(report.claims) == 300 and set(report.claims.values()) == {1}
    # every process took part: the file really was shared, not serialised behind one server
    assert len(report.completed_by) == 4 and min(report.completed_by.values()) > 0
    # a subscriber on a fifth process saw the drained queue within a second of the last completion
    assert report.seen_done_after is not None and report.seen_done_after < 1.0


async def test_racing_processes_share_one_task_per_idempotency_key(tmp_path: Path) -> None:
    db = tmp_path / "idem.db"
    keys = [f"key-{i}" for i in range(40)]
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(Client(server_params(db))) for _ in range(4)]
        seen: dict[str, set[str]] = {key: set() for key in keys}

        async def create_all(client: Client, offset: int) -> None:
            # each process walks the keys from a different start so they collide mid-flight
            for key in keys[offset:] + keys[:offset]:
                task = await call(client, "create_task", title=f"once {key}", idempotency_key=key)
                seen[key].add(task["id"])

        async with anyio.create_task_group() as tg:
            for n, client in enumerate(clients):
                tg.start_soon(create_all, client, n * 10)
    assert all(len(ids) == 1 for ids in seen.values()), {k: v for k, v in seen.items() if len(v) > 1}
    store = Store(db)
    try:
        assert TaskQueue(store).stats().total == len(keys)
    finally:
        store.close()


async def test_a_write_waiting_on_another_process_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    """Store calls run in worker threads: while one waits a second for another process's lock,
    the server's event loop (the in-memory server shares this test's loop) keeps turning."""
    from mcp_taskqueue.server.app import build_server

    db = tmp_path / "loop.db"
    server = build_server(db)
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        async with Client(server) as writer:
            await call(writer, "queue_stats")
            gaps: list[float] = []
            write_seconds = 0.0

            async def write() -> None:
                nonlocal write_seconds
                start = time.perf_counter()
                await call(writer, "create_task", title="waits for the lock")
                write_seconds = time.perf_counter() - start

            other.execute("BEGIN IMMEDIATE")  # another process is mid-write
            threading.Timer(1.0, lambda: other.execute("COMMIT")).start()
            async with anyio.create_task_group() as tg:
                tg.start_soon(write)
                last = time.perf_counter()
                for _ in range(40):
                    await anyio.sleep(0.02)
                    now = time.perf_counter()
                    gaps.append(now - last)
                    last = now
    finally:
        other.close()
    assert write_seconds > 0.8  # the write really waited for the other process
    assert max(gaps) < 0.3, max(gaps)


def test_a_lock_held_briefly_elsewhere_is_waited_out(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"
    store = Store(db)
    queue = TaskQueue(store)
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process mid-write
        timer = threading.Timer(0.3, lambda: other.execute("COMMIT"))
        timer.start()
        start = time.perf_counter()
        task = queue.create({"title": "waited"})
        assert 0.2 < time.perf_counter() - start < 5
        assert queue.get(task.id).title == "waited"
        timer.join()
    finally:
        other.close()
        store.close()


async def test_a_lock_held_too_long_is_a_clear_store_busy_tool_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the bounded retries the client gets `store_busy`, never sqlite's `database is locked`."""
    from mcp_taskqueue.server.app import build_server

    monkeypatch.setenv("TASKQUEUE_STORE_TIMEOUT", "0.3")
    db = tmp_path / "busy.db"
    server = build_server(db)
    other = sqlite3.connect(db, isolation_level=None)
    try:
        async with Client(server) as client:
            other.execute("BEGIN IMMEDIATE")
            result = await client.call_tool("create_task", {"title": "blocked"})
            other.execute("ROLLBACK")
            assert result.is_error
            text = result.content[0].text  # type: ignore[union-attr]
            assert "store_busy:" in text and "try again" in text and "database is locked" not in text
            retry = await client.call_tool("create_task", {"title": "blocked"})
            assert not retry.is_error
            assert (await call(client, "queue_stats"))["total"] == 1
    finally:
        other.close()

"""The Worker loop: handlers by kind, automatic heartbeats, outcomes, and clean shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_taskqueue.client import TaskQueueClient
from mcp_taskqueue.models import Status, Task
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store
from mcp_taskqueue.worker import Job, PermanentError, Worker, load_worker
from tests.servers import server_env


@pytest.mark.anyio
async def test_handlers_complete_fail_and_retry(db_path: Path) -> None:
    worker = Worker("w", poll_interval=0.05, concurrency=2)
    attempts: dict[str, int] = {}

    @worker.handler("double")
    async def double(task: Task) -> dict[str, Any]:
        return {"n": task.payload["n"] * 2} if task.payload else {}

    @worker.handler("flaky")
    def flaky(task: Task) -> str:  # a sync handler runs in a thread
        attempts[task.id] = attempts.get(task.id, 0) + 1
        raise RuntimeError("try again")

    @worker.handler("broken")
    async def broken(task: Task) -> None:
        raise PermanentError("cannot ever work")

    async with TaskQueueClient(db_path) as tq:
        made = await tq.create_tasks(
            [{"title": f"d{i}", "kind": "double", "payload": {"n": i}} for i in range(4)]
            + [{"title": "flaky", "kind": "flaky", "max_attempts": 1}, {"title": "broken", "kind": "broken"}]
            + [{"title": "not mine", "kind": "other"}]
        )
        stats = await worker.run(tq, stop_when_idle=False, max_tasks=6, handle_signals=False)
        assert (stats.completed, stats.failed) == (4, 2)
        tasks = [await tq.get_task(t.id) for t in made.tasks]
    assert [t.result for t in tasks[:4]] == [{"n": 0}, {"n": 2}, {"n": 4}, {"n": 6}]
    assert tasks[4].status is Status.failed and tasks[4].error == "RuntimeError: try again"
    assert tasks[5].status is Status.failed and tasks[5].attempts == 1 and tasks[5].max_attempts == 3
    assert tasks[6].status is Status.ready  # a kind without a handler is never claimed


@pytest.mark.anyio
async def test_heartbeats_keep_the_lease_while_a_handler_runs(db_path: Path) -> None:
    worker = Worker("slow", lease_seconds=1, heartbeat_interval=0.25, poll_interval=0.05)
    seen: list[float] = []

    @worker.handler("slow")
    async def slow(task: Task, job: Job) -> str:
        for step in range(1, 5):
            await anyio.sleep(0.4)  # 1.6 s in all: longer than the 1 s lease
            await job.progress(step / 4)
            seen.append(step / 4)
        return "done"

    async with TaskQueueClient(db_path) as tq:
        state = await tq.create_task("slow", kind="slow")
        stats = await worker.run(tq, stop_when_idle=True, handle_signals=False)
        task = await tq.get_task(state.id)
    assert stats.completed == 1 and stats.lost == 0
    assert task.status is Status.completed and task.result == "done"
    assert task.attempts == 1  # the lease never lapsed, so nobody re-ran it
    assert seen == [0.25, 0.5, 0.75, 1.0]


@pytest.mark.anyio
async def test_stop_releases_the_task_in_hand(db_path: Path) -> None:
    worker = Worker("stopper", poll_interval=0.05)
    started = anyio.Event()

    @worker.handler("long")
    async def long(task: Task) -> None:
        started.set()
        await anyio.sleep(60)

    async with TaskQueueClient(db_path) as tq:
        state = await tq.create_task("long", kind="long")
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: worker.run(tq, handle_signals=False))
            await started.wait()
            assert worker.holding == [state.id]
            worker.stop()
        task = await tq.get_task(state.id)
    assert worker.stats.released == 1 and worker.holding == []
    assert task.status is Status.ready and task.worker is None


@pytest.mark.anyio
async def test_a_lost_lease_discards_the_result(db_path: Path) -> None:
    """If the lease lapses (no heartbeat in time) and another worker takes the task, the first
    worker's result is dropped rather than overwriting the new holder's work."""
    worker = Worker("sleepy", lease_seconds=1, heartbeat_interval=30, poll_interval=0.05)

    @worker.handler("job")
    async def job(task: Task) -> str:
        await anyio.sleep(1.6)
        return "stale"

    async with TaskQueueClient(db_path) as tq:
        state = await tq.create_task("job", kind="job")
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: worker.run(tq, handle_signals=False))
            await anyio.sleep(1.2)  # past the 1 s lease
            stolen = await tq.claim_task("thief")
            assert stolen.task is not None and stolen.task.id == state.id
            with anyio.fail_after(5):
                while worker.stats.lost == 0:
                    await anyio.sleep(0.05)
            worker.stop()
        task = await tq.get_task(state.id)
    assert worker.stats.completed == 0 and worker.stats.lost == 1
    assert task.status is Status.running and task.worker == "thief" and task.result is None


WORKER_MODULE = """
import time
from mcp_taskqueue.worker import Worker

worker = Worker("sig-worker", lease_seconds=600, poll_interval=0.05)

@worker.handler("long")
def long(task):
    time.sleep(60)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_worker_and_releases_its_lease(tmp_path: Path, db_path: Path, signum: int) -> None:
    (tmp_path / "sigmod.py").write_text(textwrap.dedent(WORKER_MODULE))
    queue = TaskQueue(Store(db_path))
    task = queue.create({"title": "long", "kind": "long"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_taskqueue.cli", "--db", str(db_path), "worker", "sigmod:worker"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server_env(),
    )
    try:
        deadline = time.monotonic() + 20
        while queue.get(task.id).status is not Status.running:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the worker never claimed the task"
            time.sleep(0.05)
        assert queue.get(task.id).worker == "sig-worker"
        sent = time.monotonic()
        os.kill(proc.pid, signum)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert time.monotonic() - sent < 10
    after = queue.get(task.id)
    assert after.status is Status.ready and after.worker is None and after.lease_expires_at is None
    assert b"released" in err
    assert queue.history(task.id).events[-1].action == "release"
    queue.store.close()


def test_load_worker_rejects_what_is_not_a_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "notworker.py").write_text("worker = 42\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="not a Worker"):
        load_worker("notworker:worker")
    with pytest.raises(ValueError):
        load_worker(":worker")


def test_run_without_handlers_is_refused(db_path: Path) -> None:
    with pytest.raises(ValueError, match="handler"):
        Worker("empty").run_sync(db_path)


@pytest.mark.anyio
async def test_worker_survives_a_server_restart(db_path: Path) -> None:
    from tests.servers import free_port

    def start(port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "mcp_taskqueue.cli", "--db", str(db_path), "serve", "--transport", "http"]
            + ["--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=server_env(),
        )

    queue = TaskQueue(Store(db_path))
    before = queue.create({"title": "before", "kind": "echo"})
    worker = Worker("steady", poll_interval=0.05)

    @worker.handler("echo")
    async def echo(task: Task) -> str:
        return task.title

    port = free_port()
    proc = start(port)
    try:
        async with anyio.create_task_group() as tg:
            client = TaskQueueClient(f"http://127.0.0.1:{port}/mcp", retries=8, backoff=0.2)
            tg.start_soon(lambda: worker.run(client, handle_signals=False))
            with anyio.fail_after(30):
                while queue.get(before.id).status is not Status.completed:
                    await anyio.sleep(0.05)
            proc.terminate()
            proc.wait(timeout=10)
            after = queue.create({"title": "after", "kind": "echo"})
            await anyio.sleep(0.5)  # the worker polls a dead server meanwhile
            proc = start(port)
            with anyio.fail_after(30):
                # The worker's own count, not the file: the reply to complete_task lands after the commit.
                while worker.stats.completed < 2:
                    await anyio.sleep(0.05)
            worker.stop()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert queue.get(after.id).result == "after" and worker.stats.completed == 2
    queue.store.close()

"""Profiles (pyinstrument) of the workloads whose targets are missed, for docs/performance.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import anyio
from mcp import Client

from benchmarks.fill import fill_ready
from benchmarks.mcp_floor import round_trips
from benchmarks.queues import enqueue_ours, work_ours
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.app import build_server
from mcp_taskqueue.store import Store


def available() -> bool:
    return importlib.util.find_spec("pyinstrument") is not None


def _render(profiler: object) -> str:
    text: str = profiler.output_text(unicode=False, color=False, show_all=False, short_mode=False)  # type: ignore[attr-defined]
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith(("_", "/"))]
    return "\n".join(lines[:70])


def store_claim_complete(workdir: Path, count: int) -> str:
    """Where TaskQueue.claim + complete spend their time."""
    from pyinstrument import Profiler

    store = Store(workdir / "profile-store.db")
    queue = TaskQueue(store)
    enqueue_ours(queue, count)
    profiler = Profiler(interval=0.0002)
    profiler.start()
    work_ours(queue, count)
    profiler.stop()
    store.close()
    return _render(profiler)


def store_enqueue(workdir: Path, count: int) -> str:
    from pyinstrument import Profiler

    store = Store(workdir / "profile-enqueue.db")
    queue = TaskQueue(store)
    profiler = Profiler(interval=0.0002)
    profiler.start()
    enqueue_ours(queue, count)
    profiler.stop()
    store.close()
    return _render(profiler)


def mcp_in_memory(workdir: Path, count: int) -> str:
    """Where a claim_task+complete_task round trip through the in-memory client spends its time."""
    from pyinstrument import Profiler

    db = workdir / "profile-mcp.db"
    fill_ready(db, count + 10)
    server = build_server(str(db))

    async def go() -> None:
        async with Client(server) as client:
            profiler.start()
            await round_trips(client, count, "w1")
            profiler.stop()

    profiler = Profiler(interval=0.0002, async_mode="disabled")
    anyio.run(go)
    server.queue.store.close()  # type: ignore[attr-defined]
    return _render(profiler)

"""Group 1: our store against the SQLite limit.

The baseline is the least a durable queue on SQLite can do: raw sqlite3, WAL,
synchronous=NORMAL, one transaction per operation, one index matching the claim.
Ours runs the same workload through `TaskQueue` with priorities, dependencies,
leases and history all on (benchmarks/queues.py races them in turns).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.fill import fill_ready
from benchmarks.queues import RawQueue, Timings, race, work_ours
from benchmarks.report import Row, Section
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store

GROUP = "1 store"


def wal_pages_per_write(workdir: Path, count: int) -> tuple[float, float]:
    """WAL frames (pages) each claim or complete transaction writes: ours, then the raw baseline.

    Autocheckpoint is off while counting, so every page written is still in the WAL."""
    ours_db = workdir / "pages-ours.db"
    fill_ready(ours_db, count)
    store = Store(ours_db)
    store.db.execute("PRAGMA wal_autocheckpoint = 0")
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    work_ours(TaskQueue(store), count)
    ours = store.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1] / (2 * count)
    store.close()
    raw = RawQueue(workdir / "pages-raw.db")
    raw.enqueue(0, count)
    raw.conn.execute("PRAGMA wal_autocheckpoint = 0")
    raw.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.work(count)
    raw_pages = raw.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1] / (2 * count)
    raw.close()
    return ours, raw_pages


def section(workdir: Path, count: int, timings: dict[str, Timings]) -> Section:
    raw, ours, store_only = timings["raw sqlite3"], timings["ours"], timings["store only"]
    pages, raw_pages = wal_pages_per_write(workdir, min(count, 2_000))
    out = Section(f"Store vs the SQLite limit ({count:,} tasks, one transaction per operation)")
    out.rows += [
        Row(GROUP, "enqueue", ours.enqueue, "ops/s", raw.enqueue, raw_name := "raw sqlite3"),
        Row(
            GROUP,
            "claim+complete",
            ours.claim_complete,
            "tasks/s",
            raw.claim_complete,
            raw_name,
            target=">= 0.5x",
            ok=ours.claim_complete >= 0.5 * raw.claim_complete,
        ),
        Row(
            GROUP,
            "diagnostic: our schema and SQL via Tx, no queue.py",
            store_only.claim_complete,
            "tasks/s",
            raw.claim_complete,
            raw_name,
            note="claim+complete",
        ),
        Row(
            GROUP,
            "diagnostic: WAL pages written per transaction",
            pages,
            "pages",
            raw_pages,
            raw_name,
            note="claim or complete",
        ),
        Row(
            GROUP,
            "database bytes per task",
            ours.size_bytes / count,
            "B",
            note="after claim+complete, with history",
        ),
    ]
    return out


def run(workdir: Path, count: int) -> tuple[Section, dict[str, Timings]]:
    """Group 1 alone (no peers); returns the timings too."""
    timings = race(workdir, count, peers=False)
    return section(workdir, count, timings), timings

"""Test fixture: fill a database with many tasks fast, by bulk SQL against our schema.

Not product code: it bypasses `TaskQueue` so a million tasks take seconds, writing the
same rows (task, `created` history event) that `TaskQueue.create` would.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from mcp_taskqueue.ids import new_id
from mcp_taskqueue.store import Store

BATCH = 20_000
PROJECT = "bench"


def _open(path: Path) -> sqlite3.Connection:
    Store(path).close()  # creates the schema through our migrations
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")
    conn.execute(
        "INSERT OR IGNORE INTO projects (name, description, settings, created_at) VALUES (?, '', '{}', ?)",
        (PROJECT, time.time()),
    )
    return conn


def _task_row(seq: int, now: float, status: str, unmet: int, priority: int) -> tuple[object, ...]:
    title = f"task {seq}"
    return (
        seq,
        new_id(),
        PROJECT,
        title,
        "",
        "task",
        priority,
        status,
        json.dumps({"n": seq}),
        "[]",
        "[]",
        now,
        unmet,
        now,
        now,
    )


TASK_INSERT = (
    "INSERT INTO tasks (seq, id, project, title, description, kind, priority, status, payload, tags, "
    "acceptance_criteria, run_at, unmet_deps, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
EVENT_INSERT = "INSERT INTO events (task_seq, at, actor, action, old, new) VALUES (?, ?, NULL, 'created', NULL, ?)"


def _insert(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    conn.execute("BEGIN")
    conn.executemany(TASK_INSERT, rows)
    conn.executemany(
        EVENT_INSERT,
        [(r[0], r[11], json.dumps({"status": r[7], "title": r[3]})) for r in rows],
    )
    conn.execute("COMMIT")


def fill_ready(path: Path, count: int, priorities: int = 4) -> None:
    """`count` ready tasks, priorities cycling so the claim index has several runs."""
    conn = _open(path)
    now = time.time()
    start = int(conn.execute("SELECT coalesce(max(seq), 0) FROM tasks").fetchone()[0]) + 1
    for first in range(start, start + count, BATCH):
        last = min(start + count, first + BATCH)
        _insert(conn, [_task_row(seq, now, "ready", 0, seq % priorities) for seq in range(first, last)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def fill_chain(path: Path, count: int) -> None:
    """A deep chain: task n depends on task n-1, so exactly one task is ready at a time."""
    conn = _open(path)
    now = time.time()
    rows = [
        _task_row(seq, now, "ready" if seq == 1 else "pending", 0 if seq == 1 else 1, 2) for seq in range(1, count + 1)
    ]
    _insert(conn, rows)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO dependencies (task_seq, depends_on_seq) VALUES (?, ?)", [(s, s - 1) for s in range(2, count + 1)]
    )
    conn.execute("COMMIT")
    conn.close()


def fill_fan_in(path: Path, count: int) -> None:
    """A wide fan-in: count-1 ready tasks that one final task depends on."""
    conn = _open(path)
    now = time.time()
    rows = [_task_row(seq, now, "ready", 0, 2) for seq in range(1, count)]
    rows.append(_task_row(count, now, "pending", count - 1, 2))
    _insert(conn, rows)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO dependencies (task_seq, depends_on_seq) VALUES (?, ?)", [(count, s) for s in range(1, count)]
    )
    conn.execute("COMMIT")
    conn.close()

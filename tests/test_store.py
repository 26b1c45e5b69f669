"""The SQLite store: where it lives, how it is tuned, its schema versions and its query plans."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store, WouldBlock, database, default_db_path, fail_fast
from mcp_taskqueue.store.migrations import migrations
from mcp_taskqueue.store.queries import CLAIM_SQL, DUE_SQL, EXPIRED_SQL, SWEEP_PROBE_SQL, TAG_CLAIM_SQL


def test_file_is_created_with_parents_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "tasks.db"
    store = Store(path)
    assert path.exists()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.integrity_check() == "ok"
    with store._lock:
        assert 0 < store._conn.execute("PRAGMA busy_timeout").fetchone()[0] <= store.timeout * 1000
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    store.close()


def test_schema_is_versioned_by_migrations(store: Store) -> None:
    applied = [m.name for m in migrations.applied(store.db)]
    assert applied[0] == "m001_core"
    assert migrations.pending(store.db) == []
    tables = set(store.db.table_names())
    assert {"projects", "tasks", "dependencies", "events", "task_tags", "_sqlite_migrations"} <= tables


def test_reopening_keeps_data_and_applies_nothing_twice(db_path: Path) -> None:
    first = Store(db_path)
    task = TaskQueue(first).create({"title": "survives"})
    first.close()
    second = Store(db_path)
    assert TaskQueue(second).get(task.id).title == "survives"
    rows = second.db.execute("SELECT count(*) FROM _sqlite_migrations WHERE name = 'm001_core'").fetchone()
    assert rows[0] == 1
    second.close()


def test_two_processes_migrating_at_once_both_succeed(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    code = "import sys; from mcp_taskqueue.store import Store; Store(sys.argv[1]).close()"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stderr=subprocess.PIPE) for _ in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    store = Store(path)
    assert len(migrations.applied(store.db)) == len(migrations._migrations)
    store.close()


def test_default_path_follows_xdg_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TASKQUEUE_DB", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_db_path() == tmp_path / ".local" / "share" / "mcp-taskqueue" / "tasks.db"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_db_path() == tmp_path / "xdg" / "mcp-taskqueue" / "tasks.db"
    monkeypatch.setenv("TASKQUEUE_DB", str(tmp_path / "env.db"))
    assert default_db_path() == tmp_path / "env.db"
    store = Store()
    assert store.path == tmp_path / "env.db" and store.path.exists()
    store.close()


def test_claim_query_uses_the_claim_index(queue: TaskQueue) -> None:
    queue.create_many([{"title": f"t{i}", "priority": ["low", "high"][i % 2]} for i in range(200)])
    store = queue.store
    store.db.execute("ANALYZE")
    plan = " | ".join(store.explain(CLAIM_SQL.format(filters="")))
    assert "USING INDEX tasks_claim" in plan or "USING COVERING INDEX tasks_claim" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # ordered by the index, no sort
    for filters, index in ((" AND project = ?", "tasks_ready_project"), (" AND kind IN (?)", "tasks_ready_kind")):
        plan = " | ".join(store.explain(CLAIM_SQL.format(filters=filters), ("default",)))
        assert index in plan or "INDEX tasks_claim" in plan, plan
        assert "TEMP B-TREE" not in plan, plan


@pytest.mark.parametrize(
    ("sql", "index"),
    [
        (EXPIRED_SQL, "tasks_lease_rank"),
        (TAG_CLAIM_SQL.format(filters=""), "SEARCH rt USING PRIMARY KEY (tag=?)"),
        (SWEEP_PROBE_SQL, "tasks_due"),
        (DUE_SQL, "tasks_due_rank"),
        ("SELECT task_seq FROM dependencies WHERE depends_on_seq = ?", "dependencies_reverse"),
        ("SELECT seq FROM events WHERE task_seq = ? AND seq > ?", "events_task"),
        ("SELECT seq FROM tasks WHERE id = ?", "sqlite_autoindex_tasks_1"),
    ],
)
def test_per_task_queries_use_an_index(store: Store, sql: str, index: str) -> None:
    params = tuple(0 for _ in range(sql.count("?")))
    plan = " | ".join(store.explain(sql, params))
    assert index in plan, plan
    assert "SCAN" not in plan.replace("SCAN tasks_fts", "").replace("SCAN CONSTANT ROW", ""), plan


def test_write_rolls_back_everything_on_error(queue: TaskQueue) -> None:
    def broken(tx):  # type: ignore[no-untyped-def]
        tx.insert_project("half", "", "{}", 0.0)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        queue.store.write(broken)
    assert queue.store.read(lambda tx: tx.get_project("half")) is None


def test_fail_fast_refuses_to_wait_and_writes_nothing(db_path: Path, queue: TaskQueue) -> None:
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        started = time.monotonic()
        with pytest.raises(WouldBlock), fail_fast():
            queue.create({"title": "must not wait"})
        assert time.monotonic() - started < 0.5  # no busy wait, no retry sleeps
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert queue.stats().total == 0
    with fail_fast():
        assert queue.create({"title": "now it can"}).title == "now it can"
    assert queue.stats().total == 1


def test_fail_fast_waits_normally_after_a_committed_write(queue: TaskQueue) -> None:
    def two_writes() -> str:
        first = queue.create({"title": "one"})
        assert not getattr(database._inline, "active", True)  # redoing the call would repeat `first`
        return first.id

    with fail_fast():
        two_writes()
        assert queue.create({"title": "two"}).title == "two"

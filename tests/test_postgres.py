"""PostgreSQL-specific guarantees: the places that used to rest on SQLite's single writer, raced
with real threads on a real server, and the claim's index.

Every test here runs on PostgreSQL only (the SQLite store has one writer, so these races cannot
happen there); the rest of the suite runs on both engines (tests/conftest.py).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mcp_taskqueue.errors import Conflict, ValidationFailed
from mcp_taskqueue.models import Status
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Storage, archive
from mcp_taskqueue.store.queries import CLAIM_SQL, DUE_SQL, EXPIRED_SQL
from tests.servers import http_server_process


@pytest.fixture
def engine() -> str:
    """Every database fixture of this module (`store`, `queue`, `db_path`) is PostgreSQL."""
    return "postgres"


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released together; each result, or the exception it raised."""
    barrier = threading.Barrier(len(calls))

    def run(fn: Callable[[], Any]) -> Any:
        barrier.wait()
        try:
            return fn()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_two_dependencies_completing_at_once_both_count(queue: TaskQueue) -> None:
    for _ in range(5):
        a = queue.create({"title": "a", "kind": "x"})
        b = queue.create({"title": "b", "kind": "x"})
        c = queue.create({"title": "c", "kind": "after", "depends_on": [a.id, b.id]})
        first = queue.claim("w1", kinds=["x"])
        second = queue.claim("w2", kinds=["x"])
        assert first is not None and second is not None and {first.id, second.id} == {a.id, b.id}
        done = (
            functools.partial(queue.complete, first.id, "w1"),
            functools.partial(queue.complete, second.id, "w2"),
        )
        results = at_once(*done)
        assert all(r.status == Status.completed for r in results)
        assert queue.get(c.id).status == Status.ready
        assert [e.action for e in queue.history(c.id).events].count("ready") == 1


def test_one_idempotency_key_used_at_once_makes_one_task(queue: TaskQueue) -> None:
    spec = {"title": "once", "project": "p", "idempotency_key": "k-1"}
    results = at_once(*[lambda: queue.create(spec) for _ in range(8)])
    assert len({task.id for task in results}) == 1
    assert queue.stats("p").total == 1


def test_two_edges_added_at_once_cannot_close_a_cycle(queue: TaskQueue) -> None:
    for _ in range(5):
        a = queue.create({"title": "a"})
        b = queue.create({"title": "b"})
        edges = (
            functools.partial(queue.add_dependency, a.id, b.id),
            functools.partial(queue.add_dependency, b.id, a.id),
        )
        results = at_once(*edges)
        refused = [r for r in results if isinstance(r, ValidationFailed)]
        assert len(refused) == 1 and "cycle" in str(refused[0])
        assert len(queue.get(a.id).depends_on) + len(queue.get(b.id).depends_on) == 1


def test_a_note_returns_its_own_events_seq(queue: TaskQueue) -> None:
    tasks = [queue.create({"title": f"t{i}"}) for i in range(6)]
    notes = at_once(*[lambda t=t: queue.add_note(t.id, f"note for {t.id}") for t in tasks])
    for task, note in zip(tasks, notes, strict=True):
        event = next(e for e in queue.history(task.id).events if e.action == "note")
        assert (event.seq, event.new) == (note.seq, f"note for {task.id}")


def test_concurrent_claimers_never_share_a_task(queue: TaskQueue) -> None:
    queue.create_many([{"title": f"t{i}"} for i in range(60)])
    claimed: list[str] = []
    lock = threading.Lock()

    def drain(worker: str) -> None:
        while (task := queue.claim(worker)) is not None:
            with lock:
                claimed.append(task.id)

    at_once(*[lambda n=n: drain(f"w{n}") for n in range(6)])
    assert len(claimed) == 60 and len(set(claimed)) == 60


def test_the_claim_walks_the_claim_index(queue: TaskQueue, store: Storage) -> None:
    queue.create_many([{"title": f"t{i}"} for i in range(100)])
    queue.create_many([{"title": f"later {i}", "run_at": "2100-01-01T00:00:00Z"} for i in range(100)])

    def plan(tx: Any) -> str:
        tx.conn.execute("ANALYZE tasks")
        sql = "EXPLAIN " + CLAIM_SQL.format(filters="") + tx.SKIP_LOCKED
        return " | ".join(row[0] for row in tx.conn.execute(sql))

    text = store.write(plan)
    assert "tasks_claim" in text and "Sort" not in text, text


def test_restore_refuses_while_a_server_uses_the_database_and_names_it(
    db_path: str, queue: TaskQueue, tmp_path: Path
) -> None:
    """As on SQLite (test_operator.py), a restore cannot rewind a live queue by accident: the
    servers on a PostgreSQL database are its other mcp-taskqueue connections (pg_stat_activity)."""
    kept = queue.create({"title": "in the backup"})
    backup_file = tmp_path / "backup.dump"
    archive.backup(queue.store, backup_file)
    later = queue.create({"title": "acknowledged after the backup"})
    with http_server_process(db_path) as (_base, proc):
        with pytest.raises(Conflict, match=rf"in use by .*pid {proc.pid} on .*--force"):
            archive.restore(queue.store, backup_file)
        assert queue.get(later.id).title == "acknowledged after the backup"  # nothing was rewound
    # Any other mcp-taskqueue process counts (a worker, a script); --force overrides.
    script = "import sys; from mcp_taskqueue.store import open_store; s = open_store(sys.argv[1]); print('open', flush=True); sys.stdin.read()"
    with subprocess.Popen(
        [sys.executable, "-c", script, db_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline() == b"open\n"
        with pytest.raises(Conflict, match=rf"in use by 1 other process\(es\): pid {holder.pid} "):
            archive.restore(queue.store, backup_file)
        archive.restore(queue.store, backup_file, force=True)
        holder.communicate(b"", timeout=30)
    assert [t.id for t in queue.list().tasks] == [kept.id]
    queue.create({"title": "after"})
    archive.restore(queue.store, backup_file)  # with nobody else on the database, it goes ahead
    assert [t.id for t in queue.list().tasks] == [kept.id]


# Where the two schemas differ on purpose: SQLite's ready-tag index (PostgreSQL claims by tag through
# task_tags), PostgreSQL's change-feed column, and its count delta rows (no key: rows are appended).
SQLITE_ONLY_TABLES = {"ready_tags"}
PG_ONLY_COLUMNS = {("events", "xid")}
UNKEYED_ON_PG = {"task_counts"}


def test_the_two_schemas_stay_twins(store: Storage, new_db: Callable[..., Path | str]) -> None:
    """migrations.py and pg_schema.py spell the same schema in two dialects (shipped migrations are
    never edited, so they are not generated from one list): every table, column, type, NOT NULL and
    key agrees, asked of the databases themselves, except the differences named above."""
    from mcp_taskqueue.store import open_store
    from mcp_taskqueue.store.catalog import catalog

    def shape(of: Storage) -> dict[str, tuple[list[tuple[str, str, bool]], list[str]]]:
        def op(tx: Any) -> dict[str, tuple[list[tuple[str, str, bool]], list[str]]]:
            cat = catalog(of.engine, tx.conn)
            out = {}
            for table in cat.tables(skip=tuple(SQLITE_ONLY_TABLES)):
                columns = [c for c in cat.columns(table) if (table, c.name) not in PG_ONLY_COLUMNS]
                keys = [c.name for c in sorted(columns, key=lambda c: c.key) if c.key]
                out[table] = ([(c.name, c.affinity, c.not_null) for c in columns], keys)
            return out

        return of.read(op)

    lite = open_store(new_db("sqlite"))
    try:
        here, there = shape(store), shape(lite)
    finally:
        lite.close()
    assert sorted(here) == sorted(there)
    for table in sorted(here):
        assert here[table][0] == there[table][0], table
        if table not in UNKEYED_ON_PG:
            assert here[table][1] == there[table][1], table


@pytest.mark.parametrize(("template", "index"), [(DUE_SQL, "tasks_due_rank"), (EXPIRED_SQL, "tasks_lease_rank")])
def test_the_sweep_takes_each_priority_through_its_index(
    queue: TaskQueue, store: Storage, template: str, index: str
) -> None:
    """Due work and expired leases are found per priority by a range of a (priority, time) partial
    index (p007): behind a backlog of due `low` work the `critical` rows are one range away, so the
    sweep stays O(log n) whatever the backlog, on PostgreSQL as on SQLite."""
    later = "2100-01-01T00:00:00Z"
    for start in (0, 400):
        queue.create_many(
            [{"title": f"low {i}", "priority": "low", "run_at": later} for i in range(start, start + 400)]
        )
        queue.create_many([{"title": f"low {i}", "priority": "low"} for i in range(start, start + 400)])
    queue.create_many([{"title": f"critical {i}", "priority": "critical", "run_at": later} for i in range(5)])
    queue.create_many([{"title": f"critical {i}", "priority": "critical"} for i in range(5)])
    assert len(queue.claim_many("w", max_tasks=50, lease_seconds=60)) == 50  # leases that will expire
    while queue.claim_many("w", max_tasks=50, lease_seconds=60):
        pass
    after_2100 = 5_000_000_000.0  # everything is due and every lease expired by then

    def plan(tx: Any) -> str:
        tx.conn.execute("ANALYZE tasks")
        sql = "EXPLAIN " + tx.render(template)
        return " | ".join(row[0] for row in tx.conn.execute(sql, (0, after_2100, 100)))

    text = store.write(plan)
    assert index in text and "Seq Scan" not in text and "Sort" not in text, text

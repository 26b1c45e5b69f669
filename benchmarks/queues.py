"""The queue workload of groups 1 and 2, raced fairly: every contender runs the same chunks in turn.

Enqueue `count` small tasks one transaction each, then claim+complete all of them. The work is
cut into rounds and the contenders take turns within each round, so a burst of load from
elsewhere on a shared machine lands on all of them alike instead of on whoever ran last.
"""

from __future__ import annotations

import functools
import importlib.util
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store, Tx

PRIORITIES = ("critical", "high", "medium", "low")
ROUNDS = 5


class Contender(Protocol):
    name: str

    def enqueue(self, first: int, count: int) -> None: ...
    def work(self, count: int) -> None: ...
    def close(self) -> None: ...


@dataclass
class Timings:
    """Operations per second for the two halves of the workload."""

    enqueue: float
    claim_complete: float
    size_bytes: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class RawQueue:
    """The baseline: a minimal SQLite queue with the same durability settings as ours."""

    name = "raw sqlite3"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, status TEXT NOT NULL, priority INTEGER NOT NULL, "
            "payload TEXT, worker TEXT, lease_expires_at REAL, result TEXT)"
        )
        self.conn.execute("CREATE INDEX IF NOT EXISTS tasks_claim ON tasks(status, priority)")

    def enqueue(self, first: int, count: int) -> None:
        for n in range(first, first + count):
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "INSERT INTO tasks (status, priority, payload) VALUES ('ready', ?, ?)", (n % 4, f'{{"n":{n}}}')
            )
            self.conn.execute("COMMIT")

    def claim(self, worker: str) -> int | None:
        self.conn.execute("BEGIN IMMEDIATE")
        row = self.conn.execute("SELECT id FROM tasks WHERE status = 'ready' ORDER BY priority, id LIMIT 1").fetchone()
        if row is not None:
            self.conn.execute(
                "UPDATE tasks SET status = 'running', worker = ?, lease_expires_at = ? WHERE id = ?",
                (worker, time.time() + 300, row[0]),
            )
        self.conn.execute("COMMIT")
        return None if row is None else int(row[0])

    def complete(self, task_id: int, worker: str) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(
            "UPDATE tasks SET status = 'completed', result = 'null' WHERE id = ? AND worker = ?", (task_id, worker)
        )
        self.conn.execute("COMMIT")

    def work(self, count: int) -> None:
        for _ in range(count):
            task_id = self.claim("w1")
            assert task_id is not None
            self.complete(task_id, "w1")

    def close(self) -> None:
        self.conn.close()


def enqueue_ours(queue: TaskQueue, count: int, first: int = 0) -> None:
    for n in range(first, first + count):
        queue.create({"title": f"task {n}", "project": "bench", "priority": PRIORITIES[n % 4], "payload": {"n": n}})


def work_ours(queue: TaskQueue, count: int) -> None:
    for _ in range(count):
        task = queue.claim("w1")
        assert task is not None
        queue.complete(task.id, "w1")


class Ours:
    """`TaskQueue`: priorities, dependencies, leases and history all on."""

    name = "ours"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = Store(path)
        self.queue = TaskQueue(self.store)

    def enqueue(self, first: int, count: int) -> None:
        enqueue_ours(self.queue, count, first)

    def work(self, count: int) -> None:
        work_ours(self.queue, count)

    def close(self) -> None:
        self.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.store.close()


class StoreOnly(Ours):
    """Diagnostic: our schema and our SQL (the `Tx` calls a claim and a completion make), without
    queue.py's Python around them. Splits the gap to the baseline into schema cost and Python cost."""

    name = "store only"

    @staticmethod
    def _claim(tx: Tx) -> str:
        now = time.time()
        if tx.sweep_due(now):
            tx.expired_leases(now)
            tx.due_pending(now)
        row = tx.claim_next(
            worker="w1",
            lease_id=secrets.token_urlsafe(12),
            claim_key=None,
            project=None,
            kinds=None,
            tags=None,
            lease_seconds=None,
            default_lease=300,
            now=now,
        )
        assert row is not None
        tx.insert_event(row["seq"], now, "w1", "claimed", '"ready"', '{"status":"running","worker":"w1"}')
        tx.dependency_ids(row["seq"])
        return str(row["id"])

    @staticmethod
    def _complete(tx: Tx, *, task_id: str) -> None:
        now = time.time()
        row = tx.get_task(task_id)
        assert row is not None
        values = {"status": "completed", "updated_at": now, "result": None, "finished_at": now}
        tx.update_task_returning(row["seq"], values | {"lease_expires_at": None, "progress": 1.0})
        tx.insert_event(row["seq"], now, "w1", "complete", '"running"', '{"status":"completed"}')
        tx.dependents(row["seq"])
        tx.dependency_ids(row["seq"])

    def work(self, count: int) -> None:
        for _ in range(count):
            task_id = self.store.write(self._claim)
            self.store.write(functools.partial(self._complete, task_id=task_id))


class Huey:
    """huey's SqliteStorage: dequeue deletes the row, so claim and complete are one step, no lease."""

    name = "huey (SqliteStorage)"
    module = "huey"

    def __init__(self, path: Path) -> None:
        from huey.storage import SqliteStorage  # type: ignore[import-untyped]

        self.storage = SqliteStorage(name="bench", filename=str(path))
        self.storage.conn.execute("PRAGMA synchronous = NORMAL")

    def enqueue(self, first: int, count: int) -> None:
        for n in range(first, first + count):
            self.storage.enqueue(f'{{"n":{n}}}'.encode(), priority=n % 4)

    def work(self, count: int) -> None:
        for _ in range(count):
            assert self.storage.dequeue() is not None

    def close(self) -> None:
        self.storage.close()


class LiteQueue:
    """litequeue: pop locks a message, done marks it done (WAL and synchronous=NORMAL are its own)."""

    name = "litequeue"
    module = "litequeue"

    def __init__(self, path: Path) -> None:
        from litequeue import LiteQueue as Queue  # type: ignore[import-untyped]

        self.queue = Queue(str(path))

    def enqueue(self, first: int, count: int) -> None:
        for n in range(first, first + count):
            self.queue.put(f'{{"n":{n}}}')

    def work(self, count: int) -> None:
        for _ in range(count):
            message = self.queue.pop()
            assert message is not None
            self.queue.done(message.message_id)

    def close(self) -> None:
        self.queue.close()


class PersistQueue:
    """persist-queue's SQLiteAckQueue: get marks an item unacked, ack finishes it."""

    name = "persist-queue (SQLiteAckQueue)"
    module = "persistqueue"

    def __init__(self, path: Path) -> None:
        from persistqueue import SQLiteAckQueue

        self.queue: Any = SQLiteAckQueue(str(path), auto_commit=True)
        self.queue._conn.execute("PRAGMA synchronous = NORMAL")

    def enqueue(self, first: int, count: int) -> None:
        for n in range(first, first + count):
            self.queue.put({"n": n})

    def work(self, count: int) -> None:
        for _ in range(count):
            item = self.queue.get(block=False, raw=True)
            self.queue.ack(id=item["pqid"])

    def close(self) -> None:
        self.queue.close()


PEERS = (Huey, LiteQueue, PersistQueue)


def installed_peers() -> list[type[Huey] | type[LiteQueue] | type[PersistQueue]]:
    return [peer for peer in PEERS if importlib.util.find_spec(peer.module) is not None]


def race(workdir: Path, count: int, peers: bool = True, rounds: int = ROUNDS) -> dict[str, Timings]:
    """Timings for each contender (raw sqlite3, ours, store only, and installed peers if asked)."""
    contenders: list[Contender] = [RawQueue(workdir / "raw.db"), Ours(workdir / "ours.db")]
    contenders.append(StoreOnly(workdir / "store-only.db"))
    if peers:
        for index, peer in enumerate(installed_peers()):
            peer_dir = workdir / f"peer{index}"
            peer_dir.mkdir(exist_ok=True)
            contenders.append(peer(peer_dir / "queue.db" if peer is not PersistQueue else peer_dir))
    chunks = [count // rounds + (1 if r < count % rounds else 0) for r in range(rounds)]
    spent = {c.name: [0.0, 0.0] for c in contenders}
    for half in (0, 1):
        first = 0
        for chunk in chunks:
            for contender in contenders:
                start = time.perf_counter()
                if half == 0:
                    contender.enqueue(first, chunk)
                else:
                    contender.work(chunk)
                spent[contender.name][half] += time.perf_counter() - start
            first += chunk
    results = {}
    for contender in contenders:
        contender.close()
        enqueue, work = spent[contender.name]
        results[contender.name] = Timings(count / enqueue, count / work)
    results["ours"].size_bytes = (workdir / "ours.db").stat().st_size
    return results

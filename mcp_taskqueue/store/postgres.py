"""The PostgreSQL store: the same contract as the SQLite one, for many servers on one database.

Chosen by a URL wherever a database is named (`--db postgresql://user@host/db`, `TASKQUEUE_DB`,
`build_server`, the client's in-process mode). psycopg 3 with a connection pool; every write is
one READ COMMITTED transaction in which the task rows read by id are locked (`FOR UPDATE`), the
claim takes the best ready row nobody else holds (`FOR UPDATE SKIP LOCKED` on the `tasks_claim`
partial index), and lock conflicts (deadlock, serialization failure) are retried a bounded
number of times, then refused with `StoreBusy`. The change feed is `LISTEN taskqueue`: every
committed event is announced by a trigger, in commit order, to every server on the database.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg.adapt import Loader
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool

from mcp_taskqueue.errors import StoreBusy, StoreError, ValidationFailed
from mcp_taskqueue.store.abandon import check_abandoned
from mcp_taskqueue.store.contract import ChangeBatch, Health, WouldBlock
from mcp_taskqueue.store.pg_schema import CHANNEL, PG_MIGRATIONS
from mcp_taskqueue.store.queries import Tx, search_terms

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRIES = 8
# Errors that mean "another writer got there first": the whole transaction is run again.
RETRYABLE = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable)
MIGRATION_LOCK = 7_157_001
GRAPH_LOCK = 7_157_002
COMPACT_EVERY_SECONDS = 5.0
BODY = "(title || ' ' || description)"  # the searched text, spelt as the search indexes spell it


def redact(url: str) -> str:
    """The URL without its password, for banners and errors."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    host = info.get("host", "")
    port = f":{info['port']}" if info.get("port") else ""
    user = f"{info['user']}@" if info.get("user") else ""
    return f"postgresql://{user}{host}{port}/{info.get('dbname', '')}"


class Row(tuple):  # type: ignore[type-arg]
    """A result row read by name or by position, like `sqlite3.Row`."""

    __slots__ = ()
    positions: dict[str, int] = {}

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self.positions[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self.positions)


_row_classes: dict[tuple[str, ...], type[Row]] = {}


def rows(cursor: Any) -> RowMaker[Row]:
    """psycopg row factory: one `Row` class per column list, cached."""
    names = tuple(column.name for column in cursor.description or ())
    cls = _row_classes.get(names)
    if cls is None:
        cls = type("Row", (Row,), {"__slots__": (), "positions": {n: i for i, n in enumerate(names)}})
        _row_classes[names] = cls
    return cls  # type: ignore[return-value]


class JsonText(Loader):
    """JSONB comes back as compact JSON text, as SQLite's TEXT columns hold it: one decoder for both."""

    def load(self, data: Any) -> str:
        return json.dumps(json.loads(bytes(data)), ensure_ascii=False, separators=(",", ":"))


def configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_loader("jsonb", JsonText)


class Connection:
    """A psycopg connection spoken to in the SQLite dialect of queries.py (`?` placeholders)."""

    _translated: dict[str, str] = {}

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    @classmethod
    def translate(cls, sql: str) -> str:
        out = cls._translated.get(sql)
        if out is None:
            out = sql.replace("%", "%%").replace("?", "%s")
            cls._translated[sql] = out
        return out

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self.raw.execute(self.translate(sql), list(params) or None)  # type: ignore[arg-type]

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(self.translate(sql), list(params))  # type: ignore[arg-type]


class PgTx(Tx):
    """A transaction on PostgreSQL: the shared SQL of `Tx`, with row locks and PostgreSQL search."""

    FOR_UPDATE = " FOR UPDATE"
    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
    _last_compact = 0.0

    def hint(self, index: str) -> str:
        return ""  # PostgreSQL's planner takes no hints; the partial indexes match the queries

    def search_clause(self, text: str) -> tuple[str, list[Any]]:
        """Each term matches a whole word (tsvector) or a substring: through pg_trgm for ASCII, through
        the one- and two-character pieces of `tasks_grams` for other scripts (p006): the same "every
        script" rule as SQLite's search."""
        clauses: list[str] = []
        params: list[Any] = []
        for term in search_terms(text):
            like = "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            if term.isascii():
                clauses.append(f"(search @@ plainto_tsquery('simple', ?) OR {BODY} ILIKE ?)")
                params.extend([term, like])
            else:  # its non-ASCII pieces narrow through tasks_grams (p006), ILIKE checks the substring
                clauses.append(
                    f"(search @@ plainto_tsquery('simple', ?) OR (taskqueue_grams({BODY}) @> taskqueue_grams(?) "
                    f"AND {BODY} ILIKE ?))"
                )
                params.extend([term, term, like])
        return "(" + " AND ".join(clauses) + ")", params

    def lock_dependency_graph(self) -> None:
        self.conn.execute("SELECT pg_advisory_xact_lock(?)", (GRAPH_LOCK,))

    def _next_ready_by_tags(self, project: str | None, kinds: Sequence[str] | None, tags: Sequence[str]) -> int | None:
        filters, params = self._claim_filters(project, kinds)
        row = self.conn.execute(
            f"SELECT seq FROM tasks WHERE status = 'ready'{filters} AND seq IN "
            "(SELECT task_seq FROM task_tags WHERE tag = ANY(?)) ORDER BY priority, seq LIMIT 1" + self.SKIP_LOCKED,
            [*params, list(dict.fromkeys(tags))],
        ).fetchone()
        return None if row is None else int(row[0])

    def sweep_due(self, now: float) -> bool:
        if self.write and time.monotonic() - PgTx._last_compact > COMPACT_EVERY_SECONDS:
            PgTx._last_compact = time.monotonic()
            self.compact_counts()
        return super().sweep_due(now)

    def compact_counts(self) -> None:
        """Fold the count deltas into one row per key. Rows other writers add meanwhile stay."""
        self.conn.execute(
            "WITH gone AS (DELETE FROM task_counts RETURNING project, status, priority, n) "
            "INSERT INTO task_counts SELECT project, status, priority, sum(n) FROM gone "
            "GROUP BY project, status, priority HAVING sum(n) <> 0"
        )


class PgChangeFeed:
    """`LISTEN taskqueue` on a connection of its own: what every server's commits touched."""

    def __init__(self, url: str) -> None:
        self._conn = psycopg.connect(url, autocommit=True)
        self._conn.execute(f"LISTEN {CHANNEL}")
        self._lock = threading.Lock()

    def poll(self) -> ChangeBatch:
        batch = ChangeBatch()
        with self._lock:
            # One round trip first: the server delivers every notification committed before it, so a
            # poll after a commit (of this process or another) always sees that commit.
            self._conn.execute("SELECT 1")
            for note in self._conn.notifies(timeout=0):
                try:
                    kind, *rest = json.loads(note.payload)
                except ValueError:
                    continue
                if kind == "t":
                    batch.tasks.add((rest[0], rest[1], rest[2]))
                elif kind == "p":
                    batch.projects.add(rest[0])
                    batch.projects_listed = batch.projects_listed or rest[1] == "INSERT"
                elif kind == "reset":
                    batch.reset = True
        return batch

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresStore:
    """A PostgreSQL database behind a queue: pool, migrations, transactions (see the module doc)."""

    engine = "postgresql"

    def __init__(self, url: str, max_connections: int = 20, *, timeout: float | None = None) -> None:
        self.url = url
        self.timeout = timeout if timeout is not None else 30.0  # seconds to wait for a pooled connection
        self.description = redact(url)
        try:
            self._pool = ConnectionPool(
                url,
                min_size=1,
                max_size=max_connections,
                kwargs={"autocommit": True, "row_factory": rows},
                configure=configure,
                timeout=self.timeout,
                open=True,
                name="taskqueue",
            )
            self._pool.wait(timeout=30)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.description}: {exc}") from exc
        except Exception as exc:  # the pool's own timeout
            raise StoreError(f"cannot connect to {self.description}: {exc}") from exc
        self._migrate()

    def _migrate(self) -> None:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
            )
            done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
            for name, script in PG_MIGRATIONS:
                if name not in done:
                    conn.execute(script.encode())
                    conn.execute("INSERT INTO _migrations VALUES (%s, %s)", (name, time.time()))

    def migrations(self) -> list[str]:
        with self._pool.connection() as conn:
            return [row[0] for row in conn.execute("SELECT name FROM _migrations ORDER BY name")]

    def _run(self, fn: Callable[[Tx], T], write: bool) -> T:
        delay = 0.005
        for attempt in range(RETRIES + 1):
            if write:
                check_abandoned()
            try:
                with self._pool.connection() as conn, conn.transaction():
                    if not write:
                        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    value = fn(PgTx(Connection(conn), write=write))
                    if write:
                        check_abandoned()  # the caller went away: leaving the block rolls back
                    return value
            except RETRYABLE as exc:
                if attempt == RETRIES:
                    raise StoreBusy(
                        f"the database {self.description} stayed contended by other writers; try again shortly"
                    ) from exc
            except psycopg.OperationalError as exc:
                if attempt == RETRIES:
                    raise StoreError(f"the database {self.description} cannot be reached: {exc}") from exc
            except psycopg.Error as exc:
                raise StoreError(f"{exc.__class__.__name__}: {exc}".strip()) from exc
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.25)
        raise AssertionError("unreachable")  # pragma: no cover

    def write(self, fn: Callable[[Tx], T]) -> T:
        return self._run(fn, write=True)

    def read(self, fn: Callable[[Tx], T]) -> T:
        return self._run(fn, write=False)

    def run_inline(self, fn: Callable[[], T]) -> T:
        """Every call waits on the network, so none runs on the event loop: always `WouldBlock`."""
        raise WouldBlock

    def change_feed(self) -> PgChangeFeed:
        return PgChangeFeed(self.url)

    def health(self) -> Health:
        """Ready when a pooled connection answers a read within 5 s."""
        try:
            with self._pool.connection(timeout=5) as conn:
                conn.execute("SELECT 1 FROM _migrations LIMIT 1")
        except Exception as exc:
            return Health(False, f"the database {self.description} does not answer: {exc}", "store_unavailable")
        return Health(True)

    def integrity_check(self) -> str:
        """PostgreSQL keeps its own pages consistent; "ok" when the database answers."""
        health = self.health()
        return "ok" if health.ready else health.reason

    def backup_to(self, target: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None) -> None:
        """`pg_dump --format=custom` of the whole database to `target`."""
        _run_tool("pg_dump", "--format=custom", "--no-owner", f"--file={target}", f"--dbname={self.url}")

    def restore_from(self, source: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None) -> None:
        """`pg_restore --clean` of a `backup_to` file into this database, then every server is told."""
        _run_tool("pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction", f"--dbname={self.url}",
                  str(source))  # fmt: skip
        self._migrate()
        with self._pool.connection() as conn:
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps(["reset"])))

    def close(self) -> None:
        self._pool.close()


def verify_dump(path: str | os.PathLike[str]) -> None:
    """Refuse a dump that `pg_restore --list` cannot read or that holds no tasks table."""
    listing = _run_tool("pg_restore", "--list", str(path))
    if " TABLE public tasks " not in listing and " TABLE tasks " not in listing:
        raise ValidationFailed(f"{path} is a PostgreSQL dump but not of an mcp-taskqueue store")


def _run_tool(name: str, *args: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise StoreError(f"{name} is not installed; PostgreSQL backups use the PostgreSQL client tools")
    done = subprocess.run([exe, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise StoreError(f"{name} failed: {done.stderr.strip()[-500:]}")
    return done.stdout

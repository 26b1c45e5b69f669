"""The PostgreSQL store: the same contract as the SQLite one, for many servers on one database.

Chosen by a URL wherever a database is named (`--db postgresql://user@host/db`, `TASKQUEUE_DB`,
`build_server`, the client's in-process mode). psycopg 3 with a connection pool; every write is
one READ COMMITTED transaction in which the task rows read by id are locked (`FOR UPDATE`), the
claim takes the best ready row nobody else holds (`FOR UPDATE SKIP LOCKED` on the `tasks_claim`
partial index), and lock conflicts (deadlock, serialization failure) are retried a bounded
number of times, then refused with `StoreBusy`. The change feed reads each commit's events back
by the transaction that wrote them, and listens for project changes and restores (`PgChangeFeed`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
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
# After a sweep probe found nothing due, claims within this many seconds (queue time) skip the
# probe until the earliest lease or scheduled start it saw comes due: a round trip saved on
# nearly every claim under load. Only a lease or start written meanwhile that is due sooner than
# every one the probe saw waits, by at most this long.
SWEEP_PROBE_EVERY = 0.1
SWEEP_PROBE = (
    "SELECT (SELECT min(lease_expires_at) FROM tasks WHERE status = 'running'), "
    "(SELECT min(run_at) FROM tasks WHERE status = 'pending' AND unmet_deps = 0)"
)
# Every connection names its process (`application_name`), so a restore can see the servers on a database.
APPLICATION = "mcp-taskqueue"
THIS_PROCESS = f"{APPLICATION} pid {os.getpid()} on {socket.gethostname()}"[:63]
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


class JsonAsWritten(Loader):
    """`json` columns come back as the very text that was written (the store writes it compact)."""

    def load(self, data: Any) -> str:
        return bytes(data).decode()


def configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_loader("jsonb", JsonText)
    conn.adapters.register_loader("json", JsonAsWritten)


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


@dataclass
class Timers:
    """A store's housekeeping clocks, shared by its transactions (benign races: at worst one extra probe)."""

    last_compact: float = 0.0  # time.monotonic() of the last compact_counts
    probed_at: float = -math.inf  # queue time of the last sweep probe
    lease_due: float = -math.inf  # the earliest lease end that probe saw
    start_due: float = -math.inf  # the earliest scheduled start of a waiting task it saw


class PgTx(Tx):
    """A transaction on PostgreSQL: the shared SQL of `Tx`, with row locks and PostgreSQL search."""

    FOR_UPDATE = " FOR UPDATE"
    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
    RETURNING_DEPENDENCIES = (
        ", ARRAY(SELECT t.id FROM dependencies d JOIN tasks t ON t.seq = d.depends_on_seq "
        "WHERE d.task_seq = tasks.seq ORDER BY t.seq) AS dependency_ids"
    )

    def __init__(self, conn: Any, write: bool = False, timers: Timers | None = None) -> None:
        super().__init__(conn, write)
        self.timers = timers or Timers()

    def hint(self, index: str) -> str:
        return ""  # PostgreSQL's planner takes no hints; the partial indexes match the queries

    def search_clause(self, text: str) -> tuple[str, list[Any]]:
        """Each term matches a whole word (tsvector) or a substring: through pg_trgm for ASCII, through
        the one- and two-character pieces of `tasks_grams` for other scripts (p008): the same "every
        script" rule as SQLite's search."""
        clauses: list[str] = []
        params: list[Any] = []
        for term in search_terms(text):
            like = "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            if term.isascii():
                clauses.append(f"(search @@ plainto_tsquery('simple', ?) OR {BODY} ILIKE ?)")
                params.extend([term, like])
            else:  # its non-ASCII pieces narrow through tasks_grams (p008), ILIKE checks the substring
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
        timers = self.timers
        if self.write and time.monotonic() - timers.last_compact > COMPACT_EVERY_SECONDS:
            timers.last_compact = time.monotonic()
            self.compact_counts()
        if 0 <= now - timers.probed_at < SWEEP_PROBE_EVERY and now <= timers.lease_due and now < timers.start_due:
            return False
        lease_due, start_due = self.conn.execute(SWEEP_PROBE).fetchone()
        timers.probed_at = now
        timers.lease_due = math.inf if lease_due is None else lease_due  # expired once now > it
        timers.start_due = math.inf if start_due is None else start_due  # due once now >= it
        return now > timers.lease_due or now >= timers.start_due

    def compact_counts(self) -> None:
        """Fold the count deltas into one row per key. Rows other writers add meanwhile stay."""
        self.conn.execute(
            "WITH gone AS (DELETE FROM task_counts RETURNING project, status, priority, n) "
            "INSERT INTO task_counts SELECT project, status, priority, sum(n) FROM gone "
            "GROUP BY project, status, priority HAVING sum(n) <> 0"
        )


class PgChangeFeed:
    """What every server's commits touched: events by writing transaction, projects by `LISTEN`.

    Each poll reads the events of transactions from `low` on that it has not reported yet, where
    `low` is the oldest transaction still running at the previous poll: every transaction before
    it has ended, so its events were all read; a transaction from `low` on that commits later is
    read by a later poll. So nothing committed is missed or reported twice, in any process on
    any host, and no writer pays for it (see p006 in pg_schema.py). A long-running write holds
    `low` back, so the `seen` set grows while it runs.
    """

    def __init__(self, url: str) -> None:
        self._conn = psycopg.connect(url, autocommit=True, application_name=THIS_PROCESS)
        self._conn.execute(f"LISTEN {CHANNEL}")
        row = self._conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()
        self._low = int(row[0]) if row else 0
        self._seen: set[int] = set()  # transactions from `low` on that were reported already
        self._lock = threading.Lock()

    def poll(self) -> ChangeBatch:
        batch = ChangeBatch()
        with self._lock:
            found = self._conn.execute(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, e.xid::text, t.id, t.project, t.workflow_id "
                "FROM (SELECT 1) one LEFT JOIN (events e JOIN tasks t ON t.seq = e.task_seq) "
                "ON e.xid >= %s::xid8 AND NOT e.xid = ANY(%s::xid8[])",
                (str(self._low), [str(x) for x in self._seen]),
            ).fetchall()
            # The query's round trip also delivered every notification committed before it.
            for note in self._conn.notifies(timeout=0):
                try:
                    kind, *rest = json.loads(note.payload)
                except ValueError:
                    continue
                if kind == "p":
                    batch.projects.add(rest[0])
                    batch.projects_listed = batch.projects_listed or rest[1] == "INSERT"
                elif kind == "reset":
                    batch.reset = True
        low = int(found[0][0])
        for _, xid, task_id, project, workflow_id in found:
            if xid is not None:
                self._seen.add(int(xid))
                batch.tasks.add((task_id, project, workflow_id))
        self._low = low
        self._seen = {x for x in self._seen if x >= low}
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
        self._timers = Timers()
        try:
            self._pool = ConnectionPool(
                url,
                min_size=1,
                max_size=max_connections,
                kwargs={"autocommit": True, "row_factory": rows, "application_name": THIS_PROCESS},
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
                with self._pool.connection() as conn:
                    if write:
                        with conn.transaction():
                            value = fn(PgTx(Connection(conn), write=True, timers=self._timers))
                            check_abandoned()  # the caller went away: leaving the block rolls back
                            return value
                    # One consistent snapshot for reads, said in the BEGIN itself (no extra round trip).
                    conn.isolation_level, conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
                    try:
                        with conn.transaction():
                            return fn(PgTx(Connection(conn), write=False, timers=self._timers))
                    finally:
                        with contextlib.suppress(psycopg.Error):  # a broken connection leaves the pool anyway
                            conn.isolation_level, conn.read_only = None, None
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

    def other_users(self) -> list[str] | None:
        """Connections of other mcp-taskqueue processes (servers, workers, CLIs) to this database."""
        with self._pool.connection() as conn:
            found = conn.execute(
                "SELECT application_name, coalesce(host(client_addr), 'a local socket'), count(*) "
                "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND application_name LIKE %s AND application_name <> %s GROUP BY 1, 2 ORDER BY 1, 2",
                (f"{APPLICATION} %", THIS_PROCESS),
            ).fetchall()
        return [f"{name.removeprefix(APPLICATION + ' ')} (from {addr}, {n} connection(s))" for name, addr, n in found]

    def backup_to(self, target: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None) -> None:
        """`pg_dump --format=custom` of the whole database to `target` (progress: 0 of 1, then 1 of 1)."""
        if progress is not None:
            progress(0, 1)
        _run_tool("pg_dump", "--format=custom", "--no-owner", f"--file={target}", f"--dbname={self.url}")
        if progress is not None:
            progress(1, 1)

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

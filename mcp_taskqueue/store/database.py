"""Opening the SQLite file: where it lives, how it is tuned, and how transactions retry.

One `Store` owns one connection. Writes run as `BEGIN IMMEDIATE` transactions so two
processes never deadlock upgrading a read lock; a transaction that still finds the file
locked after SQLite's own busy wait is retried a bounded number of times, then refused
with `StoreBusy` rather than a raw `database is locked`.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlite_utils import Database

from mcp_taskqueue.errors import StoreBusy
from mcp_taskqueue.store.migrations import migrations
from mcp_taskqueue.store.queries import Tx

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5_000
BUSY_RETRIES = 6

_inline = threading.local()


class WouldBlock(Exception):
    """Raised inside `fail_fast()` where a transaction would have to wait for a lock."""


@contextmanager
def fail_fast() -> Iterator[None]:
    """Run store calls on the caller's thread only while they need not wait.

    Handing every call to a worker thread costs ~170 µs per call (measured in benchmarks/), more
    than the SQLite work itself. Inside this block a transaction that would wait, for the lock of
    this process or for another process's write lock, raises `WouldBlock` instead, before anything
    is written, so the caller can run the same call again in a thread where waiting is harmless.
    Once one write has committed, later transactions of the same call wait normally: redoing the
    call would repeat that write.
    """
    previous = getattr(_inline, "active", False)
    _inline.active = True
    try:
        yield
    finally:
        _inline.active = previous


class Abandoned(Exception):
    """Raised instead of committing when the caller of a transaction has gone (cancelled, disconnected)."""


@contextmanager
def abandon_on(gone: threading.Event) -> Iterator[None]:
    """Roll back, rather than commit, any transaction of this thread that ends after `gone` is set.

    A server runs a call in a worker thread; when the client cancels it (or its connection drops)
    the server sets `gone`, and work that has not committed yet is undone instead of landing for
    a caller who will never hear of it (a claim burning an attempt, a batch nobody knows exists).
    """
    previous = getattr(_inline, "gone", None)
    _inline.gone = gone
    try:
        yield
    finally:
        _inline.gone = previous


def default_db_path() -> Path:
    """`$TASKQUEUE_DB`, else `$XDG_DATA_HOME/mcp-taskqueue/tasks.db` (XDG default `~/.local/share`)."""
    env = os.environ.get("TASKQUEUE_DB")
    if env:
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "mcp-taskqueue" / "tasks.db"


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Store:
    """The SQLite file behind a queue: connection, migrations, transactions."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_db_path()
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the server's worker threads; the lock serialises use of it.
        self._conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._configure()
        self.db = Database(self._conn)
        self._migrate()

    def _configure(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # WAL lets readers in other processes proceed while one process writes.
        self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA temp_store = MEMORY")

    def _migrate(self) -> None:
        def apply() -> None:
            with self._lock:
                if not migrations.pending(self.db):
                    return
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    migrations.apply(self.db)  # re-checks what is pending under the write lock
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise

        self._retry(apply)

    def _retry(self, fn: Callable[[], T]) -> T:
        delay = 0.01
        for attempt in range(BUSY_RETRIES + 1):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if _is_busy(exc) and getattr(_inline, "active", False):
                    raise WouldBlock from exc
                if not _is_busy(exc) or attempt == BUSY_RETRIES:
                    if _is_busy(exc):
                        raise StoreBusy(
                            f"the database {self.path} stayed locked by other processes; try again shortly"
                        ) from exc
                    raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[Tx]:
        """One transaction on the shared connection; inside `fail_fast()` it never waits (WouldBlock)."""
        fast = getattr(_inline, "active", False)
        if not self._lock.acquire(blocking=not fast):
            raise WouldBlock
        try:
            if fast:
                self._conn.execute("PRAGMA busy_timeout = 0")
                try:
                    self._conn.execute(begin)
                finally:
                    self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            else:
                self._conn.execute(begin)
            try:
                yield Tx(self._conn)
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            else:
                gone = getattr(_inline, "gone", None)
                if gone is not None and gone.is_set() and begin != "BEGIN":
                    self._conn.execute("ROLLBACK")
                    raise Abandoned("the caller went away before this change committed; it was rolled back")
                self._conn.execute("COMMIT")
                if fast and begin != "BEGIN":
                    _inline.active = False  # a write committed: the rest of this call may wait
        finally:
            self._lock.release()

    def write(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` in one write transaction; all of it commits or none of it does."""

        def attempt() -> T:
            with self._transaction("BEGIN IMMEDIATE") as tx:
                return fn(tx)

        return self._retry(attempt)

    def read(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` against one consistent snapshot."""

        def attempt() -> T:
            with self._transaction("BEGIN") as tx:
                return fn(tx)

        return self._retry(attempt)

    def data_version(self) -> int:
        """Changes whenever another connection commits to the file (cheap: no table read)."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def explain(self, sql: str, params: tuple[object, ...] = ()) -> list[str]:
        """`EXPLAIN QUERY PLAN` details for a query, for tests and `benchmarks/`."""
        with self._lock:
            rows = self._conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        return [str(row["detail"]) for row in rows]

    def integrity_check(self) -> str:
        with self._lock:
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    def backup_to(self, target: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None) -> None:
        """Online backup of the whole file, safe while other processes write."""
        dest = sqlite3.connect(str(target))
        try:
            with self._lock:

                def report(_status: int, remaining: int, total: int) -> None:
                    if progress is not None:
                        progress(total - remaining, total)

                self._conn.backup(dest, pages=256, progress=report)
        finally:
            dest.close()

    def restore_from(self, source: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None) -> None:
        """Replace this database's contents with `source` (a backup), then bring its schema up to date."""
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            with self._lock:

                def report(_status: int, remaining: int, total: int) -> None:
                    if progress is not None:
                        progress(total - remaining, total)

                self._retry(lambda: src.backup(self._conn, pages=256, progress=report))
        finally:
            src.close()
        self._migrate()

    def change_feed(self) -> ChangeFeed:
        """A separate read-only connection for noticing commits, this process's included."""
        return ChangeFeed(self.path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class ChangeFeed:
    """Tells a watcher cheaply whether the file changed, and what, without touching the store's lock.

    `PRAGMA data_version` moves when a connection *other than the one asking* commits, so
    a connection of its own sees the store's commits and other processes' alike.
    """

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA query_only = ON")
        self._lock = threading.Lock()

    def data_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def read(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` against one snapshot of the file."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                return fn(Tx(self._conn))
            finally:
                self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

"""Opening the SQLite file: where it lives, how it is tuned, and how long a call may wait.

Writes run on one connection as `BEGIN IMMEDIATE` transactions, so two processes never deadlock
upgrading a read lock. Reads run on connections of their own (WAL), so they never wait behind a
writer, ours or another process's. Every store call has one wall-clock deadline
(`Store.timeout`, `$TASKQUEUE_STORE_TIMEOUT`, default 5 s) covering all its waiting: for this
process's other writers, for another process's write lock, and for retries. Past it the call
fails with `StoreBusy` naming what it waited for, before anything was written.

The store also watches its file: a write is refused with `StoreLost` once the path no longer
names the file that was opened (deleted or replaced), a full disk is `StoreFull`, and a file
that fails `PRAGMA quick_check` is refused at open without being written to.
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

from mcp_taskqueue.errors import StoreBusy, StoreFull, StoreLost, StoreUnavailable
from mcp_taskqueue.store import files
from mcp_taskqueue.store.abandon import check_abandoned
from mcp_taskqueue.store.contract import ChangeBatch, Health, WouldBlock, is_postgres_url
from mcp_taskqueue.store.migrations import migrations
from mcp_taskqueue.store.queries import Tx

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0  # seconds: the whole budget of one store call, waits and retries included
BUSY_TIMEOUT_MS = 5_000  # the connections' resting busy timeout; each call sets its own remaining budget
FREED_ENOUGH = 256 * 1024  # bytes the disk must gain after a full-disk failure before /readyz says ready

SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL = 5, 6, 13

_inline = threading.local()


# The change feed reads the history in batches of this many events.
EVENT_BATCH = 1_000
MAX_BATCHES_PER_POLL = 10  # a huge burst is caught up over a few polls, not in one long read


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


def waiting_allowed() -> bool:
    """May this thread block now? Not inside `fail_fast`: that call runs on an event loop."""
    return getattr(_inline, "active", False) is not True


class LockedElsewhere(WouldBlock):
    """Inside `no_foreign_wait`: another connection (another process) holds the write lock."""


@contextmanager
def no_foreign_wait() -> Iterator[None]:
    """Like `fail_fast`, but this process's own writers are waited for (they hold the lock for
    milliseconds); a write that would wait for another connection's lock raises `LockedElsewhere`
    before writing. Inside `fail_fast` (on an event loop) it stays `fail_fast`."""
    previous = getattr(_inline, "active", False)
    _inline.active = previous if previous is True else "elsewhere"
    try:
        yield
    finally:
        _inline.active = previous


def default_db_target() -> str | Path:
    """`$TASKQUEUE_DB` (a file path or a `postgresql://` URL), else the default file."""
    env = os.environ.get("TASKQUEUE_DB")
    if env and is_postgres_url(env):
        return env
    return default_db_path()


def default_db_path() -> Path:
    """`$TASKQUEUE_DB`, else `$XDG_DATA_HOME/mcp-taskqueue/tasks.db` (XDG default `~/.local/share`)."""
    env = os.environ.get("TASKQUEUE_DB")
    if env and not is_postgres_url(env):
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "mcp-taskqueue" / "tasks.db"


def default_timeout() -> float:
    """`$TASKQUEUE_STORE_TIMEOUT` seconds, else DEFAULT_TIMEOUT."""
    env = os.environ.get("TASKQUEUE_STORE_TIMEOUT")
    try:
        value = float(env) if env else DEFAULT_TIMEOUT
    except ValueError:
        raise StoreUnavailable(f"TASKQUEUE_STORE_TIMEOUT={env!r} is not a number of seconds") from None
    return value if value > 0 else DEFAULT_TIMEOUT


def _code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def _is_busy(exc: sqlite3.Error) -> bool:
    return _code(exc) in (SQLITE_BUSY, SQLITE_LOCKED) or "locked" in str(exc).lower()


class Store:
    """The SQLite file behind a queue: connections, migrations, transactions, deadlines (store/contract.py)."""

    engine = "sqlite"

    def __init__(self, path: str | os.PathLike[str] | None = None, *, timeout: float | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_db_path()
        self.description = str(self.path)
        self.timeout = timeout if timeout is not None else default_timeout()
        self.memory = str(self.path) == ":memory:"
        self._lock = threading.RLock()  # serialises use of the write connection
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._full_at: int | None = None  # free bytes when a write last failed for a full disk
        if not self.memory:
            self._prepare_folder()
            self._quick_check()
        try:
            self._conn = self._connect()
            self._configure()
            self.db = Database(self._conn)
            self._migrate()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from None
        self._identity = None if self.memory else files.identity(self.path)

    # --- opening ---------------------------------------------------------------------------

    def _prepare_folder(self) -> None:
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create the folder {folder} for the database: {exc.strerror}; "
                "create it, or choose another path with --db"
            ) from None
        if files.read_only(folder):
            raise StoreUnavailable(
                f"the database {self.path} is on a read-only filesystem ({files.device_of(self.path)}); "
                "remount it read-write, or choose another path with --db"
            )
        if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
            raise StoreUnavailable(
                f"cannot read and write the folder {folder} (SQLite keeps its -wal/-shm files beside "
                "the database); fix its permissions, or choose another path with --db"
            )
        if self.path.exists() and not os.access(self.path, os.R_OK | os.W_OK):
            raise StoreUnavailable(
                f"the database {self.path} is not readable and writable by this user; "
                "fix its permissions (chmod/chown), or choose another path with --db"
            )

    def _quick_check(self) -> None:
        """Refuse a damaged file before anything writes to it (query_only: this never writes)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        try:
            conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=self.timeout)
            try:
                conn.execute("PRAGMA query_only = ON")
                result = [str(row[0]) for row in conn.execute("PRAGMA quick_check(3)")]
            finally:
                conn.close()
        except sqlite3.Error as exc:
            if _is_busy(exc):
                raise StoreBusy(f"waited {self.timeout:g} s to read {self.path} at start-up; try again") from None
            result = [str(exc)]
        if result != ["ok"]:
            raise StoreUnavailable(
                f"the database {self.path} is damaged ({'; '.join(result)[:200]}); it was not written to. "
                f"Move it aside and restore the last backup: mcp-taskqueue --db {self.path} restore BACKUP.db"
            )

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        text = str(exc)
        if "readonly" in text or "read-only" in text:
            hint = "the file or its folder is read-only; make both writable, or choose another path with --db"
        elif "unable to open" in text:
            hint = "check that the folder exists and is writable, or choose another path with --db"
        elif _code(exc) == SQLITE_FULL:
            hint = f"the disk is full; free space on {files.device_of(self.path)}"
        else:
            hint = "see `mcp-taskqueue --help` for --db, or restore the file from a backup"
        return StoreUnavailable(f"cannot open the database {self.path}: {text}; {hint}")

    def _connect(self, query_only: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        conn.row_factory = sqlite3.Row
        if query_only:
            conn.execute("PRAGMA query_only = ON")
        return conn

    def _configure(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # WAL lets readers (ours and other processes') proceed while one process writes.
        self._run(self._conn, lambda: conn.execute("PRAGMA journal_mode = WAL"), self._deadline(), "set WAL mode")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA temp_store = MEMORY")

    def _migrate(self) -> None:
        if not migrations.pending(self.db):
            return

        def apply(tx: Tx) -> None:
            migrations.apply(self.db)  # re-checks what is pending under the write lock

        self.write(apply, check_file=False)

    # --- deadlines ---------------------------------------------------------------------------

    def _deadline(self) -> float:
        return time.monotonic() + self.timeout

    def _run(self, conn: sqlite3.Connection, fn: Callable[[], T], deadline: float, what: str) -> T:
        """`fn()` until it stops finding the file locked, within `deadline`; else StoreBusy (or WouldBlock)."""
        fast = getattr(_inline, "active", False)
        delay = 0.005
        while True:
            remaining = deadline - time.monotonic()
            conn.execute(f"PRAGMA busy_timeout = {0 if fast else max(int(remaining * 1000), 0)}")
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                if fast == "elsewhere":
                    raise LockedElsewhere from exc
                if fast:
                    raise WouldBlock from exc
                if time.monotonic() + delay >= deadline:
                    raise StoreBusy(
                        f"waited {self.timeout:g} s to {what} on {self.path}, locked by another connection "
                        "(another process is writing or holds a lock); nothing was changed; try again shortly"
                    ) from None
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.2)

    @contextmanager
    def _writer(self, deadline: float) -> Iterator[sqlite3.Connection]:
        """The write connection, once this process's other writers are done with it (within `deadline`)."""
        fast = getattr(_inline, "active", False) is True  # "elsewhere": this process's writers are waited for
        acquired = self._lock.acquire(blocking=False) if fast else self._lock.acquire(timeout=self.timeout)
        if not acquired:
            if fast:
                raise WouldBlock
            raise StoreBusy(
                f"waited {self.timeout:g} s behind this server's other writers to {self.path}; "
                "nothing was changed; try again shortly"
            )
        try:
            yield self._conn
        finally:
            self._lock.release()

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A read connection of its own: never waits for a writer (WAL)."""
        if self.memory:  # a private in-memory database exists on one connection only
            with self._writer(self._deadline()) as conn:
                yield conn
            return
        with self._readers_lock:
            idle = self._readers.pop() if self._readers else None
        conn = idle if idle is not None else self._connect(query_only=True)
        try:
            yield conn
        finally:
            with self._readers_lock:
                self._readers.append(conn)

    def _transaction(self, conn: sqlite3.Connection, begin: str, fn: Callable[[Tx], T], deadline: float) -> T:
        what = "take the write lock" if begin != "BEGIN" else "read"
        writing = begin != "BEGIN"
        if writing:
            check_abandoned()
        self._run(conn, lambda: conn.execute(begin), deadline, what)
        try:
            value = fn(Tx(conn, write=writing))
            if writing:
                check_abandoned()  # the caller went away while we waited or worked: roll back
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if getattr(_inline, "active", False) and begin != "BEGIN":
            _inline.active = False  # a write committed: the rest of this call may wait
        return value

    # --- the store's operations --------------------------------------------------------------

    def write(self, fn: Callable[[Tx], T], *, check_file: bool = True) -> T:
        """Run `fn` in one write transaction; all of it commits or none of it does.

        Errors: StoreBusy past `timeout` seconds of waiting (nothing written), StoreLost when the
        file was deleted or replaced since it was opened, StoreFull when the disk is full.
        """
        if check_file:
            self.check_open_file()
        deadline = self._deadline()
        try:
            with self._writer(deadline) as conn:
                value = self._transaction(conn, "BEGIN IMMEDIATE", fn, deadline)
        except sqlite3.OperationalError as exc:
            if _code(exc) == SQLITE_FULL:
                self._full_at = files.free_bytes(self.path) or 0
                raise StoreFull(
                    f"the disk holding {self.path} is full; nothing was written. "
                    f"Free space on {files.device_of(self.path)}, then retry"
                ) from None
            raise
        self._full_at = None
        return value

    def read(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` against one consistent snapshot, on a read connection (never behind a writer)."""
        with self._reader() as conn:
            return self._transaction(conn, "BEGIN", fn, self._deadline())

    def check_open_file(self) -> None:
        """Raise StoreLost unless the path still names the file this store opened (same device and inode)."""
        if self.memory:
            return
        now = files.identity(self.path)
        if now != self._identity:
            state = "was deleted" if now is None else "was replaced by another file"
            raise StoreLost(
                f"the database {self.path} {state} while this process had it open; writes are refused "
                "so nothing more is lost. Restart the server (and restore the last backup if the data is gone)"
            )

    def health(self) -> Health:
        """Ready when the file is still ours, the disk has room for writes, and a read answers in time."""
        try:
            self.check_open_file()
            if self._full_at is not None:
                free = files.free_bytes(self.path) or 0
                if free < self._full_at + FREED_ENOUGH:
                    return Health(False, f"disk full: free space on {files.device_of(self.path)}", "store_full")
            self.read(lambda tx: tx.conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall())
        except (StoreLost, StoreBusy) as exc:
            return Health(False, str(exc), exc.code)
        except sqlite3.Error as exc:
            return Health(False, f"the database {self.path} does not answer: {exc}", "store_error")
        return Health(True)

    def run_inline(self, fn: Callable[[], T]) -> T:
        """Run `fn` on this thread if SQLite needs no waiting, else raise `WouldBlock` (nothing
        written). A thread hop costs ~170 µs, more than a hot-path call's SQLite work."""
        with fail_fast():
            return fn()

    def data_version(self) -> int:
        """Changes whenever another connection commits to the file (cheap: no table read)."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def explain(self, sql: str, params: tuple[object, ...] = ()) -> list[str]:
        """`EXPLAIN QUERY PLAN` details for a query, for tests and `benchmarks/`."""
        with self._lock:
            sql = Tx(self._conn).render(sql)
            rows = self._conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        return [str(row["detail"]) for row in rows]

    def integrity_check(self) -> str:
        """`PRAGMA integrity_check` on a read connection: 'ok', or the problems found (slow on big files)."""
        with self._reader() as conn:
            return "; ".join(str(row[0]) for row in conn.execute("PRAGMA integrity_check"))

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
        self.check_open_file()
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            with self._lock:

                def report(_status: int, remaining: int, total: int) -> None:
                    if progress is not None:
                        progress(total - remaining, total)

                self._run(
                    self._conn,
                    lambda: src.backup(self._conn, pages=256, progress=report),
                    self._deadline(),
                    "restore",
                )
        finally:
            src.close()
        self._migrate()

    def other_users(self) -> list[str] | None:
        """Other processes that have this database file open (None when the system cannot tell)."""
        found = [] if self.memory else files.holders(self.path)
        return None if found is None else [str(holder) for holder in found]

    def change_feed(self) -> ChangeFeed:
        """A separate read-only connection for noticing commits, this process's included."""
        return ChangeFeed(self.path)

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._lock:
            self._conn.close()


class ChangeFeed:
    """Tells a watcher cheaply whether the file changed, and what, without touching the store's lock.

    `PRAGMA data_version` moves when a connection *other than the one asking* commits, so
    a connection of its own sees the store's commits and other processes' alike. SQLite has one
    writer at a time, so `events.seq` grows in commit order and a high-water mark on it misses
    nothing; projects change without events, so their rows are compared (there are few).
    """

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA query_only = ON")
        self._lock = threading.Lock()
        self._version: int | None = None
        self._high_water: int | None = None
        self._projects: dict[str, str] = {}

    def poll(self) -> ChangeBatch:
        """What committed since the last call (nothing, cheaply, when the file did not change)."""
        version = self.data_version()
        if self._high_water is None:
            self._version = version
            self._high_water, self._projects = self.read(lambda tx: (tx.max_event_seq(), tx.project_fingerprints()))
            return ChangeBatch()
        if version == self._version:
            return ChangeBatch()
        batch, caught_up = self.read(self._read_changes)
        # remember the version only once it is fully read, so a failed or partial read is retried
        self._version = version if caught_up else None
        return batch

    def _read_changes(self, tx: Tx) -> tuple[ChangeBatch, bool]:
        assert self._high_water is not None
        batch = ChangeBatch()
        caught_up = False
        for _ in range(MAX_BATCHES_PER_POLL):
            rows = tx.events_since(self._high_water, EVENT_BATCH)
            batch.tasks.update((row["id"], row["project"], row["workflow_id"]) for row in rows)
            if rows:
                self._high_water = int(rows[-1]["seq"])
            if len(rows) < EVENT_BATCH:
                caught_up = True
                break
        if caught_up and (newest := tx.max_event_seq()) < self._high_water:
            # the history went backwards: the file was restored from a backup; start again from it
            self._high_water = newest
            batch.reset = True
        projects = tx.project_fingerprints()
        if projects != self._projects:
            batch.projects_listed = projects.keys() != self._projects.keys()
            batch.projects.update(name for name, value in projects.items() if self._projects.get(name) != value)
            self._projects = projects
        return batch, caught_up

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

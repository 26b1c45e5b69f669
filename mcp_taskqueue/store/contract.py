"""The storage contract: what `queue.py` and `server/` may rely on, whichever engine is behind it.

Two engines implement it: `store.database.Store` (one SQLite file, the embedded default) and
`store.postgres.PostgresStore` (one PostgreSQL database shared by many server processes and
hosts). `open_store` picks one from what names the database. The shape follows huey's
`BaseStorage`: a short interface, one class per engine, the SQL behind it.

Guarantees, for every engine, with any number of writers (threads, processes, hosts) at once:
- `write(fn)` runs `fn(tx)` as one transaction: all of its changes commit, or none do. The rows
  it reads by id (`Tx.get_task`, `Tx.get_task_by_seq`, `Tx.dependents`) cannot be changed by
  another writer before it commits, so a check followed by an update is safe. `fn` may run more
  than once (the engine retries it after a lock conflict), so it must have no effects outside
  `tx`. Contention that outlasts the bounded retries raises `StoreBusy`; any other database
  failure raises `StoreError`. Neither leaves a partial change.
- `read(fn)` runs `fn(tx)` against one consistent snapshot and writes nothing.
- Rows come back by name (`row["status"]`) with engine encodings undone to one form: JSON as
  compact text, times as epoch seconds (float), priorities as ranks 0..3; `store/rows.py` turns
  them into the domain models, so nothing above the store parses storage encodings.
- `change_feed().poll()` returns what committed since the previous poll, in commit order, from
  every process on the database (this one included); it never misses a commit, and a restore
  is reported as `reset`.
- `run_inline(fn)` runs a short call on the caller's thread only when that cannot wait on a lock
  or the network; otherwise it raises `WouldBlock` before doing anything, and the caller runs it
  in a worker thread instead. Which calls are short is marked where they are written
  (`@short_call`, a handful of index lookups); whether one runs inline is the store's answer.
  This is how the server knows how to run a call, without knowing the engine.
- `health()` says whether the store answers and may be written to, and if not, why (`Health`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from mcp_taskqueue.store.queries import Tx

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., object])


def short_call(fn: F) -> F:
    """Mark a queue operation as a handful of index lookups (the worker protocol's hot path): the
    server offers it to `Storage.run_inline` before handing it to a worker thread."""
    fn.short_call = True  # type: ignore[attr-defined]
    return fn


def is_short_call(fn: Callable[..., object]) -> bool:
    """Was `fn` (a function or a bound method) marked with `short_call`?"""
    return bool(getattr(fn, "short_call", False))


class WouldBlock(Exception):
    """`run_inline` would have had to wait (for a lock, or the network); nothing was done."""


@dataclass
class ChangeBatch:
    """What committed since the last poll of a change feed."""

    tasks: set[tuple[str, str, str | None]] = field(default_factory=set)  # (task id, project, workflow id)
    projects: set[str] = field(default_factory=set)  # projects created or changed
    projects_listed: bool = False  # a project was created: the list of projects changed
    reset: bool = False  # the history went backwards (a restore): everything may have changed

    def __bool__(self) -> bool:
        return bool(self.tasks or self.projects or self.projects_listed or self.reset)


@dataclass(frozen=True)
class Health:
    """What `/readyz` reports: whether the store answers and may be written to, and if not, why."""

    ready: bool
    reason: str = ""
    kind: str = ""  # the error kind writes get right now: store_lost, store_full, store_busy, ...


class ChangeFeed(Protocol):
    def poll(self) -> ChangeBatch:
        """What committed since the previous call (cheap when nothing did)."""
        ...

    def close(self) -> None: ...


class Storage(Protocol):
    """A database behind a queue (see the module docstring for the guarantees)."""

    engine: str  # "sqlite" or "postgresql"
    description: str  # where the data lives, for banners and messages (no password)

    def write(self, fn: Callable[[Tx], T]) -> T: ...

    def read(self, fn: Callable[[Tx], T]) -> T: ...

    def run_inline(self, fn: Callable[[], T]) -> T: ...

    def change_feed(self) -> ChangeFeed: ...

    def health(self) -> Health: ...

    def integrity_check(self) -> str:
        """ "ok", or the problems the engine's own consistency check found."""
        ...

    def backup_to(self, target: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None) -> None:
        """A consistent copy of the whole database in `target`, taken while others write."""
        ...

    def restore_from(self, source: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None) -> None:
        """Replace every row with a `backup_to` copy's; change feeds report it as `reset`."""
        ...

    def other_users(self) -> list[str] | None:
        """Other processes using this database right now, one description each ("pid 12 (...)"), or
        None when the engine cannot tell. A restore refuses while there are any."""
        ...

    def close(self) -> None: ...


def is_postgres_url(target: object) -> bool:
    """Does this database name mean PostgreSQL (a `postgresql://` or `postgres://` URL)?"""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))

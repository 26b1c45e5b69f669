"""The only place with SQL: the storage contract and its two engines, SQLite and PostgreSQL."""

from __future__ import annotations

import os

from mcp_taskqueue.store.abandon import Abandoned, abandon_on
from mcp_taskqueue.store.contract import (
    ChangeBatch,
    ChangeFeed,
    Storage,
    WouldBlock,
    is_postgres_url,
    is_short_call,
    short_call,
)
from mcp_taskqueue.store.database import (
    LockedElsewhere,
    Store,
    default_db_path,
    default_db_target,
    fail_fast,
    no_foreign_wait,
    waiting_allowed,
)
from mcp_taskqueue.store.queries import Tx

__all__ = [
    "Abandoned",
    "ChangeBatch",
    "ChangeFeed",
    "LockedElsewhere",
    "Storage",
    "Store",
    "Tx",
    "WouldBlock",
    "abandon_on",
    "default_db_path",
    "default_db_target",
    "fail_fast",
    "is_postgres_url",
    "is_short_call",
    "no_foreign_wait",
    "waiting_allowed",
    "open_store",
    "short_call",
]


def open_store(target: str | os.PathLike[str] | None = None, *, timeout: float | None = None) -> Storage:
    """The store a database name means: a `postgresql://` URL opens PostgreSQL (psycopg, the
    `postgres` extra), anything else (a path, `:memory:`, or None for `$TASKQUEUE_DB`, else the
    default file) opens SQLite. `timeout`: seconds a call may wait for the database (locks, a
    pooled connection) before StoreBusy; None is the engine's default."""
    name = default_db_target() if target is None else target
    if is_postgres_url(name):
        from mcp_taskqueue.store.postgres import PostgresStore

        return PostgresStore(str(name), timeout=timeout)
    return Store(name, timeout=timeout)

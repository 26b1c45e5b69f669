"""Holding a store's write lock from another connection, as another process would."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg


@contextmanager
def write_lock_held(db: Path | str) -> Iterator[None]:
    """Another connection holds the write lock until the block ends: SQLite's file lock
    (`BEGIN IMMEDIATE`), or on PostgreSQL a lock on the tasks table that every write waits for."""
    if isinstance(db, str) and db.startswith("postgresql://"):
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("BEGIN")
            conn.execute("LOCK TABLE tasks IN EXCLUSIVE MODE")
            try:
                yield
            finally:
                conn.execute("ROLLBACK")
        return
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()

"""What export and import need to know about a database's own tables, on either engine.

`archive.py` moves every table's rows in and out without naming their columns in code: it asks
the database. SQLite answers through `PRAGMA table_info`/`foreign_key_list`, PostgreSQL through
its system catalogs; a `Catalog` gives both answers one shape (`Column`), streams large results
(a server-side cursor on PostgreSQL, so neither engine holds a whole table in memory), orders
text the same way on both (byte order), and says which database errors mean "the file clashes
with the data" (Conflict), "the file holds a value the table refuses" (ValidationFailed), or
"try again" (left to the store's retry).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# Internal or derived tables: never exported row by row.
SKIPPED_PREFIXES = ("sqlite_", "_sqlite_", "tasks_fts", "_migrations")
# Text columns of other tables that hold JSON (besides JSON-typed ones and any whose default is '{}' or '[]').
ROW_JSON_COLUMNS = {"workflows": ("parameters", "refs"), "development": ("evidence",), "payload_schemas": ("schema",)}

Refusal = Literal["conflict", "refused"]


@dataclass(frozen=True)
class Column:
    name: str
    affinity: str  # INTEGER, REAL, NUMERIC, TEXT or BLOB (SQLite's names; PostgreSQL types map onto them)
    not_null: bool
    required: bool  # a record must give a non-null value: NOT NULL without a default, or a key
    json: bool
    key: int  # position in the primary key (1..), 0 when not part of it
    renumbered: bool  # the table's own sequence number: left out of exports, given anew on import


def _json_default(default: str | None) -> bool:
    return default is not None and default.split("::", 1)[0] in ("'{}'", "'[]'")


def quote(name: str) -> str:
    """`name` as an SQL identifier, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


class Catalog:
    """The engine-neutral questions; `SqliteCatalog` and `PgCatalog` answer them."""

    migrations_sql = ""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def migrations(self) -> list[str]:
        return [str(row[0]) for row in self.conn.execute(self.migrations_sql)]

    def table_names(self) -> list[str]:
        raise NotImplementedError

    def tables(self, skip: Sequence[str]) -> list[str]:
        """Tables to move row by row: not in `skip`, not internal, in byte order of their names."""
        return sorted(name for name in self.table_names() if name not in skip and not name.startswith(SKIPPED_PREFIXES))

    def columns(self, table: str) -> list[Column]:
        raise NotImplementedError

    def task_refs(self, table: str) -> list[str]:
        """Columns of `table` that hold a task's seq: exported as the task's id, which survives import."""
        raise NotImplementedError

    def order_by(self, columns: list[Column]) -> str:
        """Rows in primary-key order (all columns when there is no key), text compared byte by byte."""
        keys = sorted((c for c in columns if c.key), key=lambda c: c.key) or columns
        return ", ".join(self.ordered(c) for c in keys)

    def ordered(self, column: Column) -> str:
        return quote(column.name)

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Sequence[Any]]:
        """The result rows one at a time, never all of them in memory."""
        return iter(self.conn.execute(sql, params))

    def insert_returning_seq(self, sql: str, params: Sequence[Any]) -> int:
        return int(self.conn.execute(sql + " RETURNING seq", params).fetchone()[0])

    def check_foreign_keys(self, tables: Sequence[str]) -> tuple[str, Any, str] | None:
        """A row that points at a missing row, as (table, row, parent table), or None."""
        return None

    def refusal(self, exc: BaseException) -> Refusal | None:
        """How an import reports a database error: a clash, a refused value, or None (not a refusal:
        the error propagates, e.g. a lock conflict the store retries)."""
        raise NotImplementedError


class SqliteCatalog(Catalog):
    migrations_sql = "SELECT name FROM _sqlite_migrations ORDER BY id"

    def table_names(self) -> list[str]:
        rows = self.conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
        return [row[0] for row in rows if "VIRTUAL TABLE" not in (row[1] or "").upper()]

    def columns(self, table: str) -> list[Column]:
        info = self.conn.execute(f"PRAGMA table_info({quote(table)})").fetchall()
        keys = [row[1] for row in info if row[5] > 0]
        refs = self.task_refs(table)
        json_columns = set(ROW_JSON_COLUMNS.get(table, ()))
        out = []
        for _cid, name, declared, not_null, default, pk in info:
            affinity = _affinity(declared or "")
            out.append(
                Column(
                    name=name,
                    affinity=affinity,
                    not_null=bool(not_null) or pk > 0,
                    required=(bool(not_null) and default is None) or pk > 0,
                    json=name in json_columns or _json_default(default),
                    key=pk,
                    # a rowid alias: `seq INTEGER PRIMARY KEY` on its own
                    renumbered=keys == [name] and name not in refs and (declared or "").upper() == "INTEGER",
                )
            )
        return out

    def task_refs(self, table: str) -> list[str]:
        return [
            row[3]
            for row in self.conn.execute(f"PRAGMA foreign_key_list({quote(table)})")
            if row[2] == "tasks" and row[4] == "seq"
        ]

    def check_foreign_keys(self, tables: Sequence[str]) -> tuple[str, Any, str] | None:
        """SQLite checks foreign keys only where the connection enforces them: check again."""
        for table in tables:
            violation = self.conn.execute(f"PRAGMA foreign_key_check({quote(table)})").fetchone()
            if violation is not None:
                return (violation[0], violation[1], violation[2])
        return None

    def refusal(self, exc: BaseException) -> Refusal | None:
        if isinstance(exc, sqlite3.IntegrityError):
            return "conflict" if "UNIQUE" in str(exc) else "refused"
        if isinstance(exc, sqlite3.Error):
            text = str(exc).lower()
            busy = isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)
            return None if busy else "refused"
        return None


def _affinity(declared: str) -> str:
    """SQLite's type affinity for a declared column type (https://sqlite.org/datatype3.html 3.1)."""
    text = declared.upper()
    if "INT" in text:
        return "INTEGER"
    if "CHAR" in text or "CLOB" in text or "TEXT" in text:
        return "TEXT"
    if "BLOB" in text or not text:
        return "BLOB"
    if "REAL" in text or "FLOA" in text or "DOUB" in text:
        return "REAL"
    return "NUMERIC"


# PostgreSQL types as the SQLite affinities the import checks values against.
PG_AFFINITY = {
    "smallint": "INTEGER",
    "integer": "INTEGER",
    "bigint": "INTEGER",
    "double precision": "REAL",
    "real": "REAL",
    "numeric": "NUMERIC",
    "text": "TEXT",
    "character varying": "TEXT",
    "json": "TEXT",
    "jsonb": "TEXT",
}


class PgCatalog(Catalog):
    """PostgreSQL's catalogs, through the store's `?`-placeholder connection (`postgres.Connection`)."""

    migrations_sql = "SELECT name FROM _migrations ORDER BY name"
    _cursors = itertools.count(1)

    def table_names(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.relpersistence = 'p' "
            "AND c.relnamespace = current_schema()::regnamespace"
        )
        return [str(row[0]) for row in rows]

    def columns(self, table: str) -> list[Column]:
        rows = self.conn.execute(
            "SELECT a.attname, format_type(a.atttypid, NULL), a.attnotnull, pg_get_expr(d.adbin, d.adrelid), "
            "a.attidentity <> '', coalesce((SELECT k.n FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, n) "
            "WHERE i.indrelid = a.attrelid AND i.indisprimary AND k.attnum = a.attnum), 0) "
            "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = ?::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' "
            "ORDER BY a.attnum",
            (quote(table),),
        ).fetchall()
        refs = self.task_refs(table)
        keys = [row[0] for row in rows if row[5]]
        json_columns = set(ROW_JSON_COLUMNS.get(table, ()))
        return [
            Column(
                name=name,
                affinity=PG_AFFINITY.get(declared, "BLOB"),
                not_null=bool(not_null) or key > 0,
                required=(bool(not_null) and default is None and not identity) or (key > 0 and not identity),
                json=declared in ("json", "jsonb") or name in json_columns or _json_default(default),
                key=int(key),
                renumbered=bool(identity) and keys == [name] and name not in refs,
            )
            for name, declared, not_null, default, identity, key in rows
        ]

    def task_refs(self, table: str) -> list[str]:
        rows = self.conn.execute(
            "SELECT a.attname FROM pg_constraint c "
            "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
            "JOIN pg_attribute r ON r.attrelid = c.confrelid AND r.attnum = c.confkey[1] "
            "WHERE c.contype = 'f' AND c.conrelid = ?::regclass AND c.confrelid = 'tasks'::regclass "
            "AND cardinality(c.conkey) = 1 AND r.attname = 'seq' ORDER BY a.attnum",
            (quote(table),),
        )
        return [str(row[0]) for row in rows]

    def ordered(self, column: Column) -> str:
        # SQLite compares text byte by byte; so does the "C" collation, whatever the database's locale.
        return quote(column.name) + ('::text COLLATE "C"' if column.affinity == "TEXT" else "")

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Sequence[Any]]:
        """A server-side cursor: rows come over in batches while other queries run between them."""
        with self.conn.raw.cursor(name=f"archive_{next(self._cursors)}") as cur:
            cur.itersize = 50  # rows per round trip: a few MB at most even for large payloads
            cur.execute(self.conn.translate(sql), list(params) or None)
            yield from cur

    def refusal(self, exc: BaseException) -> Refusal | None:
        import psycopg.errors

        from mcp_taskqueue.store.postgres import RETRYABLE

        if isinstance(exc, psycopg.errors.UniqueViolation):
            return "conflict"
        if isinstance(exc, (*RETRYABLE, psycopg.OperationalError)) or not isinstance(exc, psycopg.Error):
            return None
        return "refused"


def catalog(engine: str, conn: Any) -> Catalog:
    """The catalog of a transaction's connection (`tx.conn`) on `engine` ("sqlite" or "postgresql")."""
    return PgCatalog(conn) if engine == "postgresql" else SqliteCatalog(conn)

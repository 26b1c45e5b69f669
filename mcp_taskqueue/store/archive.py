"""Moving a whole queue in and out of its file: JSON Lines export/import and checked backups.

Export is lossless: every column of every task (raw timestamps, version, attempts, lease),
its dependencies by id, every history event in global order, projects with their settings,
and the rows of any other table a later migration adds. Importing an export into an empty
database and exporting again gives the same lines, on either engine and across them: a queue
moves from SQLite to PostgreSQL and back with its user JSON unchanged byte for byte. Both
stream: export writes each record as it reads it (a server-side cursor on PostgreSQL), and
import reads the file twice, line by line (once to check its framing, once to insert), so
neither holds the queue in memory. What each engine's catalog says about its tables is asked
through `store/catalog.py`, so no table or column is named here twice.

Import is one transaction: a file that is truncated, malformed, names a task that already
exists, or holds a value the store could not read back (an unknown status, a priority that
is not a rank, a payload that is not an object, a dangling dependency, a column the table
lacks) is refused with its line number and changes nothing. Column names from the file are
only ever names the table already has, so a hostile file cannot inject SQL.

Backups use SQLite's online backup API, so they are safe while other processes write; the
copy is switched out of WAL mode so it is one self-contained file, and its sha256 is written
beside it (`<file>.sha256`, in `sha256sum` format) so `restore` can refuse a damaged copy.
On PostgreSQL a backup is `pg_dump --format=custom` (a consistent snapshot while servers
write), checked with `pg_restore --list`, restored with `pg_restore --clean`; the same
checksum file guards it. On both, a restore refuses while other processes use the database.
Point-in-time recovery and replicas stay the database's job.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from mcp_taskqueue.errors import Conflict, ValidationFailed
from mcp_taskqueue.models import PRIORITY_BY_RANK, ProjectSettings, Status
from mcp_taskqueue.store.catalog import Catalog, Column, catalog, quote
from mcp_taskqueue.store.contract import Storage
from mcp_taskqueue.store.queries import Tx

FORMAT = "mcp-taskqueue/export"
FORMAT_VERSION = 1
# Tables with their own record types; anything else a migration adds is exported row by row.
CORE_TABLES = ("projects", "tasks", "task_tags", "dependencies", "events")
# Kept by triggers on tasks and task_tags, so an import rebuilds them; rows for them in a file are ignored.
DERIVED_TABLES = ("task_counts", "ready_tags")
TASK_JSON_COLUMNS = ("payload", "result", "tags", "acceptance_criteria", "blocked_by")
# Task columns that hold epoch seconds; the store shows them as ISO-8601, which needs years 1..9999.
TASK_TIME_COLUMNS = ("run_at", "lease_expires_at", "created_at", "updated_at", "started_at", "finished_at")
# Exports list their records in this order; import relies on it (tasks exist before their events).
RECORD_ORDER = {"project": 1, "task": 2, "event": 3, "row": 4}
MIN_TIME = -62135596800.0  # 0001-01-01T00:00:00Z
MAX_TIME = 253402300800.0  # 10000-01-01T00:00:00Z
STATUSES = frozenset(status.value for status in Status)
CHECKSUM_SUFFIX = ".sha256"

Progress = Callable[[int, int], None]
# Where an import reads from: its lines, an open text file, or a path.
ImportSource = Iterable[str] | IO[str] | os.PathLike[str]


@dataclass
class ArchiveCounts:
    """What an export wrote or an import read, record type by record type."""

    projects: int = 0
    tasks: int = 0
    dependencies: int = 0
    events: int = 0
    rows: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "projects": self.projects,
            "tasks": self.tasks,
            "dependencies": self.dependencies,
            "events": self.events,
            "rows": dict(sorted(self.rows.items())),
        }


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --- export ------------------------------------------------------------------------------------


def _export_records(cat: Catalog, counts: ArchiveCounts, progress: Progress | None) -> Iterator[dict[str, Any]]:
    """Every record of the export, read from open cursors one row at a time (never fetchall)."""
    conn = cat.conn
    total_tasks = int(conn.execute("SELECT count(*) FROM tasks").fetchone()[0])
    total_events = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    total = total_tasks + total_events
    done = 0
    migrations = cat.migrations()
    yield {
        "type": "header",
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "migrations": migrations,
    }
    for row in cat.stream("SELECT name, description, settings, created_at FROM projects ORDER BY name"):
        counts.projects += 1
        yield {
            "type": "project",
            "name": row[0],
            "description": row[1],
            "settings": _loads(row[2]),
            "created_at": row[3],
        }
    task_columns = [c.name for c in cat.columns("tasks") if c.name != "seq"]
    select = ", ".join(f"t.{quote(c)}" for c in task_columns)
    for row in cat.stream(f"SELECT t.seq, {select} FROM tasks t ORDER BY t.seq"):
        record: dict[str, Any] = {"type": "task"}
        for name, value in zip(task_columns, tuple(row)[1:], strict=True):
            record[name] = _loads(value) if name in TASK_JSON_COLUMNS else value
        record["depends_on"] = [
            dep[0]
            for dep in conn.execute(
                "SELECT t.id FROM dependencies d JOIN tasks t ON t.seq = d.depends_on_seq "
                "WHERE d.task_seq = ? ORDER BY d.depends_on_seq",
                (row[0],),
            )
        ]
        counts.tasks += 1
        counts.dependencies += len(record["depends_on"])
        done += 1
        if progress is not None and done % 200 == 0:
            progress(done, total)
        yield record
    events = cat.stream(
        "SELECT t.id, e.at, e.actor, e.action, e.old, e.new FROM events e JOIN tasks t ON t.seq = e.task_seq "
        "ORDER BY e.seq"
    )
    for event in events:
        counts.events += 1
        done += 1
        if progress is not None and done % 500 == 0:
            progress(done, total)
        yield {
            "type": "event",
            "task_id": event[0],
            "at": event[1],
            "actor": event[2],
            "action": event[3],
            "old": _loads(event[4]),
            "new": _loads(event[5]),
        }
    for table in cat.tables(skip=CORE_TABLES + DERIVED_TABLES):
        refs = cat.task_refs(table)
        layout = cat.columns(table)
        columns = [c.name for c in layout if not c.renumbered]  # given anew on import, in the same order
        select = ", ".join(quote(c) for c in columns)
        for values in cat.stream(f"SELECT {select} FROM {quote(table)} ORDER BY {cat.order_by(layout)}"):
            row_dict = dict(zip(columns, tuple(values), strict=True))
            for column in refs:
                if row_dict[column] is not None:
                    found = conn.execute("SELECT id FROM tasks WHERE seq = ?", (row_dict[column],)).fetchone()
                    row_dict[column] = found[0] if found else None
            counts.rows[table] = counts.rows.get(table, 0) + 1
            yield {"type": "row", "table": table, "task_refs": refs, "row": row_dict}
    if progress is not None:
        progress(total, total)
    yield {"type": "footer", "counts": counts.as_dict()}


def export_jsonl(store: Storage, out: IO[str], progress: Progress | None = None) -> ArchiveCounts:
    """Write the whole queue as JSON Lines to `out`, from one consistent snapshot, a record at a time."""

    def op(tx: Tx) -> ArchiveCounts:
        counts = ArchiveCounts()
        for record in _export_records(catalog(store.engine, tx.conn), counts, progress):
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        return counts

    return store.read(op)


# --- import: first pass ------------------------------------------------------------------------


class _Refused(Exception):
    """A record the import cannot take; the caller adds the line number."""


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _records(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, decoded record) for each non-blank line, one line in memory at a time."""
    number = 0
    try:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValidationFailed(f"line {number} is not JSON: {exc.msg}") from None
            except RecursionError:
                raise ValidationFailed(f"line {number} is nested too deeply") from None
            if not isinstance(record, dict) or not isinstance(record.get("type"), str):
                raise ValidationFailed(f"line {number} is not a record object with a 'type'")
            yield number, record
    except UnicodeDecodeError:
        where = f" (after line {number})" if number else ""
        raise ValidationFailed(f"the file is not UTF-8 text{where}") from None


def scan_jsonl(lines: Iterable[str]) -> tuple[ArchiveCounts, int]:
    """Check an export's framing without keeping its records: header first, footer last, records
    in export order, and counts that match the footer. Returns the counts and the number of records."""
    seen = ArchiveCounts()
    footer: dict[str, Any] | None = None
    records = 0
    stage = 0
    for number, record in _records(lines):
        kind = record["type"]
        records += 1
        if records == 1:
            if kind != "header" or record.get("format") != FORMAT:
                raise ValidationFailed(f"not an {FORMAT} file: the first line must be its header")
            if record.get("version") != FORMAT_VERSION:
                raise ValidationFailed(f"export format version {_show(record.get('version'))} is not supported")
            continue
        if footer is not None:
            raise ValidationFailed(f"line {number}: a record after the footer")
        if kind == "footer":
            footer = record
            continue
        rank = RECORD_ORDER.get(kind)
        if rank is None:
            raise ValidationFailed(f"line {number}: unknown record type {_show(kind)}")
        if rank < stage:
            raise ValidationFailed(
                f"line {number}: a {kind} record out of order; an export lists projects, tasks, events, then rows"
            )
        stage = rank
        if kind == "project":
            seen.projects += 1
        elif kind == "task":
            depends_on = record.get("depends_on") or []
            if not isinstance(depends_on, list):
                raise ValidationFailed(f"line {number}: depends_on must be a list of task ids")
            seen.tasks += 1
            seen.dependencies += len(depends_on)
        elif kind == "event":
            seen.events += 1
        else:
            table = str(record.get("table"))
            seen.rows[table] = seen.rows.get(table, 0) + 1
    if records == 0:
        raise ValidationFailed(f"not an {FORMAT} file: the first line must be its header")
    if footer is None:
        raise ValidationFailed("the file is truncated: it has no footer line")
    if footer.get("counts") != seen.as_dict():
        raise ValidationFailed(
            f"the footer counts {_show(footer.get('counts'), 300)} do not match the records {seen.as_dict()}: "
            "the file is damaged or was edited"
        )
    return seen, records


# --- import: checking values against the schema ------------------------------------------------


def _layout(cat: Catalog, table: str) -> dict[str, Column]:
    """The columns a record for `table` may name, from the table itself (read once per table)."""
    return {c.name: c for c in cat.columns(table) if not c.renumbered}


def _check_time(name: str, value: Any) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if value is not None and not (number and MIN_TIME <= value < MAX_TIME):
        raise _Refused(f"{name} must be epoch seconds between years 1 and 9999, not {_show(value)}")


def _check_value(column: Column, value: Any) -> None:
    """Refuse a value SQLite would not store as the column's type, or the store could not read back."""
    if value is None:
        if column.not_null:
            raise _Refused(f"{column.name} is required and may not be null")
        return
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Refused(f"{column.name} must be of type {column.affinity.lower()}, not {type(value).__name__}")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise _Refused(f"{column.name} is out of the 64-bit integer range")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Refused(f"{column.name} must be a finite number")
    expected: tuple[type, ...] = {
        "INTEGER": (int,),
        "REAL": (int, float),
        "NUMERIC": (int, float),
        "TEXT": (str,),
    }.get(column.affinity, (int, float, str))
    if not isinstance(value, expected):
        raise _Refused(f"{column.name} must be of type {column.affinity.lower()}, not {_show(value)}")
    if column.json and isinstance(value, str):
        try:
            json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise _Refused(f"{column.name} must hold JSON text, not {_show(value)}") from None


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# What the store reads back from each JSON column of a task (queue.py builds a Task from them).
TASK_JSON_SHAPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "payload": (lambda v: v is None or isinstance(v, dict), "a JSON object or null"),
    "result": (lambda v: True, "any JSON value"),
    "tags": (_is_str_list, "a list of strings"),
    "acceptance_criteria": (_is_str_list, "a list of strings"),
    "blocked_by": (lambda v: v is None or _is_str_list(v), "a list of task ids or null"),
}


# --- import: second pass -----------------------------------------------------------------------


class _Importer:
    """Inserts checked records inside the import's one transaction, resolving task ids by query
    (tasks this import added have seq above `base`) so nothing grows with the file but the database."""

    def __init__(self, cat: Catalog, total: int, progress: Progress | None) -> None:
        self.cat = cat
        self.conn = conn = cat.conn
        self.total = total
        self.progress = progress
        self.counts = ArchiveCounts()
        self.base = int(conn.execute("SELECT coalesce(max(seq), 0) FROM tasks").fetchone()[0])
        self.extra = set(cat.tables(skip=CORE_TABLES + DERIVED_TABLES))
        self.layouts: dict[str, dict[str, Column]] = {}
        self.refs: dict[str, list[str]] = {}
        self.touched = {"projects"}
        self.linked = False
        conn.execute("CREATE TEMP TABLE _import_deps (line BIGINT NOT NULL, task_seq BIGINT NOT NULL, dep TEXT)")

    def layout(self, table: str) -> dict[str, Column]:
        if table not in self.layouts:
            self.layouts[table] = _layout(self.cat, table)
            self.refs[table] = self.cat.task_refs(table)
        return self.layouts[table]

    def run(self, records: Iterable[tuple[int, dict[str, Any]]]) -> ArchiveCounts:
        for done, (number, record) in enumerate(records, start=1):
            kind = record["type"]
            if kind in ("event", "row", "footer"):
                self._link_dependencies()
            try:
                if kind == "project":
                    self._project(record)
                elif kind == "task":
                    self._task(number, record)
                elif kind == "event":
                    self._event(record)
                elif kind == "row":
                    self._row(record)
            except _Refused as exc:
                raise ValidationFailed(f"line {number}: {exc}") from None
            except Conflict:
                raise
            except (ValueError, KeyError, TypeError, OverflowError) as exc:
                raise ValidationFailed(f"line {number}: malformed {kind} record: {exc!r}") from None
            except Exception as exc:
                refusal = self.cat.refusal(exc)
                if refusal is None:
                    raise
                what = str(exc).strip().replace("\n", " ")
                if refusal == "conflict":
                    raise Conflict(
                        f"line {number}: the {kind} clashes with one already in the database: {what}"
                    ) from None
                raise ValidationFailed(f"line {number}: the store refused the {kind}: {what}") from None
            if self.progress is not None and done % 200 == 0:
                self.progress(done, self.total)
        self._link_dependencies()
        self.conn.execute("DROP TABLE _import_deps")
        self._check_foreign_keys()
        if self.progress is not None:
            self.progress(self.total, self.total)
        return self.counts

    def _project(self, record: dict[str, Any]) -> None:
        name, description = record.get("name"), record.get("description")
        if not isinstance(name, str) or not name:
            raise _Refused("a project's name must be a non-empty string")
        if description is not None and not isinstance(description, str):
            raise _Refused("a project's description must be a string")
        _check_time("created_at", record.get("created_at"))
        if record.get("created_at") is None:
            raise _Refused("a project's created_at is required")
        settings = record.get("settings")
        if settings is not None and not isinstance(settings, dict):
            raise _Refused("a project's settings must be a JSON object")
        try:
            ProjectSettings.model_validate(settings or {})
        except ValidationError as exc:
            raise _Refused(f"the project's settings are invalid: {exc.errors()[0]['msg']}") from None
        self.conn.execute(
            "INSERT INTO projects (name, description, settings, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (name, description or "", _dumps(settings) or "{}", record["created_at"]),
        )
        self.counts.projects += 1

    def _task_values(self, record: dict[str, Any]) -> dict[str, Any]:
        """The task's column values, each checked to be one the store can read back."""
        layout = {name: column for name, column in self.layout("tasks").items() if name != "seq"}
        unknown = set(record) - set(layout) - {"type", "depends_on"}
        if unknown:
            raise _Refused(
                f"the task has fields the tasks table lacks ({', '.join(sorted(_show(u) for u in unknown))}); "
                "was it exported by a newer version?"
            )
        values: dict[str, Any] = {}
        for name, column in layout.items():
            if name not in record:
                if column.required:
                    raise _Refused(f"the task lacks the required field {name}")
                continue
            value = record[name]
            if name == "status" and (not isinstance(value, str) or value not in STATUSES):
                raise _Refused(f"status {_show(value)} is not one of {', '.join(sorted(STATUSES))}")
            if name == "priority" and (
                not isinstance(value, int) or isinstance(value, bool) or value not in PRIORITY_BY_RANK
            ):
                raise _Refused(
                    f"priority must be a rank 0..3 (0 critical, 3 low) as exports store it, not {_show(value)}"
                )
            if name in TASK_JSON_SHAPES:
                accepts, shape = TASK_JSON_SHAPES[name]
                if not accepts(value):
                    raise _Refused(f"{name} must be {shape}, not {_show(value)}")
                value = _dumps(value)
            elif name in TASK_TIME_COLUMNS:
                _check_time(name, value)
            _check_value(column, value)
            values[name] = value
        if not values["id"]:
            raise _Refused("the task's id is empty")
        return values

    def _task(self, number: int, record: dict[str, Any]) -> None:
        values = self._task_values(record)
        task_id = values["id"]
        depends_on = record.get("depends_on") or []
        if not _is_str_list(depends_on) or len(set(depends_on)) != len(depends_on) or task_id in depends_on:
            raise _Refused("depends_on must list distinct task ids other than the task's own")
        found = self.conn.execute("SELECT seq FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if found is not None and found[0] > self.base:
            raise _Refused(f"the file lists task {task_id!r} twice")
        if found is not None:
            raise Conflict(
                f"line {number}: task {task_id!r} already exists in this database; import into an empty database"
            )
        self.conn.execute(
            "INSERT INTO projects (name, description, settings, created_at) VALUES (?, '', '{}', ?) ON CONFLICT DO NOTHING",
            (values["project"], values["created_at"]),
        )
        columns = ", ".join(quote(c) for c in values)
        marks = ", ".join("?" * len(values))
        seq = self.cat.insert_returning_seq(f"INSERT INTO tasks ({columns}) VALUES ({marks})", list(values.values()))
        self.conn.executemany(
            "INSERT INTO task_tags (tag, task_seq) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(tag, seq) for tag in record.get("tags") or []],
        )
        # Dependencies may point forward in the file: linked once every task is in.
        self.conn.executemany(
            "INSERT INTO _import_deps (line, task_seq, dep) VALUES (?, ?, ?)",
            [(number, seq, d) for d in depends_on],
        )
        self.touched.update(("tasks", "task_tags"))
        self.counts.tasks += 1

    def _link_dependencies(self) -> None:
        if self.linked:
            return
        self.linked = True
        missing = self.conn.execute(
            "SELECT d.line, t.id, d.dep FROM _import_deps d JOIN tasks t ON t.seq = d.task_seq "
            "WHERE NOT EXISTS (SELECT 1 FROM tasks x WHERE x.id = d.dep AND x.seq > ?) ORDER BY d.line LIMIT 1",
            (self.base,),
        ).fetchone()
        if missing is not None:
            raise ValidationFailed(
                f"line {missing[0]}: task {missing[1]!r} depends on {missing[2]!r}, which the file does not contain"
            )
        cur = self.conn.execute(
            "INSERT INTO dependencies (task_seq, depends_on_seq) SELECT d.task_seq, x.seq "
            "FROM _import_deps d JOIN tasks x ON x.id = d.dep AND x.seq > ? ORDER BY d.line",
            (self.base,),
        )
        self.counts.dependencies += max(cur.rowcount, 0)
        self.touched.add("dependencies")

    def _imported_seq(self, task_id: Any, what: str) -> int:
        if isinstance(task_id, str):
            found = self.conn.execute("SELECT seq FROM tasks WHERE id = ? AND seq > ?", (task_id, self.base)).fetchone()
            if found is not None:
                return int(found[0])
        raise _Refused(f"{what} names task {_show(task_id)}, which the file does not contain")

    def _event(self, record: dict[str, Any]) -> None:
        seq = self._imported_seq(record.get("task_id"), "the event")
        at, actor, action = record.get("at"), record.get("actor"), record.get("action")
        if at is None:
            raise _Refused("an event's at is required")
        _check_time("at", at)
        if actor is not None and not isinstance(actor, str):
            raise _Refused("an event's actor must be a string or null")
        if not isinstance(action, str) or not action:
            raise _Refused("an event's action must be a non-empty string")
        self.conn.execute(
            "INSERT INTO events (task_seq, at, actor, action, old, new) VALUES (?, ?, ?, ?, ?, ?)",
            (seq, at, actor, action, _dumps(record.get("old")), _dumps(record.get("new"))),
        )
        self.touched.add("events")
        self.counts.events += 1

    def _row(self, record: dict[str, Any]) -> None:
        table = record.get("table")
        if table in DERIVED_TABLES:
            return  # rebuilt by triggers as the tasks went in
        if not isinstance(table, str) or table not in self.extra:
            raise _Refused(f"the file has rows for table {_show(table)}, which this database lacks")
        layout = self.layout(table)
        refs = self.refs[table]
        row = record.get("row")
        if not isinstance(row, dict):
            raise _Refused("a row record's row must be an object of column values")
        if "task_refs" in record and sorted(record["task_refs"] or []) != sorted(refs):
            raise _Refused(f"the file's task_refs for {table} do not match this database's ({', '.join(refs)})")
        unknown = set(row) - set(layout)
        if unknown:
            raise _Refused(f"table {table} has no column {', '.join(sorted(_show(u) for u in unknown))}")
        values = dict(row)
        for ref in refs:
            if values.get(ref) is not None:
                values[ref] = self._imported_seq(values[ref], f"{table}.{ref}")
        for name, column in layout.items():
            if name in values:
                _check_value(column, values[name])
            elif column.required:
                raise _Refused(f"a {table} row lacks the required column {name}")
        columns = ", ".join(quote(c) for c in values)
        marks = ", ".join("?" * len(values))
        self.conn.execute(f"INSERT INTO {quote(table)} ({columns}) VALUES ({marks})", list(values.values()))
        self.touched.add(table)
        self.counts.rows[table] = self.counts.rows.get(table, 0) + 1

    def _check_foreign_keys(self) -> None:
        """Refuse what foreign keys forbid even where enforcement was off for this connection."""
        violation = self.cat.check_foreign_keys(sorted(self.touched))
        if violation is not None:
            raise ValidationFailed(
                f"the import would leave a {violation[0]} row (rowid {violation[1]}) pointing at a missing "
                f"{violation[2]} row"
            )


@contextmanager
def _rereadable(source: ImportSource) -> Iterator[Callable[[], Iterable[str]]]:
    """A way to read `source` from its start again, for the two passes. A one-shot stream (a pipe)
    is spooled to a temporary file first rather than into memory."""
    if isinstance(source, str | bytes):
        raise TypeError("give import_jsonl the export's lines, an open text file or a Path, not one string")
    if isinstance(source, os.PathLike):
        with open(source, encoding="utf-8") as fh, _rereadable(fh) as again:
            yield again
        return
    if isinstance(source, Sequence):
        lines: Sequence[str] = source
        yield lambda: lines
        return
    seekable = getattr(source, "seekable", None)
    if callable(seekable) and seekable():
        stream: Any = source
        start = stream.tell()

        def rewind() -> Iterable[str]:
            stream.seek(start)
            return stream  # type: ignore[no-any-return]

        yield rewind
        return
    with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        try:
            for line in source:
                spool.write(line if line.endswith("\n") else line + "\n")
        except UnicodeError:  # undecodable bytes, or the surrogates a lenient stdin turns them into
            raise ValidationFailed("the input is not UTF-8 text") from None
        spool.seek(0)
        with _rereadable(spool) as again:
            yield again


def import_jsonl(store: Storage, source: ImportSource, progress: Progress | None = None) -> ArchiveCounts:
    """Load an export into `store` in one transaction: all of it, or (on any error) nothing.

    `source` is the export's lines (a list), an open text file, or a Path; it is read twice, line by
    line: once to check its framing and counts, then inside the transaction to check and insert."""
    with _rereadable(source) as lines:
        _, total = scan_jsonl(lines())

        def op(tx: Tx) -> ArchiveCounts:
            return _Importer(catalog(store.engine, tx.conn), total, progress).run(_records(lines()))

        return store.write(op)


# --- backup and restore -------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_path(path: str | os.PathLike[str]) -> Path:
    return Path(str(path) + CHECKSUM_SUFFIX)


def backup(store: Storage, target: str | os.PathLike[str], progress: Progress | None = None) -> str:
    """Copy the live database to `target` as one standalone file; returns (and writes) its sha256."""
    target = Path(target)
    store.backup_to(target, progress)
    if store.engine == "sqlite":
        # A copy in WAL mode would need its -wal/-shm companions; rollback mode keeps it one file.
        conn = sqlite3.connect(str(target), isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = DELETE")
        finally:
            conn.close()
    digest = sha256_file(target)
    checksum_path(target).write_text(f"{digest}  {target.name}\n", encoding="utf-8")
    return digest


def verify_backup(path: str | os.PathLike[str]) -> str:
    """The file's sha256 if it matches its checksum file and passes `integrity_check`; else ValidationFailed."""
    path = Path(path)
    if not path.is_file():
        raise ValidationFailed(f"{path} does not exist")
    sums = checksum_path(path)
    if not sums.is_file():
        raise ValidationFailed(f"{path} has no checksum file {sums.name}; refusing an unverifiable backup")
    expected = sums.read_text(encoding="utf-8").split()[:1]
    digest = sha256_file(path)
    if expected != [digest]:
        raise ValidationFailed(f"{path} fails its checksum (sha256 {digest}, expected {''.join(expected) or 'none'})")
    if is_pg_dump(path):
        from mcp_taskqueue.store.postgres import verify_dump

        verify_dump(path)
        return digest
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()[0]
            has_tasks = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tasks'").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise ValidationFailed(f"{path} is not a readable SQLite database: {exc}") from None
    if result != "ok":
        raise ValidationFailed(f"{path} fails integrity_check: {result}")
    if has_tasks is None:
        raise ValidationFailed(f"{path} is a SQLite database but not an mcp-taskqueue store")
    return digest


def is_pg_dump(path: str | os.PathLike[str]) -> bool:
    """Is this file a `pg_dump --format=custom` archive (a PostgreSQL store's backup)?"""
    with open(path, "rb") as fh:
        return fh.read(5) == b"PGDMP"


def restore(
    store: Storage, source: str | os.PathLike[str], progress: Progress | None = None, *, force: bool = False
) -> str:
    """Replace the store's contents with a verified backup; refuses a file that fails either check,
    and a backup of the other engine.

    Refuses (Conflict) while any other process uses the database, naming them: restoring under a
    running server rewinds work it has already acknowledged. On SQLite that is any process with the
    file open; on PostgreSQL any other connection of mcp-taskqueue to the database (servers, workers,
    CLIs: they name themselves in `application_name`). `force` skips that check.
    """
    digest = verify_backup(source)
    if is_pg_dump(source) != (store.engine == "postgresql"):
        kind = "a PostgreSQL" if is_pg_dump(source) else "an SQLite"
        raise ValidationFailed(
            f"{source} is {kind} backup and this is a {store.engine} store; move data between engines with "
            "export and import"
        )
    if not force:
        others = store.other_users()
        if others is None:
            raise Conflict(
                f"cannot tell whether other processes use {store.description} on this system; "
                "stop every server and worker using it, then pass --force"
            )
        if others:
            raise Conflict(
                f"{store.description} is in use by {len(others)} other process(es): {', '.join(others)}; "
                "stop them first (a restore under a running server rewinds work it already acknowledged), "
                "or pass --force"
            )
    store.restore_from(source, progress)
    return digest

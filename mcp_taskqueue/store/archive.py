"""Moving a whole queue in and out of its file: JSON Lines export/import and checked backups.

Export is lossless: every column of every task (raw timestamps, version, attempts, lease),
its dependencies by id, every history event in global order, projects with their settings,
and the rows of any other table a later migration adds. Importing an export into an empty
database and exporting again gives the same lines. Import is one transaction: a file that
is truncated, malformed, or names a task that already exists changes nothing.

Backups use SQLite's online backup API, so they are safe while other processes write; the
copy is switched out of WAL mode so it is one self-contained file, and its sha256 is written
beside it (`<file>.sha256`, in `sha256sum` format) so `restore` can refuse a damaged copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mcp_taskqueue.errors import Conflict, ValidationFailed
from mcp_taskqueue.store.database import Store
from mcp_taskqueue.store.queries import Tx

FORMAT = "mcp-taskqueue/export"
FORMAT_VERSION = 1
# Tables with their own record types; anything else a migration adds is exported row by row.
CORE_TABLES = ("projects", "tasks", "task_tags", "dependencies", "events")
# Derived or internal tables that are rebuilt, never exported.
SKIPPED_PREFIXES = ("sqlite_", "_sqlite_", "tasks_fts", "task_counts", "ready_tags")  # derived: triggers rebuild them
TASK_JSON_COLUMNS = ("payload", "result", "tags", "acceptance_criteria", "blocked_by")
CHECKSUM_SUFFIX = ".sha256"

Progress = Callable[[int, int], None]


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


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]


def _extra_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
    return [
        row[0]
        for row in rows
        if row[0] not in CORE_TABLES
        and not row[0].startswith(SKIPPED_PREFIXES)
        and "VIRTUAL TABLE" not in (row[1] or "").upper()
    ]


def _task_ref_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """Columns of `table` that hold a task's seq: exported as the task's id, which survives import."""
    return [
        row[3] for row in conn.execute(f'PRAGMA foreign_key_list("{table}")') if row[2] == "tasks" and row[4] == "seq"
    ]


def _row_layout(conn: sqlite3.Connection, table: str, refs: list[str]) -> tuple[list[str], str]:
    """Columns to export and the order to export rows in. A rowid alias (`seq INTEGER PRIMARY KEY`)
    is left out: it is renumbered on import, in the same order."""
    info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
    keys = sorted((row[5], row[1]) for row in info if row[5] > 0)
    rowid_alias = (
        len(keys) == 1
        and keys[0][1] not in refs
        and any(row[1] == keys[0][1] and row[2].upper() == "INTEGER" for row in info)
    )
    columns = [row[1] for row in info if not (rowid_alias and row[1] == keys[0][1])]
    order = ", ".join(f'"{name}"' for _, name in keys) if keys else ", ".join(f'"{c}"' for c in columns)
    return columns, order


# --- export ------------------------------------------------------------------------------------


def _export_records(
    conn: sqlite3.Connection, counts: ArchiveCounts, progress: Progress | None
) -> Iterator[dict[str, Any]]:
    total_tasks = int(conn.execute("SELECT count(*) FROM tasks").fetchone()[0])
    total_events = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    total = total_tasks + total_events
    done = 0
    migrations = [row[0] for row in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    yield {
        "type": "header",
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "migrations": migrations,
    }
    for row in conn.execute("SELECT name, description, settings, created_at FROM projects ORDER BY name"):
        counts.projects += 1
        yield {
            "type": "project",
            "name": row[0],
            "description": row[1],
            "settings": _loads(row[2]),
            "created_at": row[3],
        }
    task_columns = [c for c in _columns(conn, "tasks") if c != "seq"]
    select = ", ".join(f't."{c}"' for c in task_columns)
    for row in conn.execute(f"SELECT t.seq, {select} FROM tasks t ORDER BY t.seq").fetchall():
        record: dict[str, Any] = {"type": "task"}
        for name, value in zip(task_columns, row[1:], strict=True):
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
    events = conn.execute(
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
    for table in _extra_tables(conn):
        refs = _task_ref_columns(conn, table)
        columns, order = _row_layout(conn, table, refs)
        select = ", ".join(f'"{c}"' for c in columns)
        for values in conn.execute(f'SELECT {select} FROM "{table}" ORDER BY {order}').fetchall():
            row_dict = dict(zip(columns, values, strict=True))
            for column in refs:
                if row_dict[column] is not None:
                    found = conn.execute("SELECT id FROM tasks WHERE seq = ?", (row_dict[column],)).fetchone()
                    row_dict[column] = found[0] if found else None
            counts.rows[table] = counts.rows.get(table, 0) + 1
            yield {"type": "row", "table": table, "task_refs": refs, "row": row_dict}
    if progress is not None:
        progress(total, total)
    yield {"type": "footer", "counts": counts.as_dict()}


def export_jsonl(store: Store, out: IO[str], progress: Progress | None = None) -> ArchiveCounts:
    """Write the whole queue as JSON Lines to `out`, from one consistent snapshot."""

    def op(tx: Tx) -> ArchiveCounts:
        counts = ArchiveCounts()
        for record in _export_records(tx.conn, counts, progress):
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        return counts

    return store.read(op)


# --- import ------------------------------------------------------------------------------------


def parse_jsonl(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Decode and check the framing of an export: header first, footer last, counts that match."""
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValidationFailed(f"line {number} is not JSON: {exc.msg}") from None
        if not isinstance(record, dict) or not isinstance(record.get("type"), str):
            raise ValidationFailed(f"line {number} is not a record object with a 'type'")
        records.append(record)
    if not records or records[0]["type"] != "header" or records[0].get("format") != FORMAT:
        raise ValidationFailed(f"not an {FORMAT} file: the first line must be its header")
    if records[0].get("version") != FORMAT_VERSION:
        raise ValidationFailed(f"export format version {records[0].get('version')!r} is not supported")
    if records[-1]["type"] != "footer":
        raise ValidationFailed("the file is truncated: it has no footer line")
    seen = ArchiveCounts()
    for record in records[1:-1]:
        kind = record["type"]
        if kind == "project":
            seen.projects += 1
        elif kind == "task":
            seen.tasks += 1
            seen.dependencies += len(record.get("depends_on") or [])
        elif kind == "event":
            seen.events += 1
        elif kind == "row":
            seen.rows[str(record.get("table"))] = seen.rows.get(str(record.get("table")), 0) + 1
        else:
            raise ValidationFailed(f"unknown record type {kind!r}")
    if records[-1].get("counts") != seen.as_dict():
        raise ValidationFailed(
            f"the footer counts {records[-1].get('counts')} do not match the records {seen.as_dict()}: "
            "the file is damaged or was edited"
        )
    return records


def _insert(conn: sqlite3.Connection, table: str, values: dict[str, Any]) -> int:
    columns = ", ".join(f'"{c}"' for c in values)
    marks = ", ".join("?" * len(values))
    cur = conn.execute(f'INSERT INTO "{table}" ({columns}) VALUES ({marks})', list(values.values()))
    return int(cur.lastrowid or 0)


def _import_records(
    conn: sqlite3.Connection, records: list[dict[str, Any]], progress: Progress | None
) -> ArchiveCounts:
    counts = ArchiveCounts()
    task_columns = set(_columns(conn, "tasks")) - {"seq"}
    tasks = [r for r in records if r["type"] == "task"]
    total = len(records)
    ids = [str(t.get("id")) for t in tasks]
    if len(set(ids)) != len(ids):
        raise ValidationFailed("the file lists a task id twice")
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        clash = conn.execute(
            f"SELECT id FROM tasks WHERE id IN ({','.join('?' * len(chunk))}) LIMIT 1", chunk
        ).fetchone()
        if clash is not None:
            raise Conflict(f"task {clash[0]!r} already exists in this database; import into an empty database")
    done = 0
    for record in records:
        if record["type"] == "project":
            settings = _dumps(record.get("settings")) or "{}"
            conn.execute(
                "INSERT OR IGNORE INTO projects (name, description, settings, created_at) VALUES (?, ?, ?, ?)",
                (record["name"], record.get("description") or "", settings, record["created_at"]),
            )
            counts.projects += 1
    seqs: dict[str, int] = {}
    for record in tasks:
        unknown = set(record) - task_columns - {"type", "depends_on"}
        if unknown:
            raise ValidationFailed(
                f"task {record.get('id')!r} has columns this database lacks ({', '.join(sorted(unknown))}): "
                "the export comes from a newer version"
            )
        values = {
            k: (_dumps(v) if k in TASK_JSON_COLUMNS else v)
            for k, v in record.items()
            if k not in ("type", "depends_on")
        }
        conn.execute(
            "INSERT OR IGNORE INTO projects (name, description, settings, created_at) VALUES (?, '', '{}', ?)",
            (values["project"], values["created_at"]),
        )
        seq = _insert(conn, "tasks", values)
        seqs[record["id"]] = seq
        conn.executemany(
            "INSERT OR IGNORE INTO task_tags (tag, task_seq) VALUES (?, ?)",
            [(tag, seq) for tag in record.get("tags") or []],
        )
        counts.tasks += 1
        done += 1
        if progress is not None and done % 200 == 0:
            progress(done, total)
    for record in tasks:
        for dep in record.get("depends_on") or []:
            if dep not in seqs:
                raise ValidationFailed(f"task {record['id']!r} depends on {dep!r}, which the file does not contain")
            conn.execute(
                "INSERT INTO dependencies (task_seq, depends_on_seq) VALUES (?, ?)", (seqs[record["id"]], seqs[dep])
            )
            counts.dependencies += 1
    for record in records:
        if record["type"] == "event":
            task_id = record.get("task_id")
            if task_id not in seqs:
                raise ValidationFailed(f"an event names task {task_id!r}, which the file does not contain")
            conn.execute(
                "INSERT INTO events (task_seq, at, actor, action, old, new) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    seqs[task_id],
                    record["at"],
                    record.get("actor"),
                    record["action"],
                    json.dumps(record["old"], ensure_ascii=False) if record.get("old") is not None else None,
                    json.dumps(record["new"], ensure_ascii=False) if record.get("new") is not None else None,
                ),
            )
            counts.events += 1
            done += 1
            if progress is not None and done % 500 == 0:
                progress(done, total)
        elif record["type"] == "row":
            table = str(record["table"])
            if table not in _extra_tables(conn):
                raise ValidationFailed(f"the file has rows for table {table!r}, which this database lacks")
            row = dict(record["row"])
            for column in record.get("task_refs") or []:
                if row.get(column) is not None:
                    row[column] = seqs.get(row[column])
            try:
                _insert(conn, table, row)
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"a {table} row clashes with one already in the database: {exc}") from None
            counts.rows[table] = counts.rows.get(table, 0) + 1
    if progress is not None:
        progress(total, total)
    return counts


def import_jsonl(store: Store, lines: Iterable[str], progress: Progress | None = None) -> ArchiveCounts:
    """Load an export into `store` in one transaction: all of it, or (on any error) nothing."""
    records = parse_jsonl(lines)

    def op(tx: Tx) -> ArchiveCounts:
        try:
            return _import_records(tx.conn, records, progress)
        except (KeyError, TypeError, sqlite3.IntegrityError) as exc:
            raise ValidationFailed(f"the file has a malformed record: {exc!r}") from None

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


def backup(store: Store, target: str | os.PathLike[str], progress: Progress | None = None) -> str:
    """Copy the live database to `target` as one standalone file; returns (and writes) its sha256."""
    target = Path(target)
    store.backup_to(target, progress)
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


def restore(store: Store, source: str | os.PathLike[str], progress: Progress | None = None) -> str:
    """Replace the store's contents with a verified backup; refuses a file that fails either check."""
    digest = verify_backup(source)
    store.restore_from(source, progress)
    return digest

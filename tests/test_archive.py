"""Export/import and backup/restore on both engines (real SQLite files, a real PostgreSQL): lossless,
atomic, refusing damage, and moving a queue between the engines without changing a byte of its JSON."""

from __future__ import annotations

import hashlib
import io
import json
import re
import sqlite3
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_taskqueue.errors import Conflict, ValidationFailed
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Storage, archive, open_store


def populate(queue: TaskQueue) -> list[str]:
    """A queue with every kind of state: done, failed, cancelled, waiting, running, notes, unicode."""
    queue.create_project("alpha", "the first", {"coverage_threshold": 75.0})
    first = queue.create({"title": "design ✓", "project": "alpha", "tags": ["docs", "ü"], "payload": {"k": [1, 2.5]}})
    second = queue.create({"title": "build", "project": "alpha", "depends_on": [first.id], "priority": "high"})
    third = queue.create({"title": "later", "run_at": "2099-01-01T00:00:00Z", "acceptance_criteria": ["fast"]})
    doomed = queue.create({"title": "doomed", "max_attempts": 1, "kind": "flaky"})
    dropped = queue.create({"title": "dropped"})
    queue.add_note(first.id, 'a note with "quotes" and a newline\n')
    claimed = queue.claim("w1", kinds=["flaky"])
    assert claimed is not None and claimed.id == doomed.id
    queue.fail(doomed.id, "w1", "boom", retryable=False)
    claimed = queue.claim("w1", project="alpha")
    assert claimed is not None and claimed.id == first.id
    queue.complete(first.id, "w1", {"answer": 42, "text": "é"})
    queue.cancel(dropped.id, "not needed")
    running = queue.claim("w2", project="alpha")
    assert running is not None and running.id == second.id
    return [first.id, second.id, third.id, doomed.id, dropped.id]


@pytest.fixture
def fresh(new_db: Callable[..., Path | str]) -> Iterator[Callable[..., Storage]]:
    """Opens empty stores: of this test's engine, or of the one named (`fresh("postgres")`)."""
    made: list[Storage] = []

    def make(kind: str | None = None) -> Storage:
        made.append(open_store(new_db(kind)))
        return made[-1]

    yield make
    for store in made:
        store.close()


def export_text(store: Storage) -> str:
    buf = io.StringIO()
    archive.export_jsonl(store, buf)
    return buf.getvalue()


def body(text: str) -> list[str]:
    """The lines after the header (whose only difference is the export time)."""
    return text.splitlines()[1:]


def test_export_import_round_trip_is_lossless(queue: TaskQueue, tmp_path: Path, fresh: Callable[..., Storage]) -> None:
    ids = populate(queue)
    exported = export_text(queue.store)

    target = fresh()
    counts = archive.import_jsonl(target, exported.splitlines())
    copy = TaskQueue(target)

    assert counts.tasks == 5 and counts.dependencies == 1 and counts.projects == 2
    assert body(export_text(target)) == body(exported)
    for task_id in ids:
        assert copy.get(task_id) == queue.get(task_id)
        assert copy.history(task_id).events == [
            event.model_copy(update={"seq": e.seq})
            for event, e in zip(queue.history(task_id).events, copy.history(task_id).events, strict=True)
        ]
    assert copy.get_project("alpha").settings.coverage_threshold == 75.0
    assert copy.stats().by_status == queue.stats().by_status
    # Derived indexes are rebuilt: tags and full-text search work on the copy.
    assert [t.id for t in copy.list(tag="ü").tasks] == [ids[0]]
    assert [t.id for t in copy.list(query="design").tasks] == [ids[0]]
    target.close()


def test_a_queue_moves_between_the_engines_byte_for_byte(
    queue: TaskQueue, engine: str, fresh: Callable[..., Storage]
) -> None:
    """This engine -> the other -> this one again: every line of the export is the same, user JSON
    included byte for byte (key order as written, number spellings), with notes, dependencies,
    workflows and development records."""
    from mcp_taskqueue.development import Development
    from mcp_taskqueue.workflows import Workflows

    ids = populate(queue)
    odd = {"z": 1, "a": {"y": [1, 2.5, 1e100, -0.0], "b": None}, "é": "\u0000 ok", "m": {"k2": 1, "k1": 2}}
    keyed = queue.create({"title": "key order", "payload": odd, "tags": ["z", "a"]})
    workflow = Workflows(queue).create(
        spec={"name": "wf", "tasks": [{"ref": "b", "title": "B", "payload": {"second": 2, "first": 1}}]}
    )
    dev = Development(queue)
    feature = queue.create({"title": "feature"})
    dev.advance(feature.id, "planning")
    dev.advance(feature.id, "implementation", design_doc="docs/x.md")
    exported = export_text(queue.store)
    assert '{"z":1,"a":{"y":[1,2.5,1e+100,-0.0],"b":null}' in exported

    other = fresh("postgres" if engine == "sqlite" else "sqlite")
    archive.import_jsonl(other, exported.splitlines())
    there = export_text(other)
    assert body(there) == body(exported)
    back = fresh()
    archive.import_jsonl(back, there.splitlines())
    assert body(export_text(back)) == body(exported)

    moved = TaskQueue(other)
    assert json.dumps(moved.get(keyed.id).payload) == json.dumps(odd)
    assert [t.id for t in moved.list(query="order").tasks] == [keyed.id]
    for task_id in [*ids, keyed.id, feature.id]:
        assert moved.get(task_id) == queue.get(task_id)
        assert [(e.action, e.actor, e.new) for e in moved.history(task_id).events] == [
            (e.action, e.actor, e.new) for e in queue.history(task_id).events
        ]
    assert Workflows(moved).get(workflow.id) == Workflows(queue).get(workflow.id)
    assert Development(moved).status(feature.id) == dev.status(feature.id)
    assert moved.stats().by_status == queue.stats().by_status


def test_export_records_are_readable_json(queue: TaskQueue) -> None:
    ids = populate(queue)
    records = [json.loads(line) for line in export_text(queue.store).splitlines()]
    assert records[0]["type"] == "header" and records[-1]["type"] == "footer"
    tasks = {r["id"]: r for r in records if r["type"] == "task"}
    assert tasks[ids[1]]["depends_on"] == [ids[0]]
    assert tasks[ids[0]]["result"] == {"answer": 42, "text": "é"}
    assert tasks[ids[0]]["tags"] == ["docs", "ü"]
    notes = [r for r in records if r["type"] == "event" and r["action"] == "note"]
    assert notes and notes[0]["task_id"] == ids[0]


def test_import_of_existing_tasks_is_refused_and_changes_nothing(queue: TaskQueue) -> None:
    populate(queue)
    exported = export_text(queue.store)
    before = body(exported)
    with pytest.raises(Conflict):
        archive.import_jsonl(queue.store, exported.splitlines())
    assert body(export_text(queue.store)) == before


@pytest.mark.parametrize(
    "damage",
    [
        lambda lines: lines[:-1],  # truncated: no footer
        lambda lines: lines[:3] + lines[4:],  # a record missing: counts disagree
        lambda lines: [lines[0], "{not json", *lines[1:]],
        lambda lines: lines[1:],  # no header
    ],
    ids=["truncated", "missing-record", "garbage-line", "no-header"],
)
def test_damaged_export_is_refused_atomically(
    queue: TaskQueue, tmp_path: Path, damage: object, fresh: Callable[..., Storage]
) -> None:
    populate(queue)
    lines = export_text(queue.store).splitlines()
    target = fresh()
    with pytest.raises(ValidationFailed):
        archive.import_jsonl(target, damage(lines))  # type: ignore[operator]
    assert TaskQueue(target).stats().total == 0
    target.close()


def test_backup_writes_checksum_and_restores(queue: TaskQueue, tmp_path: Path) -> None:
    ids = populate(queue)
    snapshot = body(export_text(queue.store))
    copy = tmp_path / "backup.db"

    digest = archive.backup(queue.store, copy)

    assert digest == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert (tmp_path / "backup.db.sha256").read_text() == f"{digest}  backup.db\n"
    assert archive.verify_backup(copy) == digest
    assert not (tmp_path / "backup.db-wal").exists()

    # Work continues after the backup; restoring brings back exactly the backed-up state.
    queue.create({"title": "after the backup"})
    queue.cancel(ids[2])
    archive.restore(queue.store, copy)
    assert body(export_text(queue.store)) == snapshot
    assert queue.store.integrity_check() == "ok"


def test_restore_refuses_a_corrupted_backup(queue: TaskQueue, tmp_path: Path) -> None:
    populate(queue)
    copy = tmp_path / "backup.db"
    archive.backup(queue.store, copy)
    before = body(export_text(queue.store))

    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ValidationFailed, match="checksum"):
        archive.restore(queue.store, copy)

    # Even with a matching checksum, a file that is not a sound database is refused.
    copy.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    (tmp_path / "backup.db.sha256").write_text(hashlib.sha256(copy.read_bytes()).hexdigest() + "  backup.db\n")
    with pytest.raises(ValidationFailed):
        archive.restore(queue.store, copy)

    assert body(export_text(queue.store)) == before


def test_restore_refuses_missing_checksum_and_foreign_databases(queue: TaskQueue, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(ValidationFailed, match="no checksum"):
        archive.verify_backup(other)
    (tmp_path / "other.db.sha256").write_text(archive.sha256_file(other) + "  other.db\n")
    with pytest.raises(ValidationFailed, match="not an mcp-taskqueue store"):
        archive.verify_backup(other)


def test_round_trip_keeps_workflows(queue: TaskQueue, tmp_path: Path, fresh: Callable[..., Storage]) -> None:
    workflows = pytest.importorskip("mcp_taskqueue.workflows")
    spec = {
        "name": "release",
        "project": "alpha",
        "tasks": [{"ref": "build", "title": "Build"}, {"ref": "ship", "title": "Ship", "depends_on": ["build"]}],
    }
    created = workflows.Workflows(queue).create(spec=spec)
    exported = export_text(queue.store)
    assert any(json.loads(line).get("table") == "workflows" for line in exported.splitlines())

    target = fresh()
    archive.import_jsonl(target, exported.splitlines())
    copy = workflows.Workflows(TaskQueue(target))
    assert copy.get(created.id) == workflows.Workflows(queue).get(created.id)
    assert body(export_text(target)) == body(exported)
    target.close()


def test_progress_is_reported_to_the_end(queue: TaskQueue, tmp_path: Path) -> None:
    populate(queue)
    seen: list[tuple[int, int]] = []
    archive.export_jsonl(queue.store, io.StringIO(), lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1] > 0
    seen.clear()
    archive.backup(queue.store, tmp_path / "b.db", lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1] > 0


def test_round_trip_keeps_development_phases_and_reviews(
    queue: TaskQueue, tmp_path: Path, fresh: Callable[..., Storage]
) -> None:
    development = pytest.importorskip("mcp_taskqueue.development")
    dev = development.Development(queue)
    task = queue.create({"title": "feature"})
    dev.advance(task.id, "planning")
    dev.advance(task.id, "implementation", design_doc="docs/feature.md")
    dev.advance(task.id, "test_creation")
    dev.advance(task.id, "testing", coverage=95.0)
    dev.advance(task.id, "review", test_report={"passed": 3, "failed": 0})
    dev.add_review(task.id, "alice", 0.9, comment="good")
    exported = export_text(queue.store)

    target = fresh()
    archive.import_jsonl(target, exported.splitlines())
    copied = development.Development(TaskQueue(target)).status(task.id)
    assert copied == dev.status(task.id) and copied.phase == "review" and copied.approved_by == ["alice"]
    assert body(export_text(target)) == body(exported)
    target.close()


# --- hostile and damaged files: refused with the line, nothing changed ----------------------------


def records_of(store: Storage) -> list[dict[str, Any]]:
    return [json.loads(line) for line in export_text(store).splitlines()]


def reframed(records: list[dict[str, Any]]) -> list[str]:
    """The records as lines, with the footer's counts redone so only the edit itself is wrong."""
    counts: dict[str, Any] = {"projects": 0, "tasks": 0, "dependencies": 0, "events": 0, "rows": {}}
    for record in records[1:-1]:
        kind = record["type"]
        if kind == "row":
            counts["rows"][record["table"]] = counts["rows"].get(record["table"], 0) + 1
        else:
            counts[kind + "s"] += 1
        if kind == "task":
            counts["dependencies"] += len(record["depends_on"])
    counts["rows"] = dict(sorted(counts["rows"].items()))
    return [json.dumps(r) for r in records[:-1]] + [json.dumps({"type": "footer", "counts": counts})]


def line_of(records: list[dict[str, Any]], match: Callable[[dict[str, Any]], bool]) -> int:
    return next(number for number, record in enumerate(records, start=1) if match(record))


@pytest.fixture
def target(fresh: Callable[..., Storage]) -> Storage:
    """A second store that already holds work, so 'unchanged' means more than 'still empty'."""
    store = fresh()
    TaskQueue(store).create({"title": "already here", "project": "beta", "tags": ["keep"]})
    return store


def test_injected_column_name_is_refused_and_changes_nothing(queue: TaskQueue, target: Storage) -> None:
    populate(queue)
    records = records_of(queue.store)
    evil = (
        'project","kind","schema","updated_at") SELECT ?, \'k\', (SELECT group_concat(name) FROM sqlite_master), 1 --'
    )
    records.insert(-1, {"type": "row", "table": "payload_schemas", "task_refs": [], "row": {evil: "default"}})
    before = body(export_text(target))

    with pytest.raises(ValidationFailed, match=rf"^line {len(records) - 1}: table payload_schemas has no column"):
        archive.import_jsonl(target, reframed(records))

    assert body(export_text(target)) == before
    assert target.read(lambda tx: tx.conn.execute("SELECT count(*) FROM payload_schemas").fetchone()[0]) == 0
    # A table name is never SQL either: only tables the database has are written to.
    records[-2] = {"type": "row", "table": 'payload_schemas" (project) VALUES (1) --', "task_refs": [], "row": {}}
    with pytest.raises(ValidationFailed, match="which this database lacks"):
        archive.import_jsonl(target, reframed(records))
    assert body(export_text(target)) == before


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("priority", "high", "priority must be a rank 0..3"),
        ("priority", 7, "priority must be a rank 0..3"),
        ("status", "done", "status 'done' is not one of"),
        ("payload", "{not json", "payload must be a JSON object or null"),
        ("tags", "docs", "tags must be a list of strings"),
        ("created_at", "yesterday", "created_at must be epoch seconds"),
        ("run_at", 1e300, "run_at must be epoch seconds"),
        ("attempts", 1.5, "attempts must be of type integer"),
        ("title", None, "title is required"),
        ("seq", 1, "fields the tasks table lacks"),
    ],
)
def test_bad_task_value_is_refused_with_its_line(
    queue: TaskQueue, target: Storage, field: str, value: Any, problem: str
) -> None:
    ids = populate(queue)
    records = records_of(queue.store)
    number = line_of(records, lambda r: r.get("id") == ids[2])
    records[number - 1][field] = value
    before = body(export_text(target))

    with pytest.raises(ValidationFailed, match=rf"^line {number}: .*{re.escape(problem)}"):
        archive.import_jsonl(target, reframed(records))

    assert body(export_text(target)) == before


def test_missing_required_task_field_and_bad_event_are_refused(queue: TaskQueue, target: Storage) -> None:
    ids = populate(queue)
    records = records_of(queue.store)
    before = body(export_text(target))
    number = line_of(records, lambda r: r.get("id") == ids[0])
    broken = [dict(r) for r in records]
    del broken[number - 1]["priority"]
    with pytest.raises(ValidationFailed, match=rf"^line {number}: the task lacks the required field priority"):
        archive.import_jsonl(target, reframed(broken))

    number = line_of(records, lambda r: r["type"] == "event")
    broken = [dict(r) for r in records]
    broken[number - 1]["at"] = "noon"
    with pytest.raises(ValidationFailed, match=rf"^line {number}: at must be epoch seconds"):
        archive.import_jsonl(target, reframed(broken))

    number = line_of(records, lambda r: r["type"] == "project")
    broken = [dict(r) for r in records]
    broken[number - 1]["settings"] = {"coverage_threshold": 500}
    with pytest.raises(ValidationFailed, match=rf"^line {number}: the project's settings are invalid"):
        archive.import_jsonl(target, reframed(broken))
    assert body(export_text(target)) == before


def test_dangling_dependency_is_refused(queue: TaskQueue, target: Storage) -> None:
    ids = populate(queue)
    records = records_of(queue.store)
    number = line_of(records, lambda r: r.get("id") == ids[2])
    records[number - 1]["depends_on"] = ["T-not-in-the-file"]
    before = body(export_text(target))

    with pytest.raises(ValidationFailed, match=rf"^line {number}: task .* depends on 'T-not-in-the-file'"):
        archive.import_jsonl(target, reframed(records))

    assert body(export_text(target)) == before
    # A task that exists in the target but not in the file is no substitute.
    existing = TaskQueue(target).list().tasks[0].id
    records[number - 1]["depends_on"] = [existing]
    with pytest.raises(ValidationFailed, match="which the file does not contain"):
        archive.import_jsonl(target, reframed(records))
    assert body(export_text(target)) == before


def test_dependency_on_a_later_line_is_linked(queue: TaskQueue, tmp_path: Path, fresh: Callable[..., Storage]) -> None:
    ids = populate(queue)
    records = records_of(queue.store)
    first, second = line_of(records, lambda r: r.get("id") == ids[0]), line_of(records, lambda r: r.get("id") == ids[1])
    records[first - 1], records[second - 1] = records[second - 1], records[first - 1]

    copy = fresh()
    counts = archive.import_jsonl(copy, reframed(records))

    assert counts.dependencies == 1
    assert TaskQueue(copy).get(ids[1]).depends_on == [ids[0]]
    copy.close()


@pytest.mark.sqlite_only("switches SQLite's foreign-key enforcement off; PostgreSQL always enforces them")
def test_foreign_key_check_refuses_what_enforcement_let_through(
    queue: TaskQueue, tmp_path: Path, fresh: Callable[..., Storage]
) -> None:
    populate(queue)
    records = records_of(queue.store)
    records.insert(
        -1,
        {
            "type": "row",
            "table": "payload_schemas",
            "task_refs": [],
            "row": {"project": "nowhere", "kind": "k", "schema": "{}", "updated_at": 1.0},
        },
    )
    copy = fresh()
    # Our Store always enforces foreign keys (so the insert itself would be refused, with its line);
    # switch enforcement off, as a hand-opened connection has it, to reach the final check.
    copy._conn.execute("PRAGMA foreign_keys = OFF")  # type: ignore[attr-defined]

    with pytest.raises(ValidationFailed, match="payload_schemas row .* missing projects row"):
        archive.import_jsonl(copy, reframed(records))

    assert TaskQueue(copy).stats().total == 0
    copy.close()


def test_row_values_are_checked_against_their_table(queue: TaskQueue, target: Storage) -> None:
    populate(queue)
    records = records_of(queue.store)
    bad_rows = [
        ({"project": "alpha", "kind": "k", "schema": "{not json", "updated_at": 1.0}, "schema must hold JSON text"),
        ({"project": "alpha", "kind": "k", "updated_at": 1.0}, "lacks the required column schema"),
        ({"project": "alpha", "kind": ["k"], "schema": "{}", "updated_at": 1.0}, "kind must be of type text"),
        ({"project": "nowhere", "kind": "k", "schema": "{}", "updated_at": 1.0}, "(?i:foreign key constraint)"),
    ]
    before = body(export_text(target))
    for row, problem in bad_rows:
        edited = [*records[:-1], {"type": "row", "table": "payload_schemas", "task_refs": [], "row": row}, records[-1]]
        pattern = problem if problem.startswith("(?") else re.escape(problem)
        with pytest.raises(ValidationFailed, match=rf"^line {len(edited) - 1}: .*{pattern}"):
            archive.import_jsonl(target, reframed(edited))
    assert body(export_text(target)) == before


# --- streaming -------------------------------------------------------------------------------------


def test_import_reads_paths_open_files_and_one_shot_streams(
    queue: TaskQueue, tmp_path: Path, fresh: Callable[..., Storage]
) -> None:
    populate(queue)
    exported = export_text(queue.store)
    dump = tmp_path / "dump.jsonl"
    dump.write_text(exported, encoding="utf-8")

    sources: list[Callable[[], Any]] = [
        lambda: dump,  # a path
        lambda: dump.open(encoding="utf-8"),  # a seekable file, rewound for the second pass
        lambda: iter(exported.splitlines()),  # a one-shot stream (as a pipe is): spooled, not kept in memory
    ]
    for source in sources:
        copy = fresh()
        counts = archive.import_jsonl(copy, source())
        assert counts.tasks == 5 and counts.events > 0
        assert body(export_text(copy)) == body(exported)
        copy.close()

    (tmp_path / "latin1.jsonl").write_bytes(exported.encode("utf-8") + "é\n".encode("latin-1"))
    with pytest.raises(ValidationFailed, match="not UTF-8 text"):
        archive.import_jsonl(queue.store, tmp_path / "latin1.jsonl")


class CountingSink(io.TextIOBase):
    """Discards what is written, counting characters, so only the exporter's own memory is measured."""

    def __init__(self) -> None:
        self.chars = 0

    def write(self, text: str) -> int:
        self.chars += len(text)
        return len(text)


def test_export_and_import_stream_instead_of_holding_the_queue(
    queue: TaskQueue, tmp_path: Path, fresh: Callable[..., Storage]
) -> None:
    blob = "x" * 10_240
    for start in range(0, 2_000, 500):
        queue.create_many([{"title": f"t{i}", "payload": {"blob": blob, "i": i}} for i in range(start, start + 500)])
    total_payload = 2_000 * len(blob)  # 20 MiB

    sink = CountingSink()
    tracemalloc.start()
    try:
        counts = archive.export_jsonl(queue.store, sink)
        _, export_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert counts.tasks == 2_000 and sink.chars > total_payload
    assert export_peak < total_payload // 10, export_peak  # fetchall() alone held > 20 MiB

    dump = tmp_path / "dump.jsonl"
    with dump.open("w", encoding="utf-8") as fh:
        archive.export_jsonl(queue.store, fh)
    copy = fresh()
    tracemalloc.start()
    try:
        counts = archive.import_jsonl(copy, dump)
        _, import_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert counts.tasks == 2_000
    assert import_peak < total_payload // 10, import_peak  # the old list of records held > 20 MiB
    assert TaskQueue(copy).stats().total == 2_000
    copy.close()

"""Export/import and backup/restore on real SQLite files: lossless, atomic, and refusing damage."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from pathlib import Path

import pytest

from mcp_taskqueue.errors import Conflict, ValidationFailed
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store, archive


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


def export_text(store: Store) -> str:
    buf = io.StringIO()
    archive.export_jsonl(store, buf)
    return buf.getvalue()


def body(text: str) -> list[str]:
    """The lines after the header (whose only difference is the export time)."""
    return text.splitlines()[1:]


def test_export_import_round_trip_is_lossless(queue: TaskQueue, tmp_path: Path) -> None:
    ids = populate(queue)
    exported = export_text(queue.store)

    target = Store(tmp_path / "copy.db")
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
def test_damaged_export_is_refused_atomically(queue: TaskQueue, tmp_path: Path, damage: object) -> None:
    populate(queue)
    lines = export_text(queue.store).splitlines()
    target = Store(tmp_path / "copy.db")
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


def test_round_trip_keeps_workflows(queue: TaskQueue, tmp_path: Path) -> None:
    workflows = pytest.importorskip("mcp_taskqueue.workflows")
    spec = {
        "name": "release",
        "project": "alpha",
        "tasks": [{"ref": "build", "title": "Build"}, {"ref": "ship", "title": "Ship", "depends_on": ["build"]}],
    }
    created = workflows.Workflows(queue).create(spec=spec)
    exported = export_text(queue.store)
    assert any(json.loads(line).get("table") == "workflows" for line in exported.splitlines())

    target = Store(tmp_path / "copy.db")
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


def test_round_trip_keeps_development_phases_and_reviews(queue: TaskQueue, tmp_path: Path) -> None:
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

    target = Store(tmp_path / "copy.db")
    archive.import_jsonl(target, exported.splitlines())
    copied = development.Development(TaskQueue(target)).status(task.id)
    assert copied == dev.status(task.id) and copied.phase == "review" and copied.approved_by == ["alice"]
    assert body(export_text(target)) == body(exported)
    target.close()

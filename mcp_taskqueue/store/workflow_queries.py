"""SQL for workflows, dependency propagation, development phases, reviews and payload schemas.

A mixin of `Tx` (store/queries.py): the same transaction, kept in its own module so the
workflow concept's SQL reads in one place.
"""

from __future__ import annotations

import sqlite3
from typing import Any

WORKFLOW_COLUMNS = "seq, id, project, name, description, template, parameters, refs, created_at, cancelled_at"
# What get_workflow needs of each task; the tasks_workflow index serves the lookup.
WORKFLOW_TASK_COLUMNS = (
    "seq, id, title, status, priority, kind, worker, progress, phase, blocked_by, unmet_deps, started_at, finished_at"
)


class WorkflowQueries:
    """Reads and writes for workflows and the development workflow, on `Tx`'s connection."""

    conn: sqlite3.Connection

    def hint(self, index: str) -> str:
        raise NotImplementedError

    # --- workflows ------------------------------------------------------------------------

    def insert_workflow(self, values: dict[str, Any]) -> None:
        columns = ", ".join(values)
        marks = ", ".join("?" * len(values))
        self.conn.execute(f"INSERT INTO workflows ({columns}) VALUES ({marks})", list(values.values()))

    def get_workflow(self, workflow_id: str) -> sqlite3.Row | None:
        return self.conn.execute(  # type: ignore[no-any-return]
            f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ?", (workflow_id,)
        ).fetchone()

    def list_workflows(self, project: str | None, after_seq: int, limit: int) -> list[sqlite3.Row]:
        """Newest first, keyset-paginated by seq."""
        sql = f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE seq < ?"
        params: list[Any] = [after_seq]
        if project is not None:
            sql += " AND project = ?"
            params.append(project)
        return self.conn.execute(sql + " ORDER BY seq DESC LIMIT ?", [*params, limit]).fetchall()

    def workflow_ids(self, prefix: str, limit: int) -> list[str]:
        rows = self.conn.execute(
            "SELECT id FROM workflows WHERE id >= ? AND id < ? ORDER BY id LIMIT ?", (prefix, prefix + "\uffff", limit)
        )
        return [row[0] for row in rows]

    def set_workflow_refs(self, workflow_id: str, refs: str) -> None:
        self.conn.execute("UPDATE workflows SET refs = ? WHERE id = ?", (refs, workflow_id))

    def cancel_workflow_row(self, workflow_id: str, now: float) -> None:
        self.conn.execute("UPDATE workflows SET cancelled_at = ? WHERE id = ?", (now, workflow_id))

    def workflow_tasks(self, workflow_id: str) -> list[sqlite3.Row]:
        return self.conn.execute(
            f"SELECT {WORKFLOW_TASK_COLUMNS} FROM tasks WHERE workflow_id = ? ORDER BY seq", (workflow_id,)
        ).fetchall()

    def workflow_task_counts(self, workflow_id: str) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT status, count(*) FROM tasks WHERE workflow_id = ? GROUP BY status", (workflow_id,)
        )
        return {row[0]: row[1] for row in rows}

    def workflow_blocked_count(self, workflow_id: str) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM tasks WHERE workflow_id = ? AND blocked_by IS NOT NULL "
            "AND status IN ('pending', 'ready', 'running')",
            (workflow_id,),
        ).fetchone()
        return int(row[0])

    def workflow_edges(self, workflow_id: str) -> list[tuple[int, int]]:
        """(task_seq, depends_on_seq) for every dependency of the workflow's tasks."""
        rows = self.conn.execute(
            "SELECT d.task_seq, d.depends_on_seq FROM tasks t JOIN dependencies d ON d.task_seq = t.seq "
            "WHERE t.workflow_id = ?",
            (workflow_id,),
        )
        return [(row[0], row[1]) for row in rows]

    # --- dependency propagation -----------------------------------------------------------

    def dependency_states(self, task_seq: int) -> list[sqlite3.Row]:
        """The direct dependencies of a task with what decides whether they block it."""
        return self.conn.execute(
            "SELECT t.seq, t.id, t.status, t.blocked_by FROM dependencies d JOIN tasks t ON t.seq = d.depends_on_seq "
            "WHERE d.task_seq = ? ORDER BY t.seq",
            (task_seq,),
        ).fetchall()

    # --- task ids for completion ----------------------------------------------------------

    def task_ids(self, prefix: str, limit: int) -> list[str]:
        rows = self.conn.execute(
            "SELECT id FROM tasks WHERE id >= ? AND id < ? ORDER BY id DESC LIMIT ?", (prefix, prefix + "\uffff", limit)
        )
        return [row[0] for row in rows]

    def project_names(self, prefix: str, limit: int) -> list[str]:
        rows = self.conn.execute(
            "SELECT name FROM projects WHERE name >= ? AND name < ? ORDER BY name LIMIT ?",
            (prefix, prefix + "\uffff", limit),
        )
        return [row[0] for row in rows]

    # --- development workflow -------------------------------------------------------------

    def get_development(self, task_seq: int) -> sqlite3.Row | None:
        return self.conn.execute(  # type: ignore[no-any-return]
            "SELECT review_round, evidence FROM development WHERE task_seq = ?", (task_seq,)
        ).fetchone()

    def upsert_development(self, task_seq: int, review_round: int, evidence: str) -> None:
        self.conn.execute(
            "INSERT INTO development (task_seq, review_round, evidence) VALUES (?, ?, ?) "
            "ON CONFLICT(task_seq) DO UPDATE SET review_round = excluded.review_round, evidence = excluded.evidence",
            (task_seq, review_round, evidence),
        )

    def set_phase(self, task_seq: int, phase: str, now: float) -> None:
        self.conn.execute(
            "UPDATE tasks SET phase = ?, updated_at = ?, version = version + 1 WHERE seq = ?", (phase, now, task_seq)
        )

    def upsert_review(
        self, task_seq: int, round_: int, reviewer: str, score: float, approved: bool, comment: str | None, now: float
    ) -> None:
        """A reviewer's latest review in a round replaces their earlier one: one vote per reviewer."""
        self.conn.execute(
            "INSERT INTO reviews (task_seq, round, reviewer, score, approved, comment, at) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(task_seq, round, reviewer) DO UPDATE SET score = excluded.score, "
            "approved = excluded.approved, comment = excluded.comment, at = excluded.at",
            (task_seq, round_, reviewer, score, int(approved), comment, now),
        )

    def reviews(self, task_seq: int, round_: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT reviewer, score, approved, comment, at FROM reviews WHERE task_seq = ? AND round = ? ORDER BY at",
            (task_seq, round_),
        ).fetchall()

    def authorship(self, task_seq: int, name: str, actions: tuple[str, ...]) -> set[str]:
        """Which of `actions` (e.g. claimed, phase) `name` appears as the actor of in the task's history.

        The events_task index narrows to the task's own events; names compare trimmed, so a stray
        space does not make an author someone else.
        """
        marks = ", ".join("?" * len(actions))
        rows = self.conn.execute(
            f"SELECT DISTINCT action FROM events {self.hint('events_task')} "
            f"WHERE task_seq = ? AND action IN ({marks}) AND trim(actor) = ?",
            (task_seq, *actions, name.strip()),
        )
        return {row[0] for row in rows}

    # --- payload schemas ------------------------------------------------------------------

    def get_payload_schema(self, project: str, kind: str) -> str | None:
        row = self.conn.execute(
            "SELECT schema FROM payload_schemas WHERE project = ? AND kind = ?", (project, kind)
        ).fetchone()
        return None if row is None else str(row[0])

    def set_payload_schema(self, project: str, kind: str, schema: str | None, now: float) -> None:
        if schema is None:
            self.conn.execute("DELETE FROM payload_schemas WHERE project = ? AND kind = ?", (project, kind))
        else:
            self.conn.execute(
                "INSERT INTO payload_schemas (project, kind, schema, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(project, kind) DO UPDATE SET schema = excluded.schema, updated_at = excluded.updated_at",
                (project, kind, schema, now),
            )

    def payload_schema_kinds(self, project: str) -> list[str]:
        rows = self.conn.execute("SELECT kind FROM payload_schemas WHERE project = ? ORDER BY kind", (project,))
        return [row[0] for row in rows]

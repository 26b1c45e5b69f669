"""SQL for the live board (board.py): cards, filtered counts and the recent history behind the charts.

A mixin of `Tx` (store/queries.py), like `WorkflowQueries`: the same transaction, the board's
reads in one place.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Literal

# What a card shows: the summary plus lease, attempts and blocking marks.
CARD_COLUMNS = (
    "seq, id, title, status, priority, project, kind, worker, progress, version, attempts, max_attempts, "
    "lease_expires_at, blocked_by, unmet_deps, run_at, workflow_id, tags, updated_at"
)


class BoardQueries:
    """Reads for the board, on `Tx`'s connection."""

    conn: sqlite3.Connection

    def count_tasks(self, where: list[str], params: list[Any]) -> int:
        """How many tasks match WHERE terms built by `Tx.task_filters` (a filtered column's size)."""
        sql = "SELECT count(*) FROM tasks" + (" WHERE " + " AND ".join(where) if where else "")
        return int(self.conn.execute(sql, params).fetchone()[0])

    def recent_events(self, since: float, project: str | None, max_events: int) -> list[sqlite3.Row]:
        """Events at or after `since` (epoch seconds), newest first, at most `max_events` of them.

        Walks the events' primary key backwards from the newest, so its cost is bounded by
        `max_events` however long the history is; JSON columns stay text.
        """
        sql = (
            "SELECT e.seq, e.task_seq, e.at, e.action, e.old, e.new FROM events e "
            + ("JOIN tasks t ON t.seq = e.task_seq WHERE t.project = ? AND " if project is not None else "WHERE ")
            + "e.seq > (SELECT coalesce(max(seq), 0) FROM events) - ? AND e.at >= ? ORDER BY e.seq DESC"
        )
        params: tuple[Any, ...] = (max_events, since) if project is None else (project, max_events, since)
        return self.conn.execute(sql, params).fetchall()

    def events_counted_since(self, max_events: int) -> float | None:
        """When the store's newest `max_events` events begin (epoch seconds), if older events exist:
        `recent_events` sees nothing before it. None: it sees the whole history."""
        first, last = self.conn.execute("SELECT min(seq), max(seq) FROM events").fetchone()
        if first is None or first > last - max_events:
            return None
        row = self.conn.execute(
            "SELECT at FROM events WHERE seq > ? ORDER BY seq LIMIT 1", (last - max_events,)
        ).fetchone()
        return None if row is None else float(row[0])

    def projects_of(self, table: Literal["tasks", "workflows"], ids: Sequence[str]) -> dict[str, str]:
        """id -> project of the tasks or workflows with these ids (by their unique id index); unknown ids are left out."""
        out: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ", ".join("?" * len(chunk))
            rows = self.conn.execute(f"SELECT id, project FROM {table} WHERE id IN ({marks})", chunk).fetchall()
            out.update((row["id"], row["project"]) for row in rows)
        return out

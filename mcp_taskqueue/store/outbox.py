"""SQL for notifiers, the delivery outbox and one-owner leases (docs/notifications.md).

A mixin of `Tx` (store/queries.py), so outbox rows are written in the same transaction as the
change that caused them. Plain, portable SQL: no SQLite-only syntax beyond partial indexes
(tests/test_notify.py checks the dispatcher's queries use them).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

NOTIFIER_COLUMNS = (
    "seq, id, name, channel, target, events, filters, threshold, templates, options, secret, previous_secret, "
    "previous_secret_until, consecutive_failures, circuit_open_until, depth_above, created_at, updated_at"
)
DELIVERY_COLUMNS = (
    "o.seq, o.id, o.notifier_seq, o.event, o.order_key, o.payload, o.status, o.attempts, o.next_attempt_at, "
    "o.created_at, o.last_attempt_at, o.last_status_code, o.last_latency_ms, o.last_error, o.delivered_at"
)
# The oldest due delivery of each (notifier, order key) whose notifier's circuit is closed: a later
# event of the same task waits until the earlier one is delivered or dead. Ordered by due time so
# the partial index outbox_due serves both the range and the order (no scan of delivered rows).
DUE_SQL = (
    f"SELECT {DELIVERY_COLUMNS} FROM outbox o JOIN notifiers n ON n.seq = o.notifier_seq "
    "WHERE o.status = 'pending' AND o.next_attempt_at <= ? "
    "AND (n.circuit_open_until IS NULL OR n.circuit_open_until <= ?) "
    "AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.notifier_seq = o.notifier_seq "
    "AND p.order_key = o.order_key AND p.status = 'pending' AND p.seq < o.seq) "
    "ORDER BY o.next_attempt_at LIMIT ?"
)


class OutboxQueries:
    """Reads and writes for notifications, on `Tx`'s connection."""

    conn: sqlite3.Connection

    # --- notifiers ------------------------------------------------------------------------

    def insert_notifier(self, values: dict[str, Any], events: Sequence[str]) -> int:
        columns = ", ".join(values)
        marks = ", ".join("?" * len(values))
        seq = int(
            self.conn.execute(
                f"INSERT INTO notifiers ({columns}) VALUES ({marks}) RETURNING seq", list(values.values())
            ).fetchone()[0]
        )
        self.set_notifier_events(seq, events)
        return seq

    def update_notifier(self, seq: int, values: dict[str, Any], events: Sequence[str] | None = None) -> None:
        assignments = ", ".join(f"{column} = ?" for column in values)
        self.conn.execute(f"UPDATE notifiers SET {assignments} WHERE seq = ?", [*values.values(), seq])
        if events is not None:
            self.set_notifier_events(seq, events)

    def set_notifier_events(self, seq: int, events: Sequence[str]) -> None:
        self.conn.execute("DELETE FROM notifier_events WHERE notifier_seq = ?", (seq,))
        self.conn.executemany(
            "INSERT INTO notifier_events (event, notifier_seq) VALUES (?, ?)", [(e, seq) for e in events]
        )

    def get_notifier(self, key: str) -> sqlite3.Row | None:
        """By id or by name."""
        return self.conn.execute(  # type: ignore[no-any-return]
            f"SELECT {NOTIFIER_COLUMNS} FROM notifiers WHERE id = ? OR name = ?", (key, key)
        ).fetchone()

    def get_notifier_by_seq(self, seq: int) -> sqlite3.Row | None:
        return self.conn.execute(  # type: ignore[no-any-return]
            f"SELECT {NOTIFIER_COLUMNS} FROM notifiers WHERE seq = ?", (seq,)
        ).fetchone()

    def list_notifiers(self) -> list[sqlite3.Row]:
        return self.conn.execute(f"SELECT {NOTIFIER_COLUMNS} FROM notifiers ORDER BY seq").fetchall()

    def notifiers_for_events(self, events: Sequence[str]) -> list[sqlite3.Row]:
        """Notifiers subscribed to any of `events` (one probe of notifier_events per event)."""
        marks = ",".join("?" * len(events))
        return self.conn.execute(
            f"SELECT DISTINCT ne.event, n.seq, n.filters FROM notifier_events ne JOIN notifiers n ON n.seq = "
            f"ne.notifier_seq WHERE ne.event IN ({marks}) ORDER BY n.seq",
            list(events),
        ).fetchall()

    def delete_notifier(self, seq: int) -> int:
        """Remove a notifier with its subscriptions and deliveries; returns how many were still pending."""
        pending = self.conn.execute(
            "SELECT count(*) FROM outbox WHERE notifier_seq = ? AND status = 'pending'", (seq,)
        ).fetchone()[0]
        self.conn.execute("DELETE FROM outbox WHERE notifier_seq = ?", (seq,))
        self.conn.execute("DELETE FROM notifier_events WHERE notifier_seq = ?", (seq,))
        self.conn.execute("DELETE FROM notifiers WHERE seq = ?", (seq,))
        return int(pending)

    def delivery_counts(self, seq: int) -> dict[str, int]:
        rows = self.conn.execute("SELECT status, count(*) FROM outbox WHERE notifier_seq = ? GROUP BY status", (seq,))
        return {row[0]: row[1] for row in rows}

    def ready_count(self, projects: Sequence[str]) -> int:
        """Ready tasks, in these projects (all when empty), from the trigger-kept task_counts."""
        sql = "SELECT coalesce(sum(n), 0) FROM task_counts WHERE status = 'ready'"
        if projects:
            sql += f" AND project IN ({','.join('?' * len(projects))})"
        return int(self.conn.execute(sql, list(projects)).fetchone()[0])

    # --- the outbox -----------------------------------------------------------------------

    def insert_delivery(
        self, delivery_id: str, notifier_seq: int, event: str, order_key: str, payload: str, now: float
    ) -> None:
        self.conn.execute(
            "INSERT INTO outbox (id, notifier_seq, event, order_key, payload, status, attempts, next_attempt_at, "
            "created_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
            (delivery_id, notifier_seq, event, order_key, payload, now, now),
        )

    def due_deliveries(self, now: float, limit: int) -> list[sqlite3.Row]:
        return self.conn.execute(DUE_SQL, (now, now, limit)).fetchall()

    def next_due_at(self) -> float | None:
        row = self.conn.execute("SELECT min(next_attempt_at) FROM outbox WHERE status = 'pending'").fetchone()
        return None if row[0] is None else float(row[0])

    def record_attempt(self, seq: int, values: dict[str, Any]) -> None:
        """Store an attempt's outcome (status, attempts, response code, latency, error, next time)."""
        assignments = ", ".join(f"{column} = ?" for column in values)
        self.conn.execute(f"UPDATE outbox SET {assignments} WHERE seq = ?", [*values.values(), seq])

    def deliveries(self, notifier_seq: int, limit: int, status: str | None = None) -> list[sqlite3.Row]:
        """A notifier's deliveries, newest first."""
        sql = f"SELECT {DELIVERY_COLUMNS} FROM outbox o WHERE o.notifier_seq = ?"
        params: list[Any] = [notifier_seq]
        if status is not None:
            sql += " AND o.status = ?"
            params.append(status)
        return self.conn.execute(sql + " ORDER BY o.seq DESC LIMIT ?", [*params, limit]).fetchall()

    def requeue_deliveries(self, notifier_seq: int, ids: Sequence[str], statuses: Sequence[str], now: float) -> int:
        """Make deliveries pending again with fresh attempts (same id); by id, else every one in `statuses`."""
        reset = (
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, delivered_at = NULL "
            "WHERE notifier_seq = ?"
        )
        if ids:
            cur = self.conn.execute(reset + f" AND id IN ({','.join('?' * len(ids))})", [now, notifier_seq, *ids])
        else:
            cur = self.conn.execute(
                reset + f" AND status IN ({','.join('?' * len(statuses))})", [now, notifier_seq, *statuses]
            )
        return cur.rowcount

    def prune_delivered(self, before: float) -> int:
        cur = self.conn.execute("DELETE FROM outbox WHERE status = 'delivered' AND delivered_at < ?", (before,))
        return cur.rowcount

    # --- one owner at a time --------------------------------------------------------------

    def singleton_lease(self, name: str) -> sqlite3.Row | None:
        return self.conn.execute(  # type: ignore[no-any-return]
            "SELECT name, owner, expires_at FROM singleton_leases WHERE name = ?", (name,)
        ).fetchone()

    def take_singleton_lease(self, name: str, owner: str, now: float, expires_at: float, gone: str | None) -> bool:
        """Take or renew the lease `name` until `expires_at`, if it is free, expired, `owner`'s own, or held by
        the owner `gone` (a dead process). One statement: of two servers racing for it, one wins, on either engine
        (PostgreSQL re-checks the condition on the locked row)."""
        row = self.conn.execute(
            "INSERT INTO singleton_leases (name, owner, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
            "WHERE singleton_leases.owner = excluded.owner OR singleton_leases.expires_at < ? "
            "OR singleton_leases.owner = ? RETURNING owner",
            (name, owner, expires_at, now, gone or owner),
        ).fetchone()
        return row is not None

    def drop_singleton_lease(self, name: str, owner: str) -> None:
        self.conn.execute("DELETE FROM singleton_leases WHERE name = ? AND owner = ?", (name, owner))

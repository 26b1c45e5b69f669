"""SQL for the /metrics counters: history events counted by action since a sequence number.

Events are the one record every process on the file writes, so counting them counts claims,
completions, failures and lease expiries made by any server or CLI on the same store.
"""

from __future__ import annotations

from mcp_taskqueue.store.database import Store
from mcp_taskqueue.store.queries import Tx


def latest_event_seq(store: Store) -> int:
    """The newest event's seq (0 for an empty history): where counting starts."""
    return store.read(lambda tx: tx.max_event_seq())


def count_events_since(store: Store, after_seq: int, limit: int = 100_000) -> tuple[dict[str, int], int]:
    """Events after `after_seq` by action, and the seq to continue from.

    A range scan on the rowid: cheap however long the history is. At most `limit` events per call,
    so a scrape after a long pause stays bounded; the next call continues where this one stopped.
    """

    def run(tx: Tx) -> tuple[dict[str, int], int]:
        last = tx.conn.execute(
            "SELECT max(seq) FROM (SELECT seq FROM events WHERE seq > ? ORDER BY seq LIMIT ?)", (after_seq, limit)
        ).fetchone()[0]
        if last is None:
            return {}, after_seq
        rows = tx.conn.execute(
            "SELECT action, count(*) FROM events WHERE seq > ? AND seq <= ? GROUP BY action", (after_seq, last)
        ).fetchall()
        return {str(action): int(n) for action, n in rows}, int(last)

    return store.read(run)

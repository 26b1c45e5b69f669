"""Every SQL statement the queue runs, as methods of one transaction: the store contract's rows.

`queue.py` decides what should happen; these methods only read and write rows. The SQL here is
written once for both engines (SQLite and PostgreSQL, `store/postgres.py` overrides the few
statements that differ): `?` placeholders, `ON CONFLICT`, `RETURNING`. Rows behave like
`sqlite3.Row` (by name or position) on both; `store/rows.py` decodes them into domain values.

What every write method guarantees with several writers at once (the reason for each shape):
- a change that depends on a row's current value does the arithmetic or the check in the
  statement itself (`unmet_deps = unmet_deps - 1`, `UPDATE ... WHERE status = 'ready' RETURNING`),
  never a value read earlier and written back;
- inserts that may race use `INSERT ... ON CONFLICT ... RETURNING`, so the loser learns it lost;
- `insert_event` returns the seq of the event it wrote, never `max(seq)`;
- inside `Store.write` the rows a transaction reads by id are locked for it on PostgreSQL
  (`FOR UPDATE`), and the whole transaction is the write lock on SQLite, so read-check-write
  sequences of `queue.py` see no interleaved writer.
Each per-task query is served by an index from `migrations.py` (see tests/test_store.py).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from mcp_taskqueue.store.board_queries import BoardQueries
from mcp_taskqueue.store.outbox import OutboxQueries
from mcp_taskqueue.store.workflow_queries import WorkflowQueries

TASK_COLUMNS = (
    "id, project, title, description, kind, priority, status, payload, result, error, tags, parent_id, "
    "workflow_id, acceptance_criteria, phase, run_at, attempts, max_attempts, timeout_seconds, "
    "idempotency_key, worker, lease_seconds, lease_expires_at, progress, unmet_deps, blocked_by, version, "
    "created_at, updated_at, started_at, finished_at, lease_id"
)
SUMMARY_COLUMNS = "seq, id, title, status, priority, project, kind, worker, progress, version"

# The claim: highest priority (lowest rank), then oldest (lowest seq), among ready tasks.
CLAIM_SQL = "SELECT seq FROM tasks WHERE status = 'ready'{filters} ORDER BY priority, seq LIMIT 1"
# A claim filtered by tags walks one tag's ready tasks in claim order (ready_tags, kept by triggers).
TAG_CLAIM_SQL = (
    "SELECT rt.priority, rt.task_seq FROM ready_tags rt JOIN tasks ON tasks.seq = rt.task_seq "
    "WHERE rt.tag = ?{filters} ORDER BY rt.priority, rt.task_seq LIMIT 1"
)
# The sweep runs on every claim, so it must touch only due rows: the partial indexes hold exactly
# those, and INDEXED BY stops the planner preferring (status, priority), which would walk every
# pending or running task. Due work is taken one priority at a time (critical first) through
# (priority, time) partial indexes: a backlog of due `low` work never hides a due `critical` task.
EXPIRED_SQL = (
    "SELECT seq, id, attempts, max_attempts, worker, version FROM tasks {tasks_lease_rank} "
    "WHERE status = 'running' AND priority = ? AND lease_expires_at < ? ORDER BY lease_expires_at LIMIT ?{skip_locked}"
)
SWEEP_PROBE_SQL = (
    "SELECT EXISTS (SELECT 1 FROM tasks {tasks_lease} WHERE status = 'running' AND lease_expires_at < ?), "
    "EXISTS (SELECT 1 FROM tasks {tasks_due} WHERE status = 'pending' AND unmet_deps = 0 AND run_at <= ?)"
)
DUE_SQL = (
    "SELECT seq, id, version FROM tasks {tasks_due_rank} "
    "WHERE status = 'pending' AND unmet_deps = 0 AND priority = ? AND run_at <= ? ORDER BY run_at LIMIT ?{skip_locked}"
)
PRIORITY_RANKS = range(4)  # critical .. low: the sweep serves the best first
# Hard bound on the full-text query so a hostile one cannot make the search work hard.
MAX_QUERY = 200


MAX_TERMS = 16  # search terms used from one query; the rest are ignored
# One IN over a UNION, not two INs joined by OR: the matches drive the lookup by rowid (an OR would
# walk every task in claim order and test each against both lists).
SEARCH_SQL = (
    "seq IN (SELECT rowid FROM tasks_fts WHERE tasks_fts MATCH ? "
    "UNION SELECT rowid FROM tasks_fts_trigram WHERE tasks_fts_trigram MATCH ?)"
)
SHORT_TERM_LIMIT = 500  # trigrams a short term expands to; past it the term is common, see search_clause
SHORT_TERM_SQL = f"SELECT term FROM tasks_fts_trigram_terms WHERE term >= ? AND term < ? LIMIT {SHORT_TERM_LIMIT + 1}"
# A common short term is checked on the text itself (ASCII case folded, as SQLite's lower() does).
SUBSTRING_SQL = "instr(lower(title || ' ' || description), ?) > 0"
NO_MATCH = '"\uffff\uffff\uffff"'  # a trigram of noncharacters: what a short term with no expansion finds
# Letters, digits and combining marks (so Thai vowel signs and Indic matras stay inside their word).
WORD = re.compile(r"[\w\u0300-\u036f\u0e31-\u0e3a\u0e47-\u0e4e\u0900-\u0dff]+")


def search_terms(text: str) -> list[str]:
    """The terms of a free-text search (any script), each of which a match must contain; the
    engine decides how each is matched (whole word, or substring in scripts without spaces)."""
    return WORD.findall(text)[:MAX_TERMS]


def quote_term(term: str) -> str:
    """One FTS5 string token: any text, quotes doubled, so no input is a syntax error."""
    return '"' + term.replace('"', '""') + '"'


class Tx(WorkflowQueries, BoardQueries, OutboxQueries):
    """One open transaction on the store's connection (SQLite here; `PgTx` for PostgreSQL).

    `write` is True inside `Store.write`: PostgreSQL then locks the task rows it reads by id.
    """

    # Row-locking clauses; SQLite's single writer makes them unnecessary, PostgreSQL sets them.
    FOR_UPDATE = ""
    SKIP_LOCKED = ""
    # Added to the RETURNING of the claim and the leased update where the engine can (PostgreSQL):
    # the task's dependency ids, so building the Task needs no second round trip.
    RETURNING_DEPENDENCIES = ""

    def __init__(self, conn: Any, write: bool = False) -> None:
        self.conn = conn
        self.write = write
        self._dependency_ids: dict[int, list[str]] = {}  # returned with a row just written, used once

    def _returned(self, row: Any) -> sqlite3.Row | None:
        """A row from a RETURNING that may carry `dependency_ids`: kept for `dependency_ids`."""
        if row is not None and self.RETURNING_DEPENDENCIES:
            self._dependency_ids[row["seq"]] = list(row["dependency_ids"])
        return row  # type: ignore[no-any-return]

    def hint(self, index: str) -> str:
        """`INDEXED BY index` where the engine takes planner hints (SQLite), else nothing."""
        return f"INDEXED BY {index}"

    def render(self, template: str) -> str:
        """A statement template with this engine's index hints and row-locking clauses filled in."""
        return template.format(
            tasks_lease=self.hint("tasks_lease"),
            tasks_due=self.hint("tasks_due"),
            tasks_lease_rank=self.hint("tasks_lease_rank"),
            tasks_due_rank=self.hint("tasks_due_rank"),
            skip_locked=self.SKIP_LOCKED if self.write else "",
        )

    def _locked(self) -> str:
        return self.FOR_UPDATE if self.write else ""

    # --- projects -------------------------------------------------------------------------

    def get_project(self, name: str) -> sqlite3.Row | None:
        return self.conn.execute(  # type: ignore[no-any-return]
            "SELECT name, description, settings, created_at FROM projects WHERE name = ?", (name,)
        ).fetchone()

    def insert_project(self, name: str, description: str, settings: str, now: float) -> bool:
        """Insert if absent; True when this call created it."""
        cur = self.conn.execute(
            "INSERT INTO projects (name, description, settings, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (name, description, settings, now),
        )
        return cur.rowcount > 0

    def update_project(self, name: str, description: str, settings: str) -> None:
        self.conn.execute(
            "UPDATE projects SET description = ?, settings = ? WHERE name = ?", (description, settings, name)
        )

    def list_projects(self) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT name, description, settings, created_at FROM projects ORDER BY name"
        ).fetchall()

    def count_by_status(self, project: str | None = None) -> dict[str, int]:
        """From task_counts (kept by triggers), so stats never scan the tasks."""
        if project is None:
            rows = self.conn.execute("SELECT status, sum(n) FROM task_counts GROUP BY status HAVING sum(n) > 0")
        else:
            rows = self.conn.execute(
                "SELECT status, sum(n) FROM task_counts WHERE project = ? GROUP BY status HAVING sum(n) > 0", (project,)
            )
        return {row[0]: row[1] for row in rows}

    def count_ready_by_priority(self, project: str | None = None) -> dict[int, int]:
        sql = "SELECT priority, sum(n) FROM task_counts WHERE status = 'ready'"
        params: tuple[Any, ...] = ()
        if project is not None:
            sql += " AND project = ?"
            params = (project,)
        return {row[0]: row[1] for row in self.conn.execute(sql + " GROUP BY priority HAVING sum(n) > 0", params)}

    def count_expired_leases(self, now: float, project: str | None = None) -> int:
        sql = "SELECT count(*) FROM tasks WHERE status = 'running' AND lease_expires_at < ?"
        params: tuple[Any, ...] = (now,)
        if project is not None:
            sql += " AND project = ?"
            params = (now, project)
        return int(self.conn.execute(sql, params).fetchone()[0])

    def count_blocked(self, project: str | None = None) -> int:
        # Only blocked tasks are in tasks_blocked; without INDEXED BY the planner walks every pending task.
        sql = (
            f"SELECT count(*) FROM tasks {self.hint('tasks_blocked')} "
            "WHERE blocked_by IS NOT NULL AND status IN ('pending', 'ready')"
        )
        if project is None:
            return int(self.conn.execute(sql).fetchone()[0])
        return int(self.conn.execute(sql + " AND project = ?", (project,)).fetchone()[0])

    def oldest_ready_created(self, project: str | None = None) -> float | None:
        """Creation time of the oldest ready task: the first entry of each priority's run in the
        claim index (four index probes, not a walk over every ready task)."""
        oldest: float | None = None
        for priority in range(4):
            if project is None:
                row = self.conn.execute(
                    "SELECT created_at FROM tasks WHERE status = 'ready' AND priority = ? ORDER BY seq LIMIT 1",
                    (priority,),
                ).fetchone()
            else:
                row = self.conn.execute(
                    f"SELECT created_at FROM tasks {self.hint('tasks_ready_project')} "
                    "WHERE status = 'ready' AND project = ? AND priority = ? ORDER BY seq LIMIT 1",
                    (project, priority),
                ).fetchone()
            if row is not None and (oldest is None or row[0] < oldest):
                oldest = float(row[0])
        return oldest

    # --- tasks: reads ---------------------------------------------------------------------

    def get_task(self, task_id: str) -> sqlite3.Row | None:
        """The task's row; inside a write it stays locked for this transaction."""
        return self.conn.execute(  # type: ignore[no-any-return]
            f"SELECT seq, {TASK_COLUMNS} FROM tasks WHERE id = ?{self._locked()}", (task_id,)
        ).fetchone()

    def get_task_by_seq(self, seq: int) -> sqlite3.Row:
        """A row we know exists (its seq came from this transaction)."""
        row = self.conn.execute(
            f"SELECT seq, {TASK_COLUMNS} FROM tasks WHERE seq = ?{self._locked()}", (seq,)
        ).fetchone()
        if row is None:
            raise LookupError(f"task seq {seq} vanished inside its own transaction")
        return row  # type: ignore[no-any-return]

    def seqs_for_ids(self, ids: Sequence[str]) -> dict[str, sqlite3.Row]:
        """id -> (seq, status) for the ids that exist."""
        found: dict[str, sqlite3.Row] = {}
        for chunk_start in range(0, len(ids), 500):
            chunk = list(ids[chunk_start : chunk_start + 500])
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(f"SELECT id, seq, status FROM tasks WHERE id IN ({marks})", chunk):
                found[row["id"]] = row
        return found

    def find_by_idempotency_key(self, project: str, key: str) -> sqlite3.Row | None:
        return self.conn.execute(  # type: ignore[no-any-return]
            f"SELECT seq, {TASK_COLUMNS} FROM tasks WHERE project = ? AND idempotency_key = ?", (project, key)
        ).fetchone()

    def dependency_ids(self, task_seq: int) -> list[str]:
        returned = self._dependency_ids.pop(task_seq, None)
        if returned is not None:
            return returned
        rows = self.conn.execute(
            "SELECT t.id FROM dependencies d JOIN tasks t ON t.seq = d.depends_on_seq "
            "WHERE d.task_seq = ? ORDER BY t.seq",
            (task_seq,),
        )
        return [row[0] for row in rows]

    def dependency_seqs(self, task_seq: int) -> list[int]:
        rows = self.conn.execute("SELECT depends_on_seq FROM dependencies WHERE task_seq = ?", (task_seq,))
        return [row[0] for row in rows]

    def dependents(self, task_seq: int) -> list[sqlite3.Row]:
        """Tasks that depend on this one, with what the readiness rules need (locked inside a write)."""
        lock = " ORDER BY t.seq" + (self.FOR_UPDATE + " OF t" if self.write and self.FOR_UPDATE else "")
        return self.conn.execute(
            "SELECT t.seq, t.id, t.status, t.unmet_deps, t.run_at, t.blocked_by, t.version "
            "FROM dependencies d JOIN tasks t ON t.seq = d.task_seq WHERE d.depends_on_seq = ?" + lock,
            (task_seq,),
        ).fetchall()

    def dependency_met(self, depends_on_seq: int, now: float) -> list[sqlite3.Row]:
        """One dependency completed: each dependent loses one unmet dependency, counted in SQL
        (`unmet_deps - 1`, so two dependencies finishing at once both count). Returns each
        dependent's (seq, id, status, unmet_deps, run_at) after the change; `promote_ready` then
        moves the ones left waiting on nothing."""
        return self.conn.execute(
            "UPDATE tasks SET unmet_deps = CASE WHEN unmet_deps > 0 THEN unmet_deps - 1 ELSE 0 END, "
            "updated_at = ?, version = version + 1 "
            "WHERE seq IN (SELECT task_seq FROM dependencies WHERE depends_on_seq = ?) "
            "RETURNING seq, id, status, unmet_deps, run_at",
            (now, depends_on_seq),
        ).fetchall()

    def promote_ready(self, seq: int, now: float) -> bool:
        """pending -> ready, only if the task is still pending with no unmet dependency and due."""
        row = self.conn.execute(
            "UPDATE tasks SET status = 'ready', updated_at = ?, version = version + 1 "
            "WHERE seq = ? AND status = 'pending' AND unmet_deps = 0 AND run_at <= ? RETURNING seq",
            (now, seq, now),
        ).fetchone()
        return row is not None

    def add_unmet(self, seq: int, delta: int, now: float) -> sqlite3.Row:
        """Add `delta` (+1 or -1) to a task's unmet dependencies in SQL, never below zero; a ready
        task that gains one goes back to pending, a pending one left with none that is due becomes
        ready. Returns the new (status, unmet_deps)."""
        return self.conn.execute(  # type: ignore[no-any-return]
            "UPDATE tasks SET unmet_deps = CASE WHEN unmet_deps + ? > 0 THEN unmet_deps + ? ELSE 0 END, "
            "status = CASE WHEN ? > 0 AND status = 'ready' THEN 'pending' "
            "WHEN ? < 0 AND status = 'pending' AND unmet_deps + ? <= 0 AND run_at <= ? THEN 'ready' "
            "ELSE status END, updated_at = ?, version = version + 1 WHERE seq = ? RETURNING status, unmet_deps",
            (delta, delta, delta, delta, delta, now, now, seq),
        ).fetchone()

    def lock_dependency_graph(self) -> None:
        """Serialise changes to the dependency graph, so a cycle check and the edge it allows are
        one step for every writer (two concurrent edges cannot close a cycle). SQLite's write
        transaction already is that lock; PostgreSQL takes a transaction-scoped advisory lock."""

    def has_dependency(self, task_seq: int, depends_on_seq: int) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM dependencies WHERE task_seq = ? AND depends_on_seq = ?", (task_seq, depends_on_seq)
        ).fetchone()
        return row is not None

    def task_filters(
        self,
        *,
        project: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        tag: str | None = None,
        worker: str | None = None,
        workflow_id: str | None = None,
        parent_id: str | None = None,
        query: str | None = None,
    ) -> tuple[list[str], list[Any]]:
        """WHERE terms and parameters for a task listing (`query` is an FTS5 expression)."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("project", project),
            ("status", status),
            ("kind", kind),
            ("worker", worker),
            ("workflow_id", workflow_id),
            ("parent_id", parent_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if tag is not None:
            where.append("seq IN (SELECT task_seq FROM task_tags WHERE tag = ?)")
            params.append(tag)
        if query is not None:
            clause, values = self.search_clause(query)
            where.append(clause)
            params.extend(values)
        return where, params

    def list_tasks(
        self,
        *,
        project: str | None,
        status: str | None,
        kind: str | None,
        tag: str | None,
        worker: str | None,
        workflow_id: str | None,
        parent_id: str | None,
        query: str | None,
        after: tuple[int, int] | None,
        limit: int,
        columns: str = SUMMARY_COLUMNS,
    ) -> list[sqlite3.Row]:
        """A page of tasks in claim order (priority, then age), keyset-paginated; summary columns by default."""
        where, params = self.task_filters(
            project=project,
            status=status,
            kind=kind,
            tag=tag,
            worker=worker,
            workflow_id=workflow_id,
            parent_id=parent_id,
            query=query,
        )
        if after is not None:
            where.append("(priority > ? OR (priority = ? AND seq > ?))")
            params.extend([after[0], after[0], after[1]])
        sql = f"SELECT {columns} FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY priority, seq LIMIT ?"
        params.append(limit)
        return self.conn.execute(sql, params).fetchall()

    def search_clause(self, text: str) -> tuple[str, list[Any]]:
        """A WHERE term matching tasks whose title or description holds every term of `text`: as
        whole words in the word index (diacritics folded), or as substrings in the trigram index (any
        script, also text written without spaces). A term shorter than three characters stands for
        the indexed trigrams that start with it (a range lookup in the vocabulary). A short term that
        starts more than SHORT_TERM_LIMIT trigrams is common: it is checked on the text of the tasks the
        other terms select (or of the tasks in claim order, which soon yields a page of a common
        term), so it is never cut to some of its trigrams and no match is lost. Each term is quoted,
        so no input is an FTS5 syntax error."""
        terms = search_terms(text)
        words = " ".join(quote_term(term) for term in terms)
        groups: list[str] = []
        common: list[str] = []
        for term in terms:
            if len(term) >= 3:
                groups.append(quote_term(term))
                continue
            folded = term.lower()
            found = self.conn.execute(SHORT_TERM_SQL, (folded, folded + "\U0010ffff")).fetchall()
            if len(found) > SHORT_TERM_LIMIT:
                common.append(folded)
                continue
            groups.append("(" + " OR ".join(quote_term(row[0]) for row in found) + ")" if found else NO_MATCH)
        if not common:
            return SEARCH_SQL, [words, " AND ".join(groups)]
        checks = [SUBSTRING_SQL] * len(common)
        if groups:
            checks.insert(0, "seq IN (SELECT rowid FROM tasks_fts_trigram WHERE tasks_fts_trigram MATCH ?)")
        clause = f"(seq IN (SELECT rowid FROM tasks_fts WHERE tasks_fts MATCH ?) OR ({' AND '.join(checks)}))"
        return clause, [words, *([" AND ".join(groups)] if groups else []), *common]

    def latest_events(self, task_seq: int, limit: int) -> list[sqlite3.Row]:
        """The newest `limit` events of a task, newest first."""
        return self.conn.execute(
            "SELECT seq, at, actor, action, old, new FROM events WHERE task_seq = ? ORDER BY seq DESC LIMIT ?",
            (task_seq, limit),
        ).fetchall()

    def events(self, task_seq: int, after_seq: int, limit: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT seq, at, actor, action, old, new FROM events WHERE task_seq = ? AND seq > ? ORDER BY seq LIMIT ?",
            (task_seq, after_seq, limit),
        ).fetchall()

    # --- tasks: the claim path ------------------------------------------------------------

    def expired_leases(self, now: float, limit: int = 100) -> list[sqlite3.Row]:
        """Up to `limit` running tasks whose lease ran out, highest priority first (one range lookup
        per priority); another sweeper's rows are skipped, never shared."""
        return self._by_priority(EXPIRED_SQL, now, limit)

    def due_pending(self, now: float, limit: int = 500) -> list[sqlite3.Row]:
        """Up to `limit` pending tasks with no unmet dependency whose run_at has come, highest
        priority first (skipping others' rows)."""
        return self._by_priority(DUE_SQL, now, limit)

    def _by_priority(self, template: str, now: float, limit: int) -> list[sqlite3.Row]:
        sql = self.render(template)
        found: list[sqlite3.Row] = []
        for rank in PRIORITY_RANKS:
            if len(found) >= limit:
                break
            found += self.conn.execute(sql, (rank, now, limit - len(found))).fetchall()
        return found

    @staticmethod
    def _claim_filters(project: str | None, kinds: Sequence[str] | None) -> tuple[str, list[Any]]:
        """Extra WHERE terms for a claim (tags are handled through ready_tags, not here)."""
        filters = ""
        params: list[Any] = []
        if project is not None:
            filters += " AND project = ?"
            params.append(project)
        if kinds:
            filters += f" AND kind IN ({','.join('?' * len(kinds))})"
            params.extend(kinds)
        return filters, params

    def sweep_due(self, now: float) -> bool:
        """Is any lease expired or pending task due? One probe of two partial indexes, so the
        common case (nothing to sweep) costs a single statement on the claim path."""
        row = self.conn.execute(self.render(SWEEP_PROBE_SQL), (now, now)).fetchone()
        return bool(row[0] or row[1])

    def _next_ready_by_tags(self, project: str | None, kinds: Sequence[str] | None, tags: Sequence[str]) -> int | None:
        """Best ready task carrying any of `tags`: one ordered probe of ready_tags per tag."""
        filters, params = self._claim_filters(project, kinds)
        best: tuple[int, int] | None = None
        for tag in dict.fromkeys(tags):
            row = self.conn.execute(TAG_CLAIM_SQL.format(filters=filters), [tag, *params]).fetchone()
            if row is not None and (best is None or (row[0], row[1]) < best):
                best = (row[0], row[1])
        return None if best is None else best[1]

    def claimed_with_key(self, worker: str, claim_key: str) -> list[sqlite3.Row]:
        """The tasks `worker` still holds from an earlier claim with this idempotency key, in claim order."""
        return self.conn.execute(
            f"SELECT seq, {TASK_COLUMNS} FROM tasks {self.hint('tasks_claim_key')} "
            "WHERE claim_key = ? AND worker = ? AND status = 'running' ORDER BY priority, seq",
            (claim_key, worker),
        ).fetchall()

    def claim_next(
        self,
        *,
        worker: str,
        lease_id: str,
        claim_key: str | None,
        project: str | None,
        kinds: Sequence[str] | None,
        tags: Sequence[str] | None,
        lease_seconds: int | None,
        default_lease: int,
        now: float,
    ) -> sqlite3.Row | None:
        """Pick and lease the next ready task in one statement; returns its new row or None."""
        if tags:
            seq = self._next_ready_by_tags(project, kinds, tags)
            if seq is None:
                return None
            pick, params = "?", [seq]
        else:
            filters, params = self._claim_filters(project, kinds)
            pick = CLAIM_SQL.format(filters=filters) + self.SKIP_LOCKED
        lease = "coalesce(?, timeout_seconds, ?)"
        sql = (
            f"UPDATE tasks SET status = 'running', worker = ?, lease_id = ?, claim_key = ?, attempts = attempts + 1, "
            f"lease_seconds = {lease}, lease_expires_at = ? + {lease}, started_at = coalesce(started_at, ?), "
            f"updated_at = ?, error = NULL, version = version + 1 WHERE seq = ({pick}) AND status = 'ready' "
            f"RETURNING seq, {TASK_COLUMNS}{self.RETURNING_DEPENDENCIES}"
        )
        values = [
            worker,
            lease_id,
            claim_key,
            lease_seconds,
            default_lease,
            now,
            lease_seconds,
            default_lease,
            now,
            now,
            *params,
        ]
        return self._returned(self.conn.execute(sql, values).fetchone())

    # --- tasks: writes --------------------------------------------------------------------

    def insert_task(self, values: dict[str, Any]) -> tuple[int, bool]:
        """Insert a task; returns (its seq, True). With an idempotency key, a task already holding
        that key in the project wins (`ON CONFLICT DO NOTHING`): (that task's seq, False) comes back
        and nothing is written, so two writers racing with one key create one task."""
        columns = ", ".join(values)
        marks = ", ".join("?" * len(values))
        conflict = " ON CONFLICT (project, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
        row = self.conn.execute(
            f"INSERT INTO tasks ({columns}) VALUES ({marks}){conflict if values.get('idempotency_key') else ''} "
            "RETURNING seq",
            list(values.values()),
        ).fetchone()
        if row is None:
            existing = self.find_by_idempotency_key(values["project"], values["idempotency_key"])
            assert existing is not None
            return int(existing["seq"]), False
        return int(row[0]), True

    def update_task(self, seq: int, values: dict[str, Any]) -> None:
        """Set columns and bump the version in one statement."""
        assignments = ", ".join(f"{column} = ?" for column in values)
        self.conn.execute(
            f"UPDATE tasks SET {assignments}, version = version + 1 WHERE seq = ?", [*values.values(), seq]
        )

    def update_task_returning(self, seq: int, values: dict[str, Any]) -> sqlite3.Row:
        """`update_task`, handing back the changed row (saves re-reading it on hot paths)."""
        assignments = ", ".join(f"{column} = ?" for column in values)
        row = self.conn.execute(
            f"UPDATE tasks SET {assignments}, version = version + 1 WHERE seq = ? RETURNING seq, {TASK_COLUMNS}",
            [*values.values(), seq],
        ).fetchone()
        return row  # type: ignore[no-any-return]

    def update_leased(
        self, seq: int, worker: str, lease_id: str | None, values: dict[str, Any], lease_seconds: int | None = None
    ) -> sqlite3.Row | None:
        """Change a running task only if `worker` still holds it under `lease_id` (None: any lease of
        `worker`): one conditional UPDATE, so an older attempt's token changes nothing however many
        writers race. With `lease_seconds` given (heartbeat), the lease is renewed from `now` = values'
        updated_at for that many seconds, or the lease's own length when it is 0. None when the lease
        is not held."""
        assignments = [f"{column} = ?" for column in values]
        params: list[Any] = list(values.values())
        if lease_seconds is not None:
            assignments.append("lease_seconds = coalesce(nullif(?, 0), lease_seconds)")
            assignments.append("lease_expires_at = ? + coalesce(nullif(?, 0), lease_seconds)")
            params += [lease_seconds, values["updated_at"], lease_seconds]
        where = "seq = ? AND status = 'running' AND worker = ?"
        params += [seq, worker]
        if lease_id is not None:
            where += " AND lease_id = ?"
            params.append(lease_id)
        return self._returned(
            self.conn.execute(
                f"UPDATE tasks SET {', '.join(assignments)}, version = version + 1 WHERE {where} "
                f"RETURNING seq, {TASK_COLUMNS}{self.RETURNING_DEPENDENCIES}",
                params,
            ).fetchone()
        )

    def set_parent_id(self, seq: int, parent_id: str) -> None:
        """Complete a just-inserted task's parent link (same transaction, so no new version)."""
        self.conn.execute("UPDATE tasks SET parent_id = ? WHERE seq = ?", (parent_id, seq))

    def set_tags(self, seq: int, tags: Iterable[str]) -> None:
        self.conn.execute("DELETE FROM task_tags WHERE task_seq = ?", (seq,))
        self.conn.executemany("INSERT INTO task_tags (tag, task_seq) VALUES (?, ?)", [(t, seq) for t in tags])

    def insert_dependency(self, task_seq: int, depends_on_seq: int) -> None:
        self._dependency_ids.clear()
        self.conn.execute(
            "INSERT INTO dependencies (task_seq, depends_on_seq) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (task_seq, depends_on_seq),
        )

    def delete_dependency(self, task_seq: int, depends_on_seq: int) -> bool:
        self._dependency_ids.clear()
        cur = self.conn.execute(
            "DELETE FROM dependencies WHERE task_seq = ? AND depends_on_seq = ?", (task_seq, depends_on_seq)
        )
        return cur.rowcount > 0

    def insert_event(
        self, task_seq: int, at: float, actor: str | None, action: str, old: str | None, new: str | None
    ) -> int:
        """Append one history event; returns its own seq (not the newest seq, which may be another's)."""
        row = self.conn.execute(
            "INSERT INTO events (task_seq, at, actor, action, old, new) VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
            (task_seq, at, actor, action, old, new),
        ).fetchone()
        return int(row[0])

    def ids_for_seqs(self, seqs: Iterable[int]) -> dict[int, str]:
        seq_list = list(seqs)
        out: dict[int, str] = {}
        for start in range(0, len(seq_list), 500):
            chunk = seq_list[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(f"SELECT seq, id FROM tasks WHERE seq IN ({marks})", chunk):
                out[row[0]] = row[1]
        return out

    def max_event_seq(self) -> int:
        row = self.conn.execute("SELECT max(seq) FROM events").fetchone()
        return int(row[0] or 0)

    # --- change feed (server/notifications.py) ----------------------------------------------

    def events_since(self, after_seq: int, limit: int) -> list[sqlite3.Row]:
        """Events after a high-water mark, with what names the resources they touch (events.seq order)."""
        return self.conn.execute(
            "SELECT e.seq, t.id, t.project, t.workflow_id FROM events e JOIN tasks t ON t.seq = e.task_seq "
            "WHERE e.seq > ? ORDER BY e.seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()

    def project_fingerprints(self) -> dict[str, str]:
        """name -> description and settings: projects change without events, and there are few of them."""
        rows = self.conn.execute("SELECT name, description, settings FROM projects")
        return {row[0]: f"{row[1]}\x00{row[2]}" for row in rows}

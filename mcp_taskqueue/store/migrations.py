"""Schema versions, applied in order through sqlite-utils' `Migrations` helper.

Never edit a migration that has shipped: add a new one. Each runs in the same write
transaction as the record of it, so two processes starting at once cannot both apply it.
"""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("mcp_taskqueue")


def run_script(db: Database, script: str) -> None:
    """Execute statements one by one: `executescript` would commit the enclosing transaction."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"incomplete SQL statement in migration: {statement[:80]!r}")


@migrations()
def m001_core(db: Database) -> None:
    """Projects, tasks, dependencies, tags, the event history and full-text search."""
    run_script(
        db,
        """
        CREATE TABLE projects (
            name TEXT PRIMARY KEY,
            description TEXT NOT NULL DEFAULT '',
            settings TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL
        );

        -- seq is the rowid: index entries end in it, so (status, priority) orders by
        -- priority then age without a sort.
        CREATE TABLE tasks (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            project TEXT NOT NULL REFERENCES projects(name),
            title TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            kind TEXT NOT NULL DEFAULT 'task',
            priority INTEGER NOT NULL,
            status TEXT NOT NULL,
            payload TEXT,
            result TEXT,
            error TEXT,
            tags TEXT NOT NULL DEFAULT '[]',
            parent_id TEXT,
            workflow_id TEXT,
            acceptance_criteria TEXT NOT NULL DEFAULT '[]',
            phase TEXT,
            run_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL DEFAULT 3,
            timeout_seconds INTEGER,
            idempotency_key TEXT,
            worker TEXT,
            lease_seconds INTEGER,
            lease_expires_at REAL,
            progress REAL,
            unmet_deps INTEGER NOT NULL DEFAULT 0,
            blocked_by TEXT,
            version INTEGER NOT NULL DEFAULT 1,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL
        );
        CREATE INDEX tasks_claim ON tasks(status, priority);
        CREATE INDEX tasks_project_claim ON tasks(project, status, priority);
        CREATE INDEX tasks_lease ON tasks(lease_expires_at) WHERE status = 'running';
        CREATE INDEX tasks_due ON tasks(run_at) WHERE status = 'pending' AND unmet_deps = 0;
        CREATE UNIQUE INDEX tasks_idempotency ON tasks(project, idempotency_key)
            WHERE idempotency_key IS NOT NULL;
        CREATE INDEX tasks_workflow ON tasks(workflow_id) WHERE workflow_id IS NOT NULL;
        CREATE INDEX tasks_parent ON tasks(parent_id) WHERE parent_id IS NOT NULL;
        CREATE INDEX tasks_worker ON tasks(worker) WHERE worker IS NOT NULL;
        CREATE INDEX tasks_kind ON tasks(kind, status);
        CREATE INDEX tasks_blocked ON tasks(project) WHERE blocked_by IS NOT NULL;

        CREATE TABLE task_tags (
            tag TEXT NOT NULL,
            task_seq INTEGER NOT NULL REFERENCES tasks(seq),
            PRIMARY KEY (tag, task_seq)
        ) WITHOUT ROWID;

        CREATE TABLE dependencies (
            task_seq INTEGER NOT NULL REFERENCES tasks(seq),
            depends_on_seq INTEGER NOT NULL REFERENCES tasks(seq),
            PRIMARY KEY (task_seq, depends_on_seq)
        ) WITHOUT ROWID;
        CREATE INDEX dependencies_reverse ON dependencies(depends_on_seq, task_seq);

        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            task_seq INTEGER NOT NULL REFERENCES tasks(seq),
            at REAL NOT NULL,
            actor TEXT,
            action TEXT NOT NULL,
            old TEXT,
            new TEXT
        );
        CREATE INDEX events_task ON events(task_seq, seq);

        CREATE VIRTUAL TABLE tasks_fts USING fts5(
            title, description, content='tasks', content_rowid='seq'
        );
        -- Only text changes touch the index, so claims and completions stay cheap.
        CREATE TRIGGER tasks_fts_insert AFTER INSERT ON tasks BEGIN
            INSERT INTO tasks_fts(rowid, title, description) VALUES (new.seq, new.title, new.description);
        END;
        CREATE TRIGGER tasks_fts_delete AFTER DELETE ON tasks BEGIN
            INSERT INTO tasks_fts(tasks_fts, rowid, title, description)
                VALUES ('delete', old.seq, old.title, old.description);
        END;
        CREATE TRIGGER tasks_fts_update AFTER UPDATE OF title, description ON tasks BEGIN
            INSERT INTO tasks_fts(tasks_fts, rowid, title, description)
                VALUES ('delete', old.seq, old.title, old.description);
            INSERT INTO tasks_fts(rowid, title, description) VALUES (new.seq, new.title, new.description);
        END;
        """,
    )


@migrations()
def m002_workflows(db: Database) -> None:
    """Workflows (named task graphs), development-phase records, reviews and project payload schemas."""
    run_script(
        db,
        """
        CREATE TABLE workflows (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            project TEXT NOT NULL REFERENCES projects(name),
            name TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            template TEXT,
            parameters TEXT,
            refs TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL,
            cancelled_at REAL
        );
        CREATE INDEX workflows_project ON workflows(project, seq);

        -- One row per task that follows the development workflow; the phase itself is tasks.phase.
        -- review_round grows each time the task enters review, so old approvals do not carry over.
        CREATE TABLE development (
            task_seq INTEGER PRIMARY KEY REFERENCES tasks(seq),
            review_round INTEGER NOT NULL DEFAULT 0,
            evidence TEXT NOT NULL DEFAULT '{}'
        );

        CREATE TABLE reviews (
            task_seq INTEGER NOT NULL REFERENCES tasks(seq),
            round INTEGER NOT NULL,
            reviewer TEXT NOT NULL,
            score REAL NOT NULL,
            approved INTEGER NOT NULL,
            comment TEXT,
            at REAL NOT NULL,
            PRIMARY KEY (task_seq, round, reviewer)
        ) WITHOUT ROWID;

        CREATE TABLE payload_schemas (
            project TEXT NOT NULL REFERENCES projects(name),
            kind TEXT NOT NULL,
            schema TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (project, kind)
        ) WITHOUT ROWID;
        """,
    )


@migrations()
def m003_lean_indexes(db: Database) -> None:
    """Fewer index pages per status change: every claim and completion used to rewrite ~11 pages.

    (project, status, priority) and (kind, status) moved on every status change although they only
    serve filtered claims, so they become partial indexes over ready tasks (one page in, one out).
    The worker index served only list filters; running tasks are few, and tasks_claim finds them.
    Measured in benchmarks/ (docs/performance.md): pages per claim/complete transaction 10.7 -> ~7.
    """
    run_script(
        db,
        """
        DROP INDEX tasks_project_claim;
        DROP INDEX tasks_kind;
        DROP INDEX tasks_worker;
        CREATE INDEX tasks_ready_project ON tasks(project, priority) WHERE status = 'ready';
        CREATE INDEX tasks_ready_kind ON tasks(kind, priority) WHERE status = 'ready';
        """,
    )


@migrations()
def m004_counts_and_ready_tags(db: Database) -> None:
    """Counts by (project, status, priority) and a ready-only tag index, both kept by triggers.

    queue_stats and list_projects used to count by scanning every task (0.6 s at a million), and
    they are re-read after every change by subscribers. A claim filtered by tags walked every ready
    task (0.12 s at a million, holding the write lock). Triggers keep both derived tables right
    whichever code path changes a task, including imports; each costs about one page per change.
    """
    run_script(
        db,
        """
        CREATE TABLE task_counts (
            project TEXT NOT NULL,
            status TEXT NOT NULL,
            priority INTEGER NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (project, status, priority)
        ) WITHOUT ROWID;
        INSERT INTO task_counts (project, status, priority, n)
            SELECT project, status, priority, count(*) FROM tasks GROUP BY project, status, priority;
        CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN
            INSERT INTO task_counts (project, status, priority, n) VALUES (new.project, new.status, new.priority, 1)
                ON CONFLICT (project, status, priority) DO UPDATE SET n = n + 1;
        END;
        CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN
            UPDATE task_counts SET n = n - 1
                WHERE project = old.project AND status = old.status AND priority = old.priority;
        END;
        CREATE TRIGGER task_counts_update AFTER UPDATE OF status, priority, project ON tasks
            WHEN old.status IS NOT new.status OR old.priority IS NOT new.priority OR old.project IS NOT new.project
        BEGIN
            UPDATE task_counts SET n = n - 1
                WHERE project = old.project AND status = old.status AND priority = old.priority;
            INSERT INTO task_counts (project, status, priority, n) VALUES (new.project, new.status, new.priority, 1)
                ON CONFLICT (project, status, priority) DO UPDATE SET n = n + 1;
        END;

        CREATE TABLE ready_tags (
            tag TEXT NOT NULL,
            priority INTEGER NOT NULL,
            task_seq INTEGER NOT NULL,
            PRIMARY KEY (tag, priority, task_seq)
        ) WITHOUT ROWID;
        INSERT INTO ready_tags (tag, priority, task_seq)
            SELECT tt.tag, t.priority, t.seq FROM task_tags tt JOIN tasks t ON t.seq = tt.task_seq
            WHERE t.status = 'ready';
        CREATE TRIGGER ready_tags_leave AFTER UPDATE OF status, priority ON tasks
            WHEN old.status = 'ready' AND (new.status IS NOT 'ready' OR new.priority IS NOT old.priority)
        BEGIN
            DELETE FROM ready_tags WHERE priority = old.priority AND task_seq = old.seq
                AND tag IN (SELECT tag FROM task_tags WHERE task_seq = old.seq);
        END;
        CREATE TRIGGER ready_tags_enter AFTER UPDATE OF status, priority ON tasks
            WHEN new.status = 'ready' AND (old.status IS NOT 'ready' OR new.priority IS NOT old.priority)
        BEGIN
            INSERT OR IGNORE INTO ready_tags (tag, priority, task_seq)
                SELECT tag, new.priority, new.seq FROM task_tags WHERE task_seq = new.seq;
        END;
        CREATE TRIGGER ready_tags_tag_added AFTER INSERT ON task_tags BEGIN
            INSERT OR IGNORE INTO ready_tags (tag, priority, task_seq)
                SELECT new.tag, priority, seq FROM tasks WHERE seq = new.task_seq AND status = 'ready';
        END;
        CREATE TRIGGER ready_tags_tag_removed AFTER DELETE ON task_tags BEGIN
            DELETE FROM ready_tags WHERE tag = old.tag AND task_seq = old.task_seq
                AND priority = (SELECT priority FROM tasks WHERE seq = old.task_seq);
        END;
        """,
    )


@migrations()
def m005_fencing(db: Database) -> None:
    """Fencing tokens: every claim writes a fresh `lease_id`, and the lease's writes are conditional on it.

    `claim_key` is the idempotency key of the claim that took the lease, so a claim retried after a
    lost reply finds the tasks it already took (a partial index: only tasks claimed with a key).
    """
    run_script(
        db,
        """
        ALTER TABLE tasks ADD COLUMN lease_id TEXT;
        ALTER TABLE tasks ADD COLUMN claim_key TEXT;
        CREATE INDEX tasks_claim_key ON tasks(claim_key) WHERE claim_key IS NOT NULL;
        """,
    )


@migrations()
def m006_notifications(db: Database) -> None:
    """Notifiers, the outbox of their deliveries, and leases for one-owner background jobs.

    Outbox rows are written in the transaction of the change that caused them, so a crash can
    lose neither (docs/notifications.md). The dispatcher reads due rows through outbox_due and
    keeps each task's deliveries in order through outbox_key; both hold pending rows only.
    """
    run_script(
        db,
        """
        CREATE TABLE notifiers (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL UNIQUE,
            channel TEXT NOT NULL,
            target TEXT NOT NULL,
            events TEXT NOT NULL,
            filters TEXT NOT NULL DEFAULT '{}',
            threshold INTEGER,
            templates TEXT NOT NULL DEFAULT '{}',
            options TEXT NOT NULL DEFAULT '{}',
            secret TEXT,
            previous_secret TEXT,
            previous_secret_until REAL,
            consecutive_failures INTEGER NOT NULL DEFAULT 0,
            circuit_open_until REAL,
            depth_above INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );

        CREATE TABLE notifier_events (
            event TEXT NOT NULL,
            notifier_seq INTEGER NOT NULL REFERENCES notifiers(seq),
            PRIMARY KEY (event, notifier_seq)
        );

        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            notifier_seq INTEGER NOT NULL REFERENCES notifiers(seq),
            event TEXT NOT NULL,
            order_key TEXT NOT NULL,
            payload TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            created_at REAL NOT NULL,
            last_attempt_at REAL,
            last_status_code INTEGER,
            last_latency_ms REAL,
            last_error TEXT,
            delivered_at REAL
        );
        CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE status = 'pending';
        CREATE INDEX outbox_key ON outbox(notifier_seq, order_key, seq) WHERE status = 'pending';
        CREATE INDEX outbox_notifier ON outbox(notifier_seq, seq);

        CREATE TABLE singleton_leases (
            name TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            expires_at REAL NOT NULL
        );
        """,
    )


@migrations()
def m007_tokens(db: Database) -> None:
    """Bearer tokens for the HTTP transports: only a SHA-256 of each token is kept, never the token.

    A revoked token keeps its row (revoked_at set) so its name stays in the history's meaning.
    """
    run_script(
        db,
        """
        CREATE TABLE tokens (
            seq INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            scopes TEXT NOT NULL,
            projects TEXT,
            created_at REAL NOT NULL,
            expires_at REAL,
            revoked_at REAL
        );
        CREATE UNIQUE INDEX tokens_active_name ON tokens(name) WHERE revoked_at IS NULL;
        """,
    )


@migrations()
def m008_due_by_priority(db: Database) -> None:
    """Time-driven promotion in claim order: due work and expired leases found per priority.

    The sweep used to take the 500 earliest-due pending tasks (and the 100 earliest-expired leases),
    so behind a backlog of due `low` work a due `critical` task stayed pending and a claim handed out
    `low`. With (priority, time) partial indexes the sweep takes each priority's due rows in turn, one
    range lookup per priority, whatever the size of the backlog.
    """
    run_script(
        db,
        """
        CREATE INDEX tasks_due_rank ON tasks(priority, run_at) WHERE status = 'pending' AND unmet_deps = 0;
        CREATE INDEX tasks_lease_rank ON tasks(priority, lease_expires_at) WHERE status = 'running';
        """,
    )


@migrations()
def m009_trigram_search(db: Database) -> None:
    """Substring search in every script: a trigram index beside the word index of m001.

    FTS5's `unicode61` keeps a run of Chinese, Japanese or Thai characters (written without spaces)
    as one token, so `部署` never matched `部署到生产环境`. The trigram tokenizer indexes every
    three characters; the text is stored padded with two spaces so every one- or two-character
    substring is the start of some indexed trigram, found through the `_terms` vocabulary (a range
    lookup, not a scan). Contentless: the text lives in `tasks`; triggers pass the old text to delete.
    """
    run_script(
        db,
        """
        CREATE VIRTUAL TABLE tasks_fts_trigram USING fts5(title, description, content='', tokenize='trigram');
        CREATE VIRTUAL TABLE tasks_fts_trigram_terms USING fts5vocab(tasks_fts_trigram, 'row');
        INSERT INTO tasks_fts_trigram(rowid, title, description)
            SELECT seq, title || '  ', description || '  ' FROM tasks;
        CREATE TRIGGER tasks_fts_trigram_insert AFTER INSERT ON tasks BEGIN
            INSERT INTO tasks_fts_trigram(rowid, title, description)
                VALUES (new.seq, new.title || '  ', new.description || '  ');
        END;
        CREATE TRIGGER tasks_fts_trigram_delete AFTER DELETE ON tasks BEGIN
            INSERT INTO tasks_fts_trigram(tasks_fts_trigram, rowid, title, description)
                VALUES ('delete', old.seq, old.title || '  ', old.description || '  ');
        END;
        CREATE TRIGGER tasks_fts_trigram_update AFTER UPDATE OF title, description ON tasks BEGIN
            INSERT INTO tasks_fts_trigram(tasks_fts_trigram, rowid, title, description)
                VALUES ('delete', old.seq, old.title || '  ', old.description || '  ');
            INSERT INTO tasks_fts_trigram(rowid, title, description)
                VALUES (new.seq, new.title || '  ', new.description || '  ');
        END;
        """,
    )

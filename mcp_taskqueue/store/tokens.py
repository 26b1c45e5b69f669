"""SQL for bearer tokens (table `tokens`: SQLite m007, PostgreSQL p004): rows in, rows out; hashing
lives in identity.py. The statements are the common dialect of both engines (`?` placeholders are
translated for PostgreSQL by store/postgres.py), so tokens work on either store."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mcp_taskqueue.errors import Conflict, NotFound
from mcp_taskqueue.store.contract import Storage
from mcp_taskqueue.store.queries import Tx

TOKEN_COLUMNS = "name, prefix, scopes, projects, created_at, expires_at, revoked_at"


@dataclass(frozen=True)
class TokenRow:
    """One stored token, decoded: everything but the secret (which is never stored)."""

    name: str
    prefix: str
    scopes: tuple[str, ...]
    projects: tuple[str, ...] | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    @classmethod
    def of(cls, row: Any) -> TokenRow:
        """From a row of either engine (read by column name)."""
        projects = json.loads(row["projects"]) if row["projects"] is not None else None
        return cls(
            name=row["name"],
            prefix=row["prefix"],
            scopes=tuple(json.loads(row["scopes"])),
            projects=tuple(projects) if projects is not None else None,
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            revoked_at=row["revoked_at"],
        )


def insert_token(
    store: Storage,
    name: str,
    token_hash: str,
    prefix: str,
    scopes: list[str],
    projects: list[str] | None,
    now: float,
    expires_at: float | None,
) -> TokenRow:
    """Store a new token's hash; Conflict if an active token already has this name."""

    def run(tx: Tx) -> TokenRow:
        # The partial unique index on active names refuses a second active token of one name; both
        # engines report that as no row returned rather than as an engine-specific exception.
        row = tx.conn.execute(
            "INSERT INTO tokens (name, token_hash, prefix, scopes, projects, created_at, expires_at) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING {TOKEN_COLUMNS}",
            (
                name,
                token_hash,
                prefix,
                json.dumps(scopes),
                json.dumps(projects) if projects is not None else None,
                now,
                expires_at,
            ),
        ).fetchone()
        if row is None:
            raise Conflict(f"a token named {name!r} exists; revoke it first or choose another name")
        return TokenRow.of(row)

    return store.write(run)


def find_token(store: Storage, token_hash: str) -> TokenRow | None:
    """The token with this hash (revoked or not), by the unique index on token_hash."""

    def run(tx: Tx) -> TokenRow | None:
        conn = tx.conn
        row = conn.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_hash = ?", (token_hash,)).fetchone()
        return TokenRow.of(row) if row is not None else None

    return store.read(run)


def list_tokens(store: Storage, include_revoked: bool = False) -> list[TokenRow]:
    """Every token, oldest first (a handful of rows: tokens are per agent, not per request)."""
    where = "" if include_revoked else " WHERE revoked_at IS NULL"

    def run(tx: Tx) -> list[TokenRow]:
        conn = tx.conn
        return [TokenRow.of(r) for r in conn.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens{where} ORDER BY seq")]

    return store.read(run)


def revoke_token(store: Storage, name: str, now: float) -> TokenRow:
    """Mark the active token called `name` revoked; NotFound if there is none."""

    def run(tx: Tx) -> TokenRow:
        conn = tx.conn
        row = conn.execute(
            f"UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL RETURNING {TOKEN_COLUMNS}",
            (now, name),
        ).fetchone()
        if row is None:
            raise NotFound(f"no active token named {name!r}; see `mcp-taskqueue token list`")
        return TokenRow.of(row)

    return store.write(run)


def count_active_tokens(store: Storage, now: float) -> int:
    """Active (not revoked, not expired) tokens: a server on a public address needs at least one."""

    def run(tx: Tx) -> int:
        conn = tx.conn
        row = conn.execute(
            "SELECT count(*) FROM tokens WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)", (now,)
        ).fetchone()
        return int(row[0])

    return store.read(run)

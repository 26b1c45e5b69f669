"""Who is calling: bearer tokens, their scopes and projects, and the identity a request acts as.

A token is `tq_` + 43 URL-safe characters (256 random bits). It is shown once, at creation;
the store keeps only its SHA-256 (a fast hash is right for a secret with that much entropy)
and its first 8 characters, so `token list` can tell tokens apart without revealing one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

from mcp_taskqueue.errors import ValidationFailed
from mcp_taskqueue.store import Storage
from mcp_taskqueue.store import tokens as token_sql
from mcp_taskqueue.store.tokens import TokenRow

SCOPES = ("read", "write", "claim", "review", "admin")
TOKEN_PREFIX = "tq_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

__all__ = ["CURRENT_IDENTITY", "SCOPES", "Identity", "TokenRow", "Tokens", "hash_token", "parse_scopes", "revocations"]


def hash_token(token: str) -> str:
    """SHA-256 hex of a token: what the store keeps and looks tokens up by."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_scopes(value: str | Iterable[str]) -> list[str]:
    """'read,write' -> ['read', 'write'], refusing unknown scopes with the list of known ones."""
    names = [s.strip() for s in (value.split(",") if isinstance(value, str) else value) if s.strip()]
    unknown = [s for s in names if s not in SCOPES]
    if unknown or not names:
        raise ValidationFailed(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(unknown) or 'none'}")
    return [s for s in SCOPES if s in names]


@dataclass(frozen=True)
class Identity:
    """The caller of one request.

    `name` is the actor recorded in history and used as worker/reviewer name when
    `authenticated`; `projects` None means every project. A local caller (stdio, the CLI on
    the file) is `Identity.local()`: every scope, no project limit, its own names trusted.
    """

    name: str
    scopes: frozenset[str]
    projects: frozenset[str] | None = None
    authenticated: bool = False
    rate_key: str = "local"

    @classmethod
    def local(cls) -> Identity:
        return cls(name="local", scopes=frozenset(SCOPES))

    def allows(self, scope: str) -> bool:
        """`admin` holds every scope."""
        return "admin" in self.scopes or scope in self.scopes

    def allows_project(self, project: str) -> bool:
        return self.projects is None or project in self.projects


# Set by the server's guard around each MCP message: who the tools are acting for.
CURRENT_IDENTITY: ContextVar[Identity | None] = ContextVar("taskqueue_identity", default=None)

# How many revokes this process has made: a cache of verified tokens is void once it moves.
_revoked = 0


def revocations() -> int:
    """A number that changes whenever this process revokes a token (caches compare it)."""
    return _revoked


class Tokens:
    """Create, list, revoke and verify bearer tokens kept in a store."""

    def __init__(self, store: Storage) -> None:
        self.store = store

    def create(
        self,
        name: str,
        scopes: str | Iterable[str],
        projects: Iterable[str] | None = None,
        expires_in_seconds: float | None = None,
    ) -> tuple[str, TokenRow]:
        """A new token (returned once, never stored) and its stored row. Conflict if `name` is in use."""
        if not NAME_PATTERN.match(name):
            raise ValidationFailed("token name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        project_list = sorted({p.strip() for p in projects if p.strip()}) if projects is not None else None
        if project_list == []:
            project_list = None
        if expires_in_seconds is not None and expires_in_seconds <= 0:
            raise ValidationFailed("expires_in must be a positive number of seconds")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        row = token_sql.insert_token(
            self.store,
            name,
            hash_token(token),
            token[:8],
            parse_scopes(scopes),
            project_list,
            now,
            now + expires_in_seconds if expires_in_seconds is not None else None,
        )
        return token, row

    def list(self, include_revoked: bool = False) -> list[TokenRow]:
        return token_sql.list_tokens(self.store, include_revoked)

    def revoke(self, name: str) -> TokenRow:
        """Revoke the active token called `name` (NotFound if none). Servers in this process refuse it
        from the next request on; other processes within their cache time (server/auth.py)."""
        global _revoked
        row = token_sql.revoke_token(self.store, name, time.time())
        _revoked += 1
        return row

    def verify(self, token: str) -> TokenRow | None:
        """The active, unexpired token this secret belongs to, or None."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        row = token_sql.find_token(self.store, hash_token(token))
        if row is None or row.revoked_at is not None:
            return None
        if row.expires_at is not None and row.expires_at <= time.time():
            return None
        return row

    def active_count(self) -> int:
        return token_sql.count_active_tokens(self.store, time.time())

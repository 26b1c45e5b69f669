"""One error type per kind of user mistake, translated once at the MCP boundary.

Each message says what was wrong and, where it helps, how to fix it: agents read these.
"""

from __future__ import annotations


class TaskQueueError(Exception):
    """Base of every error the queue raises on purpose."""

    code = "error"


class NotFound(TaskQueueError):
    """An id or name that does not exist."""

    code = "not_found"


class Conflict(TaskQueueError):
    """The thing changed under you (version mismatch, duplicate, already claimed)."""

    code = "conflict"


class InvalidTransition(TaskQueueError):
    """The task's current status does not allow this action."""

    code = "invalid_transition"


class LeaseLost(TaskQueueError):
    """The caller does not hold the task's lease (never did, or it expired and was reclaimed)."""

    code = "lease_lost"


class ValidationFailed(TaskQueueError):
    """Input that is malformed, too large, cyclic, or fails its schema."""

    code = "validation_failed"


class StoreBusy(TaskQueueError):
    """The database stayed locked by other processes past our retry bound."""

    code = "store_busy"


class Forbidden(TaskQueueError):
    """The caller's token does not carry the scope or project this action needs."""

    code = "forbidden"


class RateLimited(TaskQueueError):
    """The caller spent its budget for this kind of call; it may try again after the wait named."""

    code = "rate_limited"


class StoreLost(TaskQueueError):
    """The database file was deleted or replaced under the running process; writes are refused."""

    code = "store_lost"


class StoreFull(TaskQueueError):
    """The disk holding the database is full; nothing was written. Retry once space is freed."""

    code = "store_full"


class StoreUnavailable(TaskQueueError):
    """The database cannot be opened (folder, permissions, read-only or damaged file)."""

    code = "store_unavailable"

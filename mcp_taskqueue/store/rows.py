"""Stored rows as domain values: the one place above the SQL that knows the storage encodings.

Both engines hand rows back in one form (JSON as compact text, times as epoch seconds, priority
as a rank 0..3; store/contract.py); these functions turn them into the models of models.py, so
`queue.py`, `workflows.py` and `server/` see only domain values.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

from mcp_taskqueue.models import PRIORITY_BY_RANK, Event, ProjectSettings, Status, Task, TaskSummary

JSON_COLUMNS = ("payload", "result", "tags", "acceptance_criteria", "blocked_by")
TIME_COLUMNS = ("run_at", "lease_expires_at", "created_at", "updated_at", "started_at", "finished_at")
# Bookkeeping columns that are not part of a Task; lease_id is shown only to its claim.
HIDDEN = ("seq", "unmet_deps", "lease_seconds", "claim_key", "dependency_ids")


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> UTC ISO-8601 with milliseconds (truncated) and a Z.

    Built from time.gmtime rather than datetime: it runs six times per task read.
    """
    if ts is None:
        return None
    whole = math.floor(ts)
    micros = round((ts - whole) * 1_000_000)  # rounded to the microsecond first, as datetime does
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(whole))}.{micros // 1000:03d}Z"


def loads(text: str | None) -> Any:
    """A stored JSON value (None stays None)."""
    return None if text is None else json.loads(text)


def task(row: Any, depends_on: Sequence[str], lease: bool = False) -> Task:
    """A task row as a Task: JSON decoded, times as ISO-8601, the rank as a priority. The fencing
    token `lease_id` is shown only to the claim that handed it out (`lease=True`)."""
    hidden = HIDDEN if lease else (*HIDDEN, "lease_id")
    values = {key: row[key] for key in row.keys() if key not in hidden}
    for column in JSON_COLUMNS:
        text = values[column]
        values[column] = None if text is None else [] if text == "[]" else json.loads(text)
    values["tags"] = values["tags"] or []
    values["acceptance_criteria"] = values["acceptance_criteria"] or []
    values["blocked_by"] = values["blocked_by"] or []
    values["priority"] = PRIORITY_BY_RANK[row["priority"]]
    values["status"] = Status(row["status"])
    for column in TIME_COLUMNS:
        values[column] = iso(values[column])
    if row["run_at"] is not None and row["run_at"] <= row["created_at"]:
        values["run_at"] = None  # "not before creation" is the same as no run_at
    values["depends_on"] = list(depends_on)
    return Task(**values)


def summary(row: Any) -> TaskSummary:
    """A list row as a TaskSummary."""
    return TaskSummary(
        id=row["id"],
        title=row["title"],
        status=Status(row["status"]),
        priority=PRIORITY_BY_RANK[row["priority"]],
        project=row["project"],
        kind=row["kind"],
        worker=row["worker"],
        progress=row["progress"],
        version=row["version"],
    )


def event(row: Any, task_id: str) -> Event:
    """A history row as an Event."""
    return Event(
        seq=row["seq"],
        task_id=task_id,
        at=iso(row["at"]) or "",
        actor=row["actor"],
        action=row["action"],
        old=loads(row["old"]),
        new=loads(row["new"]),
    )


def settings(text: str | None) -> ProjectSettings:
    """A project's stored settings."""
    return ProjectSettings(**json.loads(text or "{}"))

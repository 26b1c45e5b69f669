"""Blocked marks: which waiting tasks sit behind a failed or cancelled dependency, and why.

Kept by the queue whenever a task dies, is retried, or gains or loses a dependency; read by
workflows (a workflow whose unfinished tasks are all blocked is `blocked`).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from mcp_taskqueue.models import Status
from mcp_taskqueue.store import Tx

DEAD = frozenset({Status.failed.value, Status.cancelled.value})
UNFINISHED = frozenset({Status.pending.value, Status.ready.value, Status.running.value})


def propagate_blocked(tx: Tx, roots: Iterable[int], now: float, emit: Callable[[int, str, Any, Any], object]) -> None:
    """Recompute `blocked_by` for `roots` and every unfinished task downstream of them.

    A waiting task is blocked by each failed or cancelled dependency and by whatever blocks
    a dependency that is itself still waiting, so a dead end marks everything below it, not
    only its direct dependents. Tasks are recomputed in dependency order, each once, and only
    those whose set changes are written (with a history event via `emit`).
    """
    affected: set[int] = set()
    frontier = deque(roots)
    while frontier:
        seq = frontier.popleft()
        if seq in affected:
            continue
        affected.add(seq)
        for dep in tx.dependents(seq):
            if dep["status"] in UNFINISHED and dep["seq"] not in affected:
                frontier.append(dep["seq"])
    # Kahn's order inside the affected set: a task after every affected dependency of it.
    deps_in = {seq: [d["seq"] for d in tx.dependency_states(seq) if d["seq"] in affected] for seq in affected}
    waiting = {seq: len(deps) for seq, deps in deps_in.items()}
    children: dict[int, list[int]] = {seq: [] for seq in affected}
    for seq, deps in deps_in.items():
        for dep in deps:
            children[dep].append(seq)
    ready = deque(sorted(seq for seq, count in waiting.items() if count == 0))
    while ready:
        seq = ready.popleft()
        _refresh_one(tx, seq, now, emit)
        for child in children[seq]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)


def _refresh_one(tx: Tx, seq: int, now: float, emit: Callable[[int, str, Any, Any], object]) -> None:
    row = tx.get_task_by_seq(seq)
    if row is None or row["status"] not in UNFINISHED:
        return
    blocked: list[str] = []
    for dep in tx.dependency_states(seq):
        if dep["status"] in DEAD:
            causes = [dep["id"]]
        elif dep["status"] == Status.completed.value:
            causes = []
        else:
            causes = json.loads(dep["blocked_by"]) if dep["blocked_by"] else []
        blocked.extend(c for c in causes if c not in blocked)
    old = json.loads(row["blocked_by"]) if row["blocked_by"] else []
    if set(old) == set(blocked):
        return
    tx.update_task(seq, {"blocked_by": json.dumps(blocked) if blocked else None, "updated_at": now})
    added = [b for b in blocked if b not in old]
    removed = [b for b in old if b not in blocked]
    if added:
        emit(seq, "blocked", None, {"blocked_by": added})
    if removed:
        emit(seq, "unblocked", {"blocked_by": removed}, None)

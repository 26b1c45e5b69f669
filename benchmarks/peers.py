"""Group 2: the same workload on peer SQLite queues (huey, litequeue, persist-queue).

Each peer is given our durability settings (WAL, synchronous=NORMAL) so the comparison is of
the queue, not of fsync, and runs in turns with ours (benchmarks/queues.py). Peers are
benchmark-only extras (`pip install -e '.[bench]'`); one that is not installed is reported as
skipped, not failed.
"""

from __future__ import annotations

from benchmarks.queues import PEERS, Timings
from benchmarks.report import Row, Section

GROUP = "2 peers"


def section(count: int, timings: dict[str, Timings]) -> Section:
    ours = timings["ours"]
    out = Section(f"Against peer queues ({count:,} tasks, same settings)")
    for peer in PEERS:
        if peer.name not in timings:
            out.notes.append(f"{peer.name} is not installed (`pip install -e '.[bench]'`); skipped.")
            continue
        theirs = timings[peer.name]
        out.rows += [
            Row(GROUP, f"enqueue vs {peer.name}", ours.enqueue, "ops/s", theirs.enqueue, peer.name),
            Row(
                GROUP,
                f"claim+complete vs {peer.name}",
                ours.claim_complete,
                "tasks/s",
                theirs.claim_complete,
                peer.name,
                target=">= 1.0x",
                ok=ours.claim_complete >= theirs.claim_complete,
            ),
        ]
    return out

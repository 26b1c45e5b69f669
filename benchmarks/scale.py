"""Group 4: claim latency as the queue grows, database size, server memory at a million tasks.

Databases are filled by bulk SQL (benchmarks/fill.py); claims go through `TaskQueue`, so the
sweep, the claim query and the history write are all measured. Flat means the claim at 1M
ready tasks is within 2x of the claim at 1k.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
from mcp import Client

from benchmarks.fill import fill_chain, fill_fan_in, fill_ready
from benchmarks.mcp_floor import call
from benchmarks.report import Row, Section, median, percentile
from benchmarks.servers import free_port, http_server, ours_args, peak_rss_mb
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store
from mcp_taskqueue.store.queries import CLAIM_SQL

GROUP = "4 scale"


def claim_latencies(db: Path, samples: int, complete: bool) -> list[float]:
    """Milliseconds per `TaskQueue.claim`; with `complete`, each claimed task is completed (untimed)."""
    store = Store(db)
    queue = TaskQueue(store)
    out = []
    for _ in range(samples):
        start = time.perf_counter()
        task = queue.claim("w1")
        out.append((time.perf_counter() - start) * 1000)
        assert task is not None, "nothing to claim"
        if complete:
            queue.complete(task.id, "w1")
    store.close()
    return out


def search_latencies(db: Path, samples: int) -> tuple[list[float], list[str]]:
    """Milliseconds per `TaskQueue.list(query=...)` for a CJK substring (one match among every task),
    and the search's query plan (issue 9: substring search in every script stays indexed)."""
    store = Store(db)
    queue = TaskQueue(store)
    queue.create({"title": "部署到生产环境", "project": "bench-search"})
    out = []
    for query in ["部署", "生产环境", "task 77"] * max(1, samples // 3):
        start = time.perf_counter()
        found = queue.list(query=query, limit=20)
        out.append((time.perf_counter() - start) * 1000)
        assert found.tasks, f"search for {query!r} found nothing"
    clause, params = store.read(lambda tx: tx.search_clause("部署"))
    plan = store.explain(f"SELECT seq FROM tasks WHERE {clause} ORDER BY priority, seq LIMIT 21", tuple(params))
    store.close()
    return out, plan


def label(count: int) -> str:
    return f"{count // 1_000_000}M" if count >= 1_000_000 else f"{count // 1000}k" if count >= 1000 else str(count)


def latency_row(name: str, samples: list[float], base: float | None, base_name: str, limit: float = 2.0) -> Row:
    mid = median(samples)
    return Row(
        GROUP,
        name,
        mid,
        "ms",
        base,
        "" if base is None else base_name,
        note=f"median; p99 {percentile(samples, 0.99):.3g} ms",
        target="" if base is None else f"<= {limit:g}x",
        ok=None if base is None else mid <= limit * base,
    )


async def touch_server(url: str, calls: int) -> None:
    async with Client(url) as client:
        for _ in range(calls):
            task = (await call(client, "claim_task", {"worker": "rss"}))["task"]
            await call(client, "complete_task", {"task_id": task["id"], "worker": "rss", "lease_id": task["lease_id"]})
        await call(client, "queue_stats", {})
        await call(client, "list_tasks", {"limit": 100})


def server_peak_rss(db: Path, calls: int) -> float:
    port = free_port()
    with http_server(ours_args(db, "http", port), port) as proc:
        anyio.run(touch_server, f"http://127.0.0.1:{port}/mcp", calls)
        return peak_rss_mb(proc.pid)


def run(workdir: Path, sizes: list[int], samples: int, graph_size: int) -> Section:
    section = Section("Scale: claim latency (TaskQueue.claim, in process) by queue depth")
    db = workdir / "scale.db"
    filled = 0
    base: float | None = None
    base_name = f"claim at {label(sizes[0])}"
    for size in sizes:
        fill_ready(db, size - filled + samples)  # top up: the previous size's claims took some
        filled = size + samples
        samples_ms = claim_latencies(db, samples, complete=False)
        row = latency_row(f"claim at {label(size)} ready", samples_ms, base, base_name)
        base = base if base is not None else row.value
        section.rows.append(row)
    biggest = sizes[-1]
    store = Store(db)
    plan = store.explain(CLAIM_SQL.format(filters=""))
    total = int(store.db.execute("SELECT count(*) FROM tasks").fetchone()[0])
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    uses_index = any("tasks_claim" in step for step in plan)
    section.rows.append(
        Row(
            GROUP,
            f"claim query plan at {label(biggest)}",
            1.0 if uses_index else 0.0,
            "",
            text="; ".join(plan),
            target="uses tasks_claim",
            ok=uses_index,
        )
    )
    search_ms, search_plan = search_latencies(db, samples)
    section.rows.append(latency_row(f"search (CJK substring) at {label(biggest)}", search_ms, None, base_name, 50.0))
    indexed = not any(step.startswith("SCAN tasks ") or step == "SCAN tasks" for step in search_plan)
    section.rows.append(
        Row(
            GROUP,
            f"search query plan at {label(biggest)}",
            1.0 if indexed else 0.0,
            "",
            text="; ".join(search_plan),
            target="driven by the text indexes",
            ok=indexed,
        )
    )
    section.rows.append(Row(GROUP, f"database bytes per task at {label(biggest)}", db.stat().st_size / total, "B"))
    rss = server_peak_rss(db, 50)
    section.rows.append(
        Row(GROUP, f"server peak RSS at {label(biggest)} tasks", rss, "MB", target="< 150 MB", ok=rss < 150)
    )

    chain = workdir / "chain.db"
    fill_chain(chain, graph_size)
    section.rows.append(
        latency_row(
            f"claim in a {label(graph_size)} dependency chain", claim_latencies(chain, samples, True), base, base_name
        )
    )
    fan = workdir / "fan.db"
    fill_fan_in(fan, graph_size)
    section.rows.append(
        latency_row(f"claim in a {label(graph_size)} fan-in", claim_latencies(fan, samples, True), base, base_name)
    )
    return section

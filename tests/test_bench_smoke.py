"""Smoke run of every benchmark at tiny sizes, so benchmarks/ cannot rot between `make bench` runs.

These check that each benchmark runs end to end and measures something sane; the speed
targets themselves are judged by the full run (docs/performance.md), not here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import mcp_floor, peers, queues, scale, store_limit, tokens
from benchmarks.__main__ import SMOKE, main
from benchmarks.fill import fill_chain, fill_fan_in, fill_ready
from benchmarks.report import Row
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store
from tests.postgres import PostgresServer


def by_name(rows: list[Row]) -> dict[str, Row]:
    return {row.name: row for row in rows}


def test_store_and_peer_benchmarks_race_every_contender(tmp_path: Path) -> None:
    timings = queues.race(tmp_path, SMOKE.tasks)
    installed = [peer.name for peer in queues.installed_peers()]
    assert set(timings) == {"raw sqlite3", "ours", "store only", *installed}
    assert all(t.enqueue > 0 and t.claim_complete > 0 for t in timings.values())

    rows = by_name(store_limit.section(tmp_path, SMOKE.tasks, timings).rows)
    claim = rows["claim+complete"]
    assert claim.value == timings["ours"].claim_complete
    assert claim.baseline == timings["raw sqlite3"].claim_complete
    assert claim.ratio == pytest.approx(claim.value / claim.baseline)
    assert claim.ok is not None
    # Our transactions write more WAL pages than the minimal queue's, and both write some.
    pages = rows["diagnostic: WAL pages written per transaction"]
    assert pages.baseline is not None and 1 <= pages.baseline <= pages.value
    assert rows["database bytes per task"].value > 100
    # Every task went through ours: all completed, none left ready.
    store = Store(tmp_path / "ours.db")
    assert TaskQueue(store).stats().by_status["completed"] == SMOKE.tasks
    store.close()

    section = peers.section(SMOKE.tasks, timings)
    claim_rows = [row for row in section.rows if row.name.startswith("claim+complete vs")]
    assert [row.baseline_name for row in claim_rows] == installed
    assert len(section.notes) == len(queues.PEERS) - len(installed)


def test_mcp_benchmark_drives_every_transport(tmp_path: Path) -> None:
    section = mcp_floor.run(tmp_path, SMOKE.mcp_calls, SMOKE.mcp_concurrent)
    names = [row.name for row in section.rows]
    assert names == ["in memory, 1 client", "stdio, 1 client", "streamable HTTP, 8 clients", "SSE, 8 clients"]
    assert all(row.value > 0 and row.baseline and row.baseline > 0 for row in section.rows)
    # The run really completed tasks through each server: 4 databases, each with completions.
    for db in ("mcp-memory.db", "mcp-stdio.db", "mcp-http.db", "mcp-sse.db"):
        store = Store(tmp_path / db)
        assert TaskQueue(store).stats().by_status["completed"] >= SMOKE.mcp_concurrent // 8
        store.close()


def test_scale_benchmark_reports_latency_plan_size_and_memory(tmp_path: Path) -> None:
    section = scale.run(tmp_path, list(SMOKE.scale), SMOKE.samples, SMOKE.graph)
    rows = by_name(section.rows)
    assert rows["claim query plan at 1k"].ok is True
    assert "tasks_claim" in rows["claim query plan at 1k"].text
    assert 100 < rows["database bytes per task at 1k"].value < 5_000
    assert 10 < rows["server peak RSS at 1k tasks"].value < 150
    assert rows["claim at 1k ready"].value > 0


def test_fill_helpers_write_what_the_queue_would(tmp_path: Path) -> None:
    fill_ready(tmp_path / "ready.db", 50)
    fill_chain(tmp_path / "chain.db", 5)
    fill_fan_in(tmp_path / "fan.db", 5)
    for name, ready in (("ready.db", 50), ("chain.db", 1), ("fan.db", 4)):
        store = Store(tmp_path / name)
        queue = TaskQueue(store)
        assert queue.stats().by_status["ready"] == ready
        task = queue.claim("w")
        assert task is not None and task.status == "running"
        queue.complete(task.id, "w")
        assert len(queue.history(task.id).events) == 3  # created, claimed, complete
        store.close()
    # Completing the chain's head makes exactly the next link ready.
    store = Store(tmp_path / "chain.db")
    assert TaskQueue(store).stats().by_status["ready"] == 1
    store.close()


def test_token_cost_of_a_task_summary_stays_small(tmp_path: Path) -> None:
    rows = by_name(tokens.run(tmp_path).rows)
    assert rows["list_tasks, per task summary"].ok is True
    assert rows["list_tasks, per task summary"].value < tokens.SUMMARY_LIMIT
    assert all(rows[name].value > 50 for name in ("get_task", "claim_task", "queue_stats"))


def test_main_writes_the_table_with_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "performance.md"
    assert main(["--smoke", "--only", "tokens", "--out", str(out)]) == 0
    document = out.read_text()
    assert "python -m benchmarks --smoke --only tokens" in document
    assert "| 5 tokens | list_tasks, per task summary |" in document
    assert "| group | measure |" in capsys.readouterr().out


def test_postgres_group_races_ours_raw_and_procrastinate(pg_server: PostgresServer) -> None:
    from benchmarks import postgres

    url = pg_server.new_database()
    try:
        section = postgres.run(40, 20, url=url, workers_list=(1, 4), servers_list=(1, 2))
    finally:
        pg_server.drop_database(url)
    rows = by_name(section.rows)
    for workers in (1, 4):
        row = rows[f"claim+complete, {workers} workers"]
        assert row.value > 0 and row.baseline is not None and row.baseline > 0 and row.ok is not None
    assert (
        rows["over MCP, 2 server processes x 4 agents"].baseline
        == rows["over MCP, 1 server processes x 4 agents"].value
    )
    installed = any(name.startswith("vs procrastinate") for name in rows)
    assert installed or any("procrastinate is not installed" in note for note in section.notes)

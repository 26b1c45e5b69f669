"""Group "pg": claim+complete on PostgreSQL, ours against a raw SKIP LOCKED baseline and procrastinate.

All three run on one throwaway PostgreSQL server (started from the machine's binaries, as the
tests do, with fsync on), on the same database, in the same run:
- raw: the minimal `FOR UPDATE SKIP LOCKED` queue (one table, one partial index), a claim
  transaction and a complete transaction per task, as ours does;
- ours: `TaskQueue` on `PostgresStore` (history events, counts, readiness, fencing included);
- procrastinate: its worker draining the same number of no-op jobs (bench-only extra).
Each with 1, 4 and 16 concurrent workers (threads; procrastinate's own concurrency). Then the
whole server path: 1, 2 and 4 `mcp-taskqueue serve` processes on the database, four agents per
process over MCP (stdio), to see throughput grow with server processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import psycopg

from benchmarks.report import Row, Section

GROUP = "pg"
WORKERS = (1, 4, 16)
SERVERS = (1, 2, 4)
AGENTS_PER_SERVER = 4

RAW_SCHEMA = """
CREATE TABLE raw_jobs (
    id BIGSERIAL PRIMARY KEY,
    priority INTEGER NOT NULL DEFAULT 2,
    status TEXT NOT NULL DEFAULT 'ready',
    payload JSONB,
    worker TEXT
);
CREATE INDEX raw_jobs_claim ON raw_jobs(priority, id) WHERE status = 'ready';
"""
RAW_CLAIM = (
    "UPDATE raw_jobs SET status = 'running', worker = %s WHERE id = (SELECT id FROM raw_jobs WHERE status = 'ready' "
    "ORDER BY priority, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id"
)


def threaded(workers: int, job: Callable[[int], int]) -> float:
    """Run `job(n)` in `workers` threads started together; returns the seconds until all return."""
    barrier = threading.Barrier(workers + 1)
    threads = []

    def run(n: int) -> None:
        barrier.wait()
        job(n)

    for n in range(workers):
        thread = threading.Thread(target=run, args=(n,))
        thread.start()
        threads.append(thread)
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def raw(url: str, tasks: int, workers: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS raw_jobs")
        conn.execute(RAW_SCHEMA.encode())
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO raw_jobs (payload) VALUES (%s)", [(f'{{"n": {i}}}',) for i in range(tasks)])
        conn.execute("ANALYZE raw_jobs")

    def job(n: int) -> int:
        done = 0
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                row = conn.execute(RAW_CLAIM, (f"w{n}",)).fetchone()
                if row is None:
                    return done
                conn.execute("UPDATE raw_jobs SET status = 'done' WHERE id = %s", (row[0],))
                done += 1

    return tasks / threaded(workers, job)


def ours(url: str, tasks: int, workers: int) -> float:
    from mcp_taskqueue.queue import TaskQueue
    from mcp_taskqueue.store.postgres import PostgresStore

    store = PostgresStore(url, max_connections=max(4, workers + 2))
    try:
        queue = TaskQueue(store)
        project = f"bench{workers}"
        for start in range(0, tasks, 500):
            queue.create_many(
                [
                    {"title": f"t{i}", "project": project, "payload": {"n": i}}
                    for i in range(start, min(tasks, start + 500))
                ]
            )
        store.write(lambda tx: tx.conn.execute("ANALYZE tasks"))

        def job(n: int) -> int:
            done = 0
            while (task := queue.claim(f"w{n}", project=project)) is not None:
                queue.complete(task.id, f"w{n}", lease_id=task.lease_id, result={"ok": True})
                done += 1
            return done

        return tasks / threaded(workers, job)
    finally:
        store.close()


def procrastinate_rate(url: str, tasks: int, workers: int) -> float | None:
    try:
        import procrastinate
    except ImportError:
        return None
    logging.getLogger("procrastinate").setLevel(logging.WARNING)

    async def run() -> float:
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

        @app.task(name="noop", queue=f"q{workers}")
        async def noop(n: int) -> None:
            return None

        async with app.open_async():
            with psycopg.connect(url, autocommit=True) as conn:
                installed = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
            if installed is None or installed[0] is None:
                await app.schema_manager.apply_schema_async()
            for i in range(tasks):
                await noop.defer_async(n=i)
            start = time.perf_counter()
            await app.run_worker_async(
                queues=[f"q{workers}"], concurrency=workers, wait=False, install_signal_handlers=False,
                delete_jobs="never",
            )  # fmt: skip
            return tasks / (time.perf_counter() - start)

    return asyncio.run(run())


def servers_rate(url: str, tasks: int, servers: int) -> float:
    """`servers` stdio server processes, AGENTS_PER_SERVER agents each, draining over MCP."""
    import anyio
    from mcp import Client, StdioServerParameters

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_taskqueue.cli", "--db", url, "serve"], env=env
    )
    project = f"srv{servers}"

    async def call(client: Client, tool: str, **args: Any) -> Any:
        result = await client.call_tool(tool, args)
        if result.is_error:
            raise RuntimeError(result.content[0].text)  # type: ignore[union-attr]
        return result.structured_content

    async def agent(client: Client, name: str) -> None:
        while True:
            task = (await call(client, "claim_task", worker=name, project=project))["task"]
            if task is None:
                return
            await call(client, "complete_task", task_id=task["id"], worker=name, lease_id=task["lease_id"])

    async def run() -> float:
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(Client(params)) for _ in range(servers)]
            for start in range(0, tasks, 500):
                items = [{"title": f"t{i}", "project": project} for i in range(start, min(tasks, start + 500))]
                await call(clients[0], "create_tasks", tasks=items)
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for s, client in enumerate(clients):
                    for a in range(AGENTS_PER_SERVER):
                        tg.start_soon(agent, client, f"s{s}a{a}")
            return tasks / (time.perf_counter() - started)

    return anyio.run(run)


def run(
    tasks: int,
    server_tasks: int,
    url: str | None = None,
    workers_list: tuple[int, ...] = WORKERS,
    servers_list: tuple[int, ...] = SERVERS,
) -> Section:
    """The whole group on a fresh PostgreSQL server (or the database at `url`); rows for docs/performance.md."""
    from tests.postgres import PostgresServer

    out = Section(f"PostgreSQL: claim+complete, {tasks:,} tasks per run ({server_tasks:,} through servers)")
    server: PostgresServer | None = None
    if url is None:
        try:
            server = PostgresServer(durable=True).start()
        except Exception as exc:  # no binaries: say so, do not fail the other groups
            out.notes.append(f"PostgreSQL could not be started ({exc}); group skipped.")
            return out
        url = server.new_database()
    try:
        for workers in workers_list:
            base = raw(url, tasks, workers)
            mine = ours(url, tasks, workers)
            out.rows.append(
                Row(GROUP, f"claim+complete, {workers} workers", mine, "tasks/s", base, "raw SKIP LOCKED",
                    target=">= 0.5x", ok=mine >= 0.5 * base)
            )  # fmt: skip
            theirs = procrastinate_rate(url, tasks, workers)
            if theirs is None:
                out.notes.append("procrastinate is not installed (`pip install -e '.[bench]'`); skipped.")
            else:
                out.rows.append(
                    Row(GROUP, f"vs procrastinate, {workers} workers", mine, "tasks/s", theirs, "procrastinate",
                        target=">= 1.0x", ok=mine >= theirs)
                )  # fmt: skip
        first: float | None = None
        for count in servers_list:
            rate = servers_rate(url, server_tasks, count)
            first = first or rate
            out.rows.append(
                Row(GROUP, f"over MCP, {count} server processes x {AGENTS_PER_SERVER} agents", rate, "tasks/s",
                    first, "1 server process", target="grows" if count > 1 else "",
                    ok=None if count == 1 else rate > first)
            )  # fmt: skip
        out.notes.append(f"{os.cpu_count()} CPU cores shared by PostgreSQL, the servers and the agents.")
    finally:
        if server is not None:
            server.stop()
    return out

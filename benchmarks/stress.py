"""Many agents, one file: real `mcp-taskqueue serve` processes draining, crashing and recovering.

`python -m benchmarks.stress [--tasks 2000] [--servers 4]` (or `make stress`) runs the long
version; tests/test_multiprocess.py and tests/test_crash.py run the same scenarios small.

Each scenario starts stdio server subprocesses on one SQLite file, drives them through
`mcp.Client`, then checks the file directly: every task finished exactly once, its history
consistent, and `PRAGMA integrity_check` clean.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.subscriptions import ResourceUpdated, Subscription

from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store

BATCH = 500


def server_params(db: Path) -> StdioServerParameters:
    """One `mcp-taskqueue --db DB serve` stdio subprocess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_taskqueue.cli", "--db", str(db), "serve"], env=env
    )


def server_pids(db: Path) -> list[int]:
    """Pids of this process's server children on `db` (Linux /proc), to kill one on purpose."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and str(db).encode() in cmdline and b"serve" in cmdline:
            pids.append(int(entry.name))
    return pids


async def start_server(stack: AsyncExitStack, db: Path) -> tuple[Client, int]:
    """A client on a new server process, and that process's pid."""
    before = set(server_pids(db))
    client = await stack.enter_async_context(Client(server_params(db)))
    (pid,) = set(server_pids(db)) - before
    return client, pid


async def call(client: Client, tool: str, **args: Any) -> Any:
    """A tool call that must succeed; a tool error (e.g. `store_busy`) fails the scenario."""
    result = await client.call_tool(tool, args)
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {result.content[0].text}")  # type: ignore[union-attr]
    return result.structured_content


async def create_batches(client: Client, count: int, project: str = "stress", payload_bytes: int = 0) -> list[str]:
    ids: list[str] = []
    pad = "x" * payload_bytes
    for start in range(0, count, BATCH):
        items = [
            {"title": f"task {i}", "project": project, "payload": {"n": i, "pad": pad}}
            for i in range(start, min(count, start + BATCH))
        ]
        created = await call(client, "create_tasks", tasks=items)
        ids.extend(t["id"] for t in created["tasks"])
    return ids


@dataclass
class DrainReport:
    tasks: int
    servers: int
    seconds: float
    completed_by: dict[str, int] = field(default_factory=dict)
    claims: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    seen_done_after: float | None = None

    @property
    def per_second(self) -> float:
        return self.tasks / self.seconds if self.seconds else 0.0


async def work_until_empty(client: Client, worker: str, claims: Counter[str], done: dict[str, int]) -> None:
    """The agent loop: claim, complete, until a claim comes back empty."""
    while True:
        got = await call(client, "claim_task", worker=worker, project="stress", lease_seconds=120)
        task = got["task"]
        if task is None:
            return
        claims[task["id"]] += 1
        lease = task["lease_id"]
        await call(client, "complete_task", task_id=task["id"], worker=worker, lease_id=lease, result={"by": worker})
        done[worker] = done.get(worker, 0) + 1


async def drain(db: Path, tasks: int, servers: int = 4, watch: bool = True) -> DrainReport:
    """`servers` processes, one client each, claim and complete until `tasks` tasks are done.

    With `watch`, one more process's client subscribes to `taskqueue://stats` and re-reads it
    on every notification: `report.seen_done_after` is how long after the last completion it
    saw every task completed (a lost final notification would leave it waiting forever).
    """
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(Client(server_params(db))) for _ in range(servers)]
        ids = await create_batches(clients[0], tasks)
        report = DrainReport(tasks=tasks, servers=servers, seconds=0.0)
        seen_done = anyio.Event()
        done_at: list[float] = []
        if watch:
            listener = await stack.enter_async_context(Client(server_params(db)))
            sub = await stack.enter_async_context(listener.listen(resource_subscriptions=["taskqueue://stats"]))
        async with anyio.create_task_group() as outer:
            if watch:
                outer.start_soon(watch_until_done, listener, sub, tasks, seen_done, done_at)
            start = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for n, client in enumerate(clients):
                    tg.start_soon(work_until_empty, client, f"agent-{n}", report.claims, report.completed_by)
            report.seconds = time.perf_counter() - start
            if watch:
                drained_at = time.monotonic()
                with anyio.move_on_after(5):
                    await seen_done.wait()
                if not seen_done.is_set():
                    report.problems.append("the stats subscriber never saw the queue drained")
                    outer.cancel_scope.cancel()
                else:
                    report.seen_done_after = max(0.0, done_at[0] - drained_at)
    report.problems += check_drained(db, ids, report.claims)
    return report


async def watch_until_done(
    client: Client, sub: Subscription, tasks: int, seen_done: anyio.Event, done_at: list[float]
) -> None:
    """Re-read the stats on each notification until every task shows completed."""
    async for event in sub:
        if not isinstance(event, ResourceUpdated):
            continue
        read = await client.read_resource("taskqueue://stats")
        stats = json.loads(read.contents[0].text)  # type: ignore[union-attr]
        if stats["by_status"].get("completed", 0) >= tasks:
            done_at.append(time.monotonic())
            seen_done.set()
            return


def check_drained(db: Path, ids: list[str], claims: Counter[str]) -> list[str]:
    """Every task completed exactly once, by the worker that claimed it, with a consistent history."""
    problems = []
    twice = [i for i, n in claims.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} tasks claimed more than once, e.g. {twice[:3]}")
    missing = set(ids) - set(claims)
    if missing:
        problems.append(f"{len(missing)} tasks never claimed")
    store = Store(db)
    try:
        queue = TaskQueue(store)
        for task_id in ids:
            task = queue.get(task_id)
            actions = [(e.action, e.actor) for e in queue.history(task_id).events]
            names = [a for a, _ in actions]
            if task.status != "completed" or names != ["created", "claimed", "complete"]:
                problems.append(f"task {task_id}: status {task.status}, history {names}")
            elif actions[1][1] != actions[2][1] or task.result != {"by": actions[2][1]}:
                problems.append(f"task {task_id}: claimed by {actions[1][1]} but completed by {actions[2][1]}")
        if (check := store.integrity_check()) != "ok":
            problems.append(f"integrity_check: {check}")
    finally:
        store.close()
    return problems


async def kill_while_leased(db: Path, leased: int, lease_seconds: int = 1) -> tuple[list[str], list[str], float]:
    """A server claims `leased` tasks and is SIGKILLed holding them; another server finishes them.

    Returns (ids the victim held, ids the rescuer completed, seconds from kill to all done).
    """
    async with Client(server_params(db)) as rescuer:
        await create_batches(rescuer, leased, project="crash")
        held: list[str] = []
        victim_stack = AsyncExitStack()
        victim, victim_pid = await start_server(victim_stack, db)
        try:
            for _ in range(leased):
                got = await call(victim, "claim_task", worker="victim", project="crash", lease_seconds=lease_seconds)
                held.append(got["task"]["id"])
            os.kill(victim_pid, signal.SIGKILL)
            killed_at = time.monotonic()
        finally:
            with contextlib.suppress(Exception):  # the victim's pipe broke: that is the point
                await victim_stack.aclose()
        finished: list[str] = []
        with anyio.fail_after(30 + lease_seconds * 5):
            while len(finished) < leased:
                got = await call(rescuer, "claim_task", worker="rescuer", project="crash", lease_seconds=60)
                if got["task"] is None:
                    await anyio.sleep(0.1)  # leases not yet expired
                    continue
                await call(
                    rescuer, "complete_task", task_id=got["task"]["id"], worker="rescuer", lease_id=got["lease_id"]
                )
                finished.append(got["task"]["id"])
        return held, finished, time.monotonic() - killed_at


async def kill_during_batch_create(db: Path, batch: int, payload_bytes: int, rng: random.Random) -> int:
    """Kill a server at a random moment while it writes batches; returns the tasks found afterwards."""
    stack = AsyncExitStack()
    client, pid = await start_server(stack, db)
    pad = "y" * payload_bytes

    async def write_forever() -> None:
        n = 0
        while True:
            items = [{"title": f"b{n}-{i}", "project": "atomic", "payload": {"pad": pad}} for i in range(batch)]
            await client.call_tool("create_tasks", {"tasks": items})
            n += 1

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(write_forever)
            await anyio.sleep(rng.uniform(0.3, 1.2))
            os.kill(pid, signal.SIGKILL)
            await anyio.sleep(0.2)
            tg.cancel_scope.cancel()
    except Exception:  # the in-flight call breaks with the pipe
        pass
    finally:
        with contextlib.suppress(Exception):  # the server's pipe broke: that is the point
            await stack.aclose()
    store = Store(db)
    try:
        return int(store.db.execute("SELECT count(*) FROM tasks WHERE project = 'atomic'").fetchone()[0])
    finally:
        store.close()


async def main_async(tasks: int, servers: int, kills: int) -> int:
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "stress.db"
        report = await drain(db, tasks, servers)
        print(
            f"drain: {tasks} tasks, {servers} servers: {report.seconds:.1f} s ({report.per_second:.0f} tasks/s); "
            f"per agent {sorted(report.completed_by.values())}; a stats subscriber on a fifth server saw it "
            f"drained {report.seen_done_after or 0:.2f} s after the last completion; "
            f"problems: {report.problems or 'none'}"
        )
        failures += bool(report.problems)

        crash_db = Path(tmp) / "crash.db"
        held, finished, recovery = await kill_while_leased(crash_db, leased=50, lease_seconds=2)
        ok = sorted(held) == sorted(finished)
        print(f"crash: SIGKILL holding {len(held)} leases; all reclaimed and finished {recovery:.1f} s after the kill")
        failures += not ok

        rng = random.Random(4)
        atomic_db = Path(tmp) / "atomic.db"
        counts = []
        for _ in range(kills):
            counts.append(await kill_during_batch_create(atomic_db, batch=200, payload_bytes=2000, rng=rng))
        whole = all(c % 200 == 0 for c in counts)
        print(f"batch kill: {kills} kills, task counts after each {counts}: {'all whole batches' if whole else 'TORN'}")
        failures += not whole
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--kills", type=int, default=10)
    args = parser.parse_args()
    failures = anyio.run(main_async, args.tasks, args.servers, args.kills)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

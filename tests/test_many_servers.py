"""Many servers, one queue: HTTP server processes sharing one PostgreSQL database.

Three `mcp-taskqueue serve --transport http` processes on one database and eight agents spread
over them drain 2,000 tasks with dependencies: every task is completed exactly once, by the
agent that claimed it, with a consistent history. A subscriber on one server hears a change
made through another within a second (the change feed reads the events from the database by
the transaction that wrote them, so this works across hosts too). A server SIGKILLed while holding leases loses them to the others
once they expire.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from contextlib import AsyncExitStack, ExitStack

import anyio
import pytest
from mcp import Client
from mcp.client.subscriptions import ResourceUpdated

from mcp_taskqueue.store import open_store
from tests.mcp_calls import call
from tests.servers import http_server, http_server_process

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PAIRS = 1_000  # 2,000 tasks: each second task of a pair depends on the first
AGENTS = 8


@pytest.fixture
def engine() -> str:
    """`db_path` is a fresh PostgreSQL database in this module."""
    return "postgres"


async def agent(client: Client, name: str, claims: Counter[str], done: dict[str, str], total: int) -> None:
    """Claim and complete until every task is done (an empty claim may only mean "not ready yet")."""
    while len(done) < total:
        got = await call(client, "claim_task", worker=name, project="many", lease_seconds=300)
        task = got["task"]
        if task is None:
            await anyio.sleep(0.05)
            continue
        claims[task["id"]] += 1
        await call(
            client, "complete_task", task_id=task["id"], worker=name, lease_id=task["lease_id"], result={"by": name}
        )
        done[task["id"]] = name


async def test_three_servers_eight_agents_drain_2000_tasks_exactly_once(db_path: str) -> None:
    with ExitStack() as servers:
        bases = [servers.enter_context(http_server(db_path)) for _ in range(3)]
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(Client(bases[n % 3] + "/mcp")) for n in range(AGENTS)]
            ids: list[str] = []
            for start in range(0, PAIRS, 250):
                items = []
                for i in range(start, start + 250):
                    items.append({"title": f"first {i}", "project": "many", "ref": f"a{i}"})
                    items.append({"title": f"then {i}", "project": "many", "depends_on": [f"a{i}"]})
                created = await call(clients[start // 250 % 3], "create_tasks", tasks=items)
                ids.extend(t["id"] for t in created["tasks"])
            claims: Counter[str] = Counter()
            done: dict[str, str] = {}
            started = time.perf_counter()
            with anyio.fail_after(600):
                async with anyio.create_task_group() as tg:
                    for n, client in enumerate(clients):
                        tg.start_soon(agent, client, f"agent-{n}", claims, done, len(ids))
            seconds = time.perf_counter() - started
            print(f"\n3 servers, {AGENTS} agents: {len(ids)} tasks in {seconds:.1f} s ({len(ids) / seconds:.0f}/s)")

            # A subscriber on server A hears a change made through server B within a second.
            listener, writer = clients[0], clients[1]
            watched = ids[0]
            uri = f"taskqueue://tasks/{watched}"
            async with listener.listen(resource_subscriptions=[uri]) as sub:
                await anyio.sleep(0.5)  # let the listen stream open on server A
                start = time.monotonic()
                await call(writer, "add_note", task_id=watched, text="seen on A?")
                with anyio.fail_after(5):
                    async for event in sub:
                        if isinstance(event, ResourceUpdated) and event.uri == uri:
                            break
                latency = time.monotonic() - start
            assert latency < 1.0, latency

    assert len(claims) == len(ids) == 2 * PAIRS and set(claims.values()) == {1}
    assert len(set(done.values())) == AGENTS  # every agent (so every server) took part
    store = open_store(db_path)
    try:

        def histories(tx: object) -> dict[str, tuple[str, str | None]]:
            rows = tx.conn.execute(  # type: ignore[attr-defined]
                "SELECT t.id, t.status, string_agg(e.action || ':' || coalesce(e.actor, ''), ',' ORDER BY e.seq) "
                "FROM tasks t JOIN events e ON e.task_seq = t.seq WHERE e.action <> 'note' GROUP BY t.id, t.status"
            )
            return {row[0]: (row[1], row[2]) for row in rows}

        found = store.read(histories)
    finally:
        store.close()
    assert set(found) == set(ids)
    for task_id, (status, history) in found.items():
        by = done[task_id]
        steps = history.split(",")
        actions = [step.split(":")[0] for step in steps]
        assert status == "completed", (task_id, status)
        assert actions in (["created", "claimed", "complete"], ["created", "ready", "claimed", "complete"]), history
        assert steps[-2:] == [f"claimed:{by}", f"complete:{by}"], history


async def test_a_killed_server_s_leases_are_reclaimed_by_the_others(db_path: str) -> None:
    with http_server_process(db_path) as (doomed_base, doomed), http_server(db_path) as survivor_base:
        async with Client(doomed_base + "/mcp") as doomed_client, Client(survivor_base + "/mcp") as survivor:
            await call(survivor, "create_tasks", tasks=[{"title": f"t{i}", "project": "kill"} for i in range(6)])
            held = []
            for _ in range(3):
                got = await call(doomed_client, "claim_task", worker="doomed", project="kill", lease_seconds=2)
                held.append(got["task"]["id"])
            os.kill(doomed.pid, signal.SIGKILL)
            doomed.wait(timeout=10)
            finished: dict[str, str] = {}
            with anyio.fail_after(60):
                while len(finished) < 6:
                    got = await call(survivor, "claim_task", worker="survivor", project="kill")
                    task = got["task"]
                    if task is None:
                        await anyio.sleep(0.2)  # the dead server's leases have not expired yet
                        continue
                    await call(
                        survivor, "complete_task", task_id=task["id"], worker="survivor", lease_id=task["lease_id"]
                    )
                    finished[task["id"]] = "survivor"
            for task_id in held:
                read = await survivor.read_resource(f"taskqueue://tasks/{task_id}/history")
                actions = [e["action"] for e in json.loads(read.contents[0].text)["events"]]  # type: ignore[union-attr]
                assert actions[:2] == ["created", "claimed"] and "lease_expired" in actions, actions
                assert actions[-1] == "complete"

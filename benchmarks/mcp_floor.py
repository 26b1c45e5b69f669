"""Group 3: claim_task+complete_task through mcp.Client against the SDK floor.

The floor is a bare `MCPServer` with no-op tools taking the same arguments
(benchmarks/floor_server.py), driven the same way in the same run: in memory, over stdio,
and by 8 concurrent clients over streamable HTTP and over SSE. Figures are tool calls per
second (a claim+complete round trip is two calls).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp.client.sse import sse_client

from benchmarks.fill import fill_ready
from benchmarks.floor_server import build_floor_server
from benchmarks.report import Row, Section
from benchmarks.servers import floor_args, free_port, http_server, ours_args, stdio_params
from mcp_taskqueue.server.app import build_server

GROUP = "3 mcp"
CLIENTS = 8
WARMUP = 10
ROUNDS = 4


async def call(client: Client, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    if result.is_error:
        raise RuntimeError(f"{name} failed: {result.content}")
    data = result.structured_content
    assert isinstance(data, dict)
    return data


async def round_trips(client: Client, count: int, worker: str) -> None:
    """claim_task then complete_task, `count` times; every claim must find a task."""
    for _ in range(count):
        claimed = await call(client, "claim_task", {"worker": worker})
        task = claimed["task"]
        if task is None:
            raise RuntimeError("claim_task found nothing: the benchmark database has too few tasks")
        await call(
            client, "complete_task", {"task_id": task["id"], "worker": worker, "lease_id": claimed.get("lease_id")}
        )


ClientFactory = Callable[[], AbstractAsyncContextManager[Client]]


async def race(factories: dict[str, ClientFactory], count: int, clients: int = 1) -> dict[str, float]:
    """Tool calls per second for each server, `clients` connected clients each, taking turns.

    All clients of all servers connect and warm up first; then each round every server gets
    the same share of round trips, one after the other, so load drift hits them alike."""
    per_round = max(1, count // (clients * ROUNDS))  # round trips per client per round
    spent = dict.fromkeys(factories, 0.0)
    async with AsyncExitStack() as stack:
        connected: dict[str, list[Client]] = {}
        for name, factory in factories.items():
            connected[name] = [await stack.enter_async_context(factory()) for _ in range(clients)]
            for index, client in enumerate(connected[name]):
                await round_trips(client, WARMUP // clients + 1, f"w{index}")
        for _ in range(ROUNDS):
            for name, group_clients in connected.items():
                start = time.perf_counter()
                async with anyio.create_task_group() as group:
                    for index, client in enumerate(group_clients):
                        group.start_soon(round_trips, client, per_round, f"w{index}")
                spent[name] += time.perf_counter() - start
    return {name: 2 * per_round * clients * ROUNDS / seconds for name, seconds in spent.items()}


def needed(count: int, clients: int = 1) -> int:
    """Ready tasks a race of `count` round trips by `clients` clients will claim, warm-up included."""
    per_round = max(1, count // (clients * ROUNDS))
    return (per_round * ROUNDS + WARMUP // clients + 1) * clients + 10


async def in_memory(db: Path, count: int) -> tuple[float, float]:
    fill_ready(db, needed(count))
    ours = build_server(str(db))
    floor = build_floor_server()
    rates = await race({"ours": lambda: Client(ours), "floor": lambda: Client(floor)}, count)
    ours.queue.store.close()  # type: ignore[attr-defined]
    return rates["ours"], rates["floor"]


async def over_stdio(db: Path, count: int) -> tuple[float, float]:
    fill_ready(db, needed(count))
    rates = await race(
        {
            "ours": lambda: Client(stdio_params(ours_args(db, "stdio"))),
            "floor": lambda: Client(stdio_params(floor_args("stdio"))),
        },
        count,
    )
    return rates["ours"], rates["floor"]


def over_http(db: Path, count: int, sse: bool) -> tuple[float, float]:
    fill_ready(db, needed(count, CLIENTS))
    ours_port, floor_port = free_port(), free_port()

    def factory(port: int) -> ClientFactory:
        base = f"http://127.0.0.1:{port}"
        return lambda: Client(sse_client(f"{base}/sse")) if sse else Client(f"{base}/mcp")

    with (
        http_server(ours_args(db, "http", ours_port), ours_port),
        http_server(floor_args("http", floor_port), floor_port),
    ):
        rates = anyio.run(race, {"ours": factory(ours_port), "floor": factory(floor_port)}, count, CLIENTS)
    return rates["ours"], rates["floor"]


def run(workdir: Path, count: int, concurrent_count: int) -> Section:
    section = Section("Through MCP vs the SDK floor (tool calls per second; claim+complete = 2 calls)")
    ours, floor = anyio.run(in_memory, workdir / "mcp-memory.db", count)
    section.rows.append(row("in memory, 1 client", ours, floor, 0.5))
    ours, floor = anyio.run(over_stdio, workdir / "mcp-stdio.db", count)
    section.rows.append(row("stdio, 1 client", ours, floor, 0.8))
    ours, floor = over_http(workdir / "mcp-http.db", concurrent_count, sse=False)
    section.rows.append(row(f"streamable HTTP, {CLIENTS} clients", ours, floor, None))
    ours, floor = over_http(workdir / "mcp-sse.db", concurrent_count, sse=True)
    section.rows.append(row(f"SSE, {CLIENTS} clients", ours, floor, None))
    return section


def row(name: str, ours: float, floor: float, target: float | None) -> Row:
    return Row(
        GROUP,
        name,
        ours,
        "calls/s",
        floor,
        "SDK floor",
        target=f">= {target}x" if target is not None else "",
        ok=None if target is None else ours >= target * floor,
    )

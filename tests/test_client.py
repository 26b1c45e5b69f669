"""The typed client against real servers: in memory, a stdio subprocess, and HTTP."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp import StdioServerParameters

from mcp_taskqueue.client import (
    Conflict,
    InvalidTransition,
    LeaseLost,
    NotFound,
    SyncTaskQueueClient,
    TaskQueueClient,
    TransportFailed,
    UnknownTool,
    ValidationFailed,
    _resolve,
    error_from_tool,
)
from mcp_taskqueue.errors import StoreBusy
from mcp_taskqueue.models import ClaimResult, Status, Task, TaskSpec, TaskState
from mcp_taskqueue.server.app import build_server
from tests.servers import free_port, http_server, server_env, stdio_params


async def worker_round_trip(tq: TaskQueueClient) -> None:
    """The same story on every transport: create, claim, heartbeat, complete, read back."""
    created = await tq.create_task("Write docs", project="p1", kind="docs", payload={"pages": 3}, tags=["x"])
    assert isinstance(created, TaskState) and created.status is Status.ready
    claim = await tq.claim_task("w1", project="p1", kinds=["docs"], lease_seconds=30)
    assert isinstance(claim, ClaimResult) and claim.task is not None and claim.task.id == created.id
    beat = await tq.heartbeat(created.id, "w1", progress=0.5, message="halfway")
    assert beat.progress == 0.5
    done = await tq.complete_task(created.id, "w1", {"ok": True})
    assert done.status is Status.completed
    task = await tq.get_task(created.id)
    assert isinstance(task, Task) and task.result == {"ok": True} and task.payload == {"pages": 3}
    assert (await tq.claim_task("w1", project="p1")).task is None


@pytest.mark.anyio
async def test_in_memory_by_db_path(db_path: Path) -> None:
    async with TaskQueueClient(db_path) as tq:
        await worker_round_trip(tq)
        stats = await tq.queue_stats("p1")
        assert stats.by_status["completed"] == 1 and stats.total == 1


@pytest.mark.anyio
async def test_in_memory_by_server_object(db_path: Path) -> None:
    async with TaskQueueClient(build_server(str(db_path))) as tq:
        await worker_round_trip(tq)
        projects = await tq.list_projects()
        assert [p.name for p in projects.projects] == ["p1"]
        project = await tq.get_project("p1")
        assert project.task_counts["completed"] == 1


@pytest.mark.anyio
async def test_tool_errors_become_typed_exceptions(db_path: Path) -> None:
    async with TaskQueueClient(db_path) as tq:
        with pytest.raises(NotFound) as missing:
            await tq.get_task("nope")
        assert missing.value.tool == "get_task"  # type: ignore[attr-defined]
        await tq.create_project("dup")
        with pytest.raises(Conflict):
            await tq.create_project("dup")
        ready = await tq.create_task("t")
        with pytest.raises(InvalidTransition):
            await tq.retry_task(ready.id)
        assert (await tq.claim_task("owner")).task is not None
        with pytest.raises(LeaseLost):
            await tq.complete_task(ready.id, "intruder")
        with pytest.raises(ValidationFailed, match="priority"):
            await tq.create_task("bad", priority="urgent")
        with pytest.raises(ValidationFailed, match="cycle"):
            a = await tq.create_task("a")
            b = await tq.create_task("b", depends_on=[a.id])
            await tq.add_dependency(a.id, b.id)
        with pytest.raises(NotFound):
            await tq.task_history("nope")
        # Nothing the errors touched changed: the lease is still the owner's.
        assert (await tq.get_task(ready.id)).worker == "owner"


@pytest.mark.anyio
async def test_an_error_in_the_body_propagates_as_itself(db_path: Path) -> None:
    with pytest.raises(NotFound, match="nope"):
        async with TaskQueueClient(db_path) as tq:
            await tq.get_task("nope")


def test_error_text_mapping() -> None:
    assert isinstance(error_from_tool("x", "Error executing tool x: store_busy: locked"), StoreBusy)
    assert isinstance(error_from_tool("x", "Unknown tool: x"), UnknownTool)
    exc = error_from_tool("claim_task", "Error executing tool claim_task: lease_lost: gone")
    assert isinstance(exc, LeaseLost) and str(exc) == "gone"


@pytest.mark.anyio
async def test_missing_toolset_raises_unknown_tool(db_path: Path) -> None:
    async with TaskQueueClient(db_path, toolsets="tasks") as tq:
        with pytest.raises(UnknownTool):
            await tq.claim_task("w")


@pytest.mark.anyio
async def test_batch_creation_resolves_refs_across_batches(db_path: Path) -> None:
    specs: list[TaskSpec | dict[str, object]] = [TaskSpec(title="root", ref="root")]
    specs += [{"title": f"child {i}", "ref": f"c{i}", "depends_on": ["root"]} for i in range(4)]
    specs.append({"title": "last", "depends_on": ["c3", "root"]})
    async with TaskQueueClient(db_path) as tq:
        created = await tq.create_many(specs, batch_size=2)
        assert len(created.tasks) == 6
        assert [t.status for t in created.tasks] == [Status.ready] + [Status.pending] * 5
        last = await tq.get_task(created.tasks[-1].id)
        assert set(last.depends_on) == {created.refs["c3"], created.refs["root"]}
        listed = [t.id async for t in tq.iter_tasks(limit=2)]
        assert sorted(listed) == sorted(t.id for t in created.tasks)


@pytest.mark.anyio
async def test_stdio_subprocess(db_path: Path) -> None:
    params = stdio_params(db_path)
    async with TaskQueueClient.stdio(params.command, *params.args, env=params.env) as tq:
        await worker_round_trip(tq)
    # A command given as a list means the same subprocess.
    resolved = _resolve([params.command, *params.args], None)
    assert isinstance(resolved, StdioServerParameters) and resolved.args == params.args


@pytest.mark.anyio
async def test_http_server(db_path: Path) -> None:
    with http_server(db_path) as base:
        async with TaskQueueClient(base + "/mcp") as tq:
            await worker_round_trip(tq)
            history = await tq.task_history((await tq.list_tasks()).tasks[0].id)
            assert [e.action for e in history.events][:2] == ["created", "claimed"]


@pytest.mark.anyio
async def test_a_bare_server_url_means_its_mcp_endpoint(db_path: Path) -> None:
    """`http://host:port` (no path, or `/`) reaches `/mcp`, as the TypeScript client does."""
    with http_server(db_path) as base:
        for url in (base, base + "/"):
            async with TaskQueueClient(url) as tq:
                task = await tq.create_task(title=f"via {url}")
                assert (await tq.get_task(task.id)).title == f"via {url}"


@pytest.mark.anyio
async def test_connect_retries_until_the_server_is_up(db_path: Path) -> None:
    """A client started before its server connects once the server listens (transient errors retried)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_taskqueue.cli", "--db", str(db_path), "serve", "--transport", "http"]
        + ["--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=server_env(),
    )
    try:
        started = time.monotonic()
        async with TaskQueueClient(f"http://127.0.0.1:{port}/mcp", retries=10, backoff=0.2) as tq:
            assert (await tq.queue_stats()).total == 0
        assert time.monotonic() - started < 30
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.anyio
async def test_unreachable_server_raises_transport_failed() -> None:
    started = time.monotonic()
    with pytest.raises(TransportFailed):
        async with TaskQueueClient(f"http://127.0.0.1:{free_port()}/mcp", retries=2, backoff=0.05):
            pass
    assert time.monotonic() - started < 10


def test_sync_client(db_path: Path) -> None:
    with SyncTaskQueueClient(db_path) as tq:
        state = tq.create_task("sync", priority="high")
        assert tq.get_task(state.id).priority.value == "high"
        with pytest.raises(NotFound):
            tq.get_task("nope")
    # A second client on the same file sees the first one's work.
    with SyncTaskQueueClient(db_path) as tq:
        assert tq.queue_stats().total == 1


@pytest.mark.anyio
async def test_workflow_methods_use_spec_tool_names(db_path: Path) -> None:
    """create_workflow/get_workflow/list_workflows/cancel_workflow, when the server has them."""
    async with TaskQueueClient(db_path) as tq:
        tools = {t.name for t in (await tq.mcp.list_tools()).tools}
        if "create_workflow" not in tools:
            with pytest.raises(UnknownTool):
                await tq.list_workflows()
            pytest.skip("the workflow tools are not registered on this server yet")
        spec = {
            "name": "ship",
            "tasks": [{"ref": "a", "title": "A"}, {"ref": "b", "title": "B", "depends_on": ["a"]}],
        }
        created = await tq.create_workflow(spec)
        assert created.total == 2 and created.refs.keys() == {"a", "b"}
        shown = await tq.get_workflow(created.id)
        assert {t.id for t in shown.tasks} == set(created.refs.values())
        assert {t.id: t.status for t in shown.tasks}[created.refs["b"]] is Status.pending
        assert [w.id for w in (await tq.list_workflows()).workflows] == [created.id]
        cancelled = await tq.cancel_workflow(created.id)
        assert cancelled.status == "cancelled"


@pytest.mark.anyio
async def test_concurrent_claims_through_one_client(db_path: Path) -> None:
    async with TaskQueueClient(db_path) as tq:
        await tq.create_tasks([{"title": f"t{i}"} for i in range(10)])
        claimed: list[str] = []

        async def grab(name: str) -> None:
            while (result := await tq.claim_task(name)).task is not None:
                claimed.append(result.task.id)

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(grab, f"w{i}")
        assert len(claimed) == 10 == len(set(claimed))


def start_http(db_path: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mcp_taskqueue.cli", "--db", str(db_path), "serve", "--transport", "http"]
        + ["--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=server_env(),
    )


@pytest.mark.anyio
async def test_reconnects_after_the_server_restarts(db_path: Path) -> None:
    """A broken connection is replaced on the next call; safe calls are repeated, others are not."""
    port = free_port()
    proc = start_http(db_path, port)
    try:
        async with TaskQueueClient(f"http://127.0.0.1:{port}/mcp", retries=8, backoff=0.2) as tq:
            state = await tq.create_task("survives restarts")
            proc.terminate()
            proc.wait(timeout=10)
            # Server gone: a create (not safe to repeat) fails fast as a transport error.
            with pytest.raises(TransportFailed):
                await tq.create_task("lost in the outage")
            proc = start_http(db_path, port)
            # A read is retried with backoff across the restart, on a new connection.
            task = await tq.get_task(state.id)
            assert task.title == "survives restarts"
            assert (await tq.create_task("after the restart")).status is Status.ready
            assert (await tq.queue_stats()).total == 2  # the interrupted create never happened
    finally:
        proc.terminate()
        proc.wait(timeout=10)

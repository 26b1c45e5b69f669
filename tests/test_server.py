"""Every tool, resource and prompt of the core groups, through a real `mcp.Client` in memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from mcp_taskqueue.server.app import build_server
from tests.mcp_calls import call, call_error

pytestmark = pytest.mark.anyio

CORE_TOOLS = {
    "tasks": {
        "create_task",
        "create_tasks",
        "get_task",
        "list_tasks",
        "update_task",
        "add_note",
        "add_dependency",
        "remove_dependency",
        "cancel_task",
        "retry_task",
    },
    "queue": {"claim_task", "heartbeat", "complete_task", "fail_task", "release_task", "queue_stats"},
    "projects": {"create_project", "list_projects", "update_project"},
}
TOOLS_LIST_BUDGET = 32 * 1024
CORE_TOOLSETS_BUDGET = 12 * 1024


async def task_count(client: Client) -> int:
    stats = await call(client, "queue_stats")
    return int(stats["total"])


async def test_tools_list_is_complete_described_and_small(client: Client) -> None:
    tools = (await client.list_tools()).tools
    names = {t.name for t in tools}
    for group in CORE_TOOLS.values():
        assert group <= names
    for tool in tools:
        assert tool.description and len(tool.description) > 20, tool.name
        assert tool.output_schema is not None and tool.output_schema.get("type") == "object", tool.name
        assert tool.annotations is not None and tool.annotations.read_only_hint is not None, tool.name
        if not tool.annotations.read_only_hint:
            assert tool.annotations.destructive_hint is not None, tool.name
    by_name = {t.name: t for t in tools}
    assert by_name["get_task"].annotations.read_only_hint is True  # type: ignore[union-attr]
    assert by_name["cancel_task"].annotations.destructive_hint is True  # type: ignore[union-attr]
    # Compact JSON, as the transports send it (tests/test_transports.py checks the raw stdio bytes too).
    wire = json.dumps(
        [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools], separators=(",", ":")
    )
    assert len(wire.encode()) < TOOLS_LIST_BUDGET, f"tools/list is {len(wire.encode())} bytes"


async def test_the_core_toolsets_fit_their_own_budget(db_path: Path) -> None:
    """`--toolsets tasks,queue` (what a plain worker agent loads) stays within 12 KB of compact JSON."""
    async with Client(build_server(db_path, toolsets="tasks,queue")) as c:
        tools = (await c.list_tools()).tools
    wire = json.dumps(
        [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools], separators=(",", ":")
    )
    assert len(wire.encode()) <= CORE_TOOLSETS_BUDGET, f"tasks,queue tools/list is {len(wire.encode())} bytes"
    by_name = {t.name: t for t in tools}
    # null means "the default" for every optional argument, and the schema says so
    assert "null" in by_name["create_task"].input_schema["properties"]["project"]["type"]
    assert by_name["claim_task"].output_schema["properties"].keys() >= {"task", "lease_id"}  # type: ignore[union-attr]


async def test_toolsets_expose_a_subset(db_path: Path) -> None:
    async with Client(build_server(db_path, toolsets="queue")) as c:
        names = {t.name for t in (await c.list_tools()).tools}
    assert names == CORE_TOOLS["queue"]
    with pytest.raises(ValueError, match="unknown toolset"):
        build_server(db_path, toolsets="queue,nonsense")


async def test_worker_round_trip(client: Client) -> None:
    created = await call(
        client,
        "create_task",
        title="Write the tokenizer",
        priority="high",
        payload={"file": "lex.py"},
        tags=["parser"],
        acceptance_criteria=["handles unicode"],
    )
    assert created["status"] == "ready" and created["version"] == 1
    assert "error" not in created  # nulls are omitted, not sent
    claim = await call(client, "claim_task", worker="agent-1", lease_seconds=120)
    task = claim["task"]
    assert task["id"] == created["id"] and task["payload"] == {"file": "lex.py"}
    assert task["acceptance_criteria"] == ["handles unicode"] and claim["lease_expires_at"]
    assert claim["lease_id"] == task["lease_id"] and len(claim["lease_id"]) >= 16
    assert await call(client, "claim_task", worker="agent-2") == {"task": None}
    lease = {"task_id": created["id"], "worker": "agent-1", "lease_id": claim["lease_id"]}
    beat = await call(client, "heartbeat", **lease, progress=0.5)
    assert beat["progress"] == 0.5 and beat["lease_expires_at"]
    done = await call(client, "complete_task", **lease, result={"ok": True})
    assert done["status"] == "completed"
    full = await call(client, "get_task", task_id=created["id"])
    assert full["result"] == {"ok": True} and full["progress"] == 1.0


async def test_fail_release_cancel_retry(client: Client) -> None:
    a = await call(client, "create_task", title="a", max_attempts=1)
    b = await call(client, "create_task", title="b", depends_on=[a["id"]])
    lease = (await call(client, "claim_task", worker="w"))["lease_id"]
    failed = await call(client, "fail_task", task_id=a["id"], worker="w", lease_id=lease, error="disk full")
    assert failed["status"] == "failed" and failed["error"] == "disk full"
    assert (await call(client, "get_task", task_id=b["id"]))["blocked_by"] == [a["id"]]
    retried = await call(client, "retry_task", task_id=a["id"])
    assert retried["status"] == "ready"
    lease = (await call(client, "claim_task", worker="w"))["lease_id"]
    released = await call(client, "release_task", task_id=a["id"], worker="w", lease_id=lease)
    assert released["status"] == "ready" and released["attempts"] == 0
    cancelled = await call(client, "cancel_task", task_id=b["id"], reason="scope cut")
    assert cancelled["status"] == "cancelled"


async def test_batch_update_notes_and_dependencies(client: Client) -> None:
    batch = await call(
        client,
        "create_tasks",
        tasks=[
            {"title": "design", "ref": "d", "project": "app"},
            {"title": "build", "ref": "b", "depends_on": ["d"], "project": "app"},
        ],
    )
    ids = batch["refs"]
    assert [t["status"] for t in batch["tasks"]] == ["ready", "pending"]
    updated = await call(client, "update_task", task_id=ids["d"], expected_version=1, priority="critical")
    assert updated["version"] == 2
    stale = await call_error(client, "update_task", task_id=ids["d"], expected_version=1, title="x")
    assert "conflict: " in stale and "version 2, not 1" in stale
    note = await call(client, "add_note", task_id=ids["d"], text="chose SQLite")
    assert note["action"] == "note"
    extra = await call(client, "create_task", title="docs", project="app")
    assert (await call(client, "add_dependency", task_id=extra["id"], depends_on=ids["b"]))["status"] == "pending"
    cycle = await call_error(client, "add_dependency", task_id=ids["d"], depends_on=extra["id"])
    assert "cycle" in cycle and ids["d"] in cycle
    assert (await call(client, "remove_dependency", task_id=extra["id"], depends_on=ids["b"]))["status"] == "ready"
    page = await call(client, "list_tasks", project="app", limit=2)
    assert [t["title"] for t in page["tasks"]] == ["design", "build"] and page["next_cursor"]
    rest = await call(client, "list_tasks", project="app", cursor=page["next_cursor"])
    assert [t["title"] for t in rest["tasks"]] == ["docs"] and "next_cursor" not in rest
    found = await call(client, "list_tasks", query="docs")
    assert [t["id"] for t in found["tasks"]] == [extra["id"]]


async def test_list_summaries_are_compact(client: Client) -> None:
    for i in range(20):
        await call(client, "create_task", title=f"Implement feature number {i} of the roadmap", tags=["x"])
    result = await client.call_tool("list_tasks", {"limit": 20})
    text = result.content[0].text  # type: ignore[union-attr]
    per_task = len(text.encode()) / 20
    assert per_task < 300, per_task


async def test_projects_tools(client: Client) -> None:
    project = await call(client, "create_project", name="web", description="site", required_reviews=2)
    assert project["settings"]["required_reviews"] == 2
    again = await call_error(client, "create_project", name="web")
    assert "conflict: project 'web' already exists" in again
    updated = await call(client, "update_project", name="web", coverage_threshold=75)
    assert updated["settings"]["coverage_threshold"] == 75 and updated["settings"]["required_reviews"] == 2
    listing = await call(client, "list_projects")
    assert [p["name"] for p in listing["projects"]] == ["web"]


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("get_task", {"task_id": "nope"}, "not_found: no task with id 'nope'"),
        ("complete_task", {"task_id": "nope", "worker": "w", "lease_id": "x"}, "not_found"),
        ("complete_task", {"task_id": "nope", "worker": "w"}, "lease_id: Field required"),
        ("create_task", {"title": 42}, "validation_failed: title: Input should be a valid string"),
        ("create_task", {"title": "x" * 501}, "title"),
        ("create_task", {"title": "ok", "priority": "urgent"}, "priority"),
        ("create_task", {"title": "ok", "depends_on": ["ghost"]}, "not_found"),
        ("create_task", {"title": "ok", "project": "has space"}, "project"),
        ("create_tasks", {"tasks": []}, "tasks"),
        ("list_tasks", {"limit": 100000}, "limit"),
        ("list_tasks", {"cursor": "%%%"}, "cursor"),
        ("claim_task", {"worker": ""}, "worker"),
        ("claim_task", {"worker": "w", "lease_seconds": -5}, "lease_seconds"),
        ("heartbeat", {"task_id": "nope", "worker": "w", "lease_id": "x", "progress": 3}, "progress"),
        ("update_project", {"name": "missing", "description": "x"}, "not_found"),
        ("no_such_tool", {}, "no_such_tool"),
        ("create_task", {"title": "ok", "priorty": "high"}, "validation_failed: unknown argument(s) priorty"),
    ],
)
async def test_bad_input_is_a_clear_tool_error_and_changes_nothing(
    client: Client, tool: str, args: dict[str, Any], expected: str
) -> None:
    existing = await call(client, "create_task", title="bystander")
    before = await call(client, "get_task", task_id=existing["id"])
    count = await task_count(client)
    message = await call_error(client, tool, **args)
    assert expected in message, message
    assert await task_count(client) == count
    assert await call(client, "get_task", task_id=existing["id"]) == before


async def test_wrong_worker_and_illegal_transitions(client: Client) -> None:
    task = await call(client, "create_task", title="t")
    lease = (await call(client, "claim_task", worker="owner"))["lease_id"]
    message = await call_error(client, "complete_task", task_id=task["id"], worker="intruder", lease_id=lease)
    assert "lease_lost" in message and "held by 'owner'" in message
    await call(client, "complete_task", task_id=task["id"], worker="owner", lease_id=lease)
    message = await call_error(client, "cancel_task", task_id=task["id"])
    assert "invalid_transition: cannot cancel task" in message and "completed" in message
    assert (await call(client, "get_task", task_id=task["id"]))["status"] == "completed"


async def read_json(client: Client, uri: str) -> Any:
    result = await client.read_resource(uri)
    content = result.contents[0]
    assert content.mime_type == "application/json"
    return json.loads(content.text)  # type: ignore[union-attr]


async def test_resources(client: Client) -> None:
    task = await call(client, "create_task", title="t", project="web")
    await call(client, "add_note", task_id=task["id"], text="hello")
    listed = {str(r.uri) for r in (await client.list_resources()).resources}
    assert {"taskqueue://stats", "taskqueue://projects"} <= listed
    templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
    assert {"taskqueue://projects/{name}", "taskqueue://tasks/{task_id}", "taskqueue://tasks/{task_id}/history"} <= (
        templates
    )
    assert (await read_json(client, "taskqueue://stats"))["total"] == 1
    assert [p["name"] for p in (await read_json(client, "taskqueue://projects"))["projects"]] == ["web"]
    project = await read_json(client, "taskqueue://projects/web")
    assert project["name"] == "web" and project["stats"]["by_status"]["ready"] == 1
    assert (await read_json(client, f"taskqueue://tasks/{task['id']}"))["title"] == "t"
    history = await read_json(client, f"taskqueue://tasks/{task['id']}/history")
    assert [e["action"] for e in history["events"]] == ["created", "note"]
    assert {e["actor"] for e in history["events"]} == {"test-agent"}  # who, from the client's name
    with pytest.raises(MCPError, match="no task with id"):
        await client.read_resource("taskqueue://tasks/missing")
    with pytest.raises(MCPError, match="no project named"):
        await client.read_resource("taskqueue://projects/missing")


async def test_prompts(client: Client) -> None:
    names = {p.name for p in (await client.list_prompts()).prompts}
    assert {"work_next", "triage_queue", "progress_report"} <= names
    work = await client.get_prompt("work_next", {"worker": "bob", "project": "web"})
    text = work.messages[0].content.text  # type: ignore[union-attr]
    assert 'worker="bob"' in text and 'project="web"' in text and "claim_task" in text and "{" not in text
    triage = await client.get_prompt("triage_queue", {})
    text = triage.messages[0].content.text  # type: ignore[union-attr]
    assert "queue_stats" in text and "{project" not in text
    with pytest.raises(MCPError, match="needs the argument"):
        await client.get_prompt("work_next", {})
    with pytest.raises(MCPError, match="has no argument"):
        await client.get_prompt("work_next", {"worker": "w", "colour": "red"})

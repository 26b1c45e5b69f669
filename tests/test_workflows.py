"""Workflows through the real server: inline specs, templates, schema errors with JSON pointers,
derived status/progress/critical path, cancellation, resources, prompts and completion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import PromptReference, ResourceTemplateReference

from mcp_taskqueue.server.app import build_server
from mcp_taskqueue.workflows import critical_path, derive_status, find_cycle
from tests.mcp_calls import call, call_error

pytestmark = pytest.mark.anyio

WORKFLOW_TOOLS = {"create_workflow", "get_workflow", "list_workflows", "cancel_workflow"}
DEVELOPMENT_TOOLS = {"advance_phase", "add_review"}


async def total_tasks(client: Client) -> int:
    return int((await call(client, "queue_stats"))["total"])


def release_spec() -> dict[str, Any]:
    return {
        "name": "release 1.0",
        "project": "web",
        "tasks": [
            {"ref": "build", "title": "Build", "priority": "high"},
            {"ref": "docs", "title": "Write docs", "priority": "low"},
            {"ref": "test", "title": "Test", "depends_on": ["build"]},
            {"ref": "ship", "title": "Ship", "depends_on": ["test", "docs"], "priority": "critical"},
        ],
    }


async def work(client: Client, task_id: str, worker: str = "w") -> None:
    """Claim until `task_id` comes up (completing what comes before), then complete it."""
    while True:
        claim = await call(client, "claim_task", worker=worker)
        claimed = claim["task"]
        assert claimed is not None, f"{task_id} never became claimable"
        await call(client, "complete_task", task_id=claimed["id"], worker=worker, lease_id=claim["lease_id"])
        if claimed["id"] == task_id:
            return


# --- creating -------------------------------------------------------------------------------


async def test_tools_are_registered_and_the_list_stays_small(client: Client) -> None:
    tools = (await client.list_tools()).tools
    names = {t.name for t in tools}
    assert names >= WORKFLOW_TOOLS | DEVELOPMENT_TOOLS
    dumped = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
    wire = json.dumps(dumped, separators=(",", ":"))  # compact, as the transports send it
    assert len(wire.encode()) < 32 * 1024
    create = next(t for t in tools if t.name == "create_workflow")
    assert "feature(feature*" in (create.description or "")  # templates are listed from schemas/templates


async def test_toolsets_select_workflows_and_development(db_path: Path) -> None:
    async with Client(build_server(db_path, toolsets="workflows")) as only:
        names = {t.name for t in (await only.list_tools()).tools}
    assert names == WORKFLOW_TOOLS
    async with Client(build_server(db_path, toolsets=["development", "tasks"])) as dev:
        names = {t.name for t in (await dev.list_tools()).tools}
    assert names >= DEVELOPMENT_TOOLS and not names & WORKFLOW_TOOLS


async def test_inline_workflow_is_created_with_refs_and_derived_state(client: Client) -> None:
    created = await call(client, "create_workflow", spec=release_spec())
    assert created["total"] == 4 and created["status"] == "pending" and created["progress"] == 0
    refs = created["refs"]
    assert set(refs) == {"build", "docs", "test", "ship"}

    view = await call(client, "get_workflow", workflow_id=created["id"])
    assert view["counts"] == {"ready": 2, "pending": 2}
    assert [t["id"] for t in view["tasks"]] == [refs["build"], refs["docs"], refs["test"], refs["ship"]]
    ship = next(t for t in view["tasks"] if t["id"] == refs["ship"])
    assert ship["depends_on"] == sorted([refs["test"], refs["docs"]]) and ship["priority"] == "critical"
    assert view["critical_path"] == [refs["build"], refs["test"], refs["ship"]]
    assert view["critical_path_length"] == 3

    task = await call(client, "get_task", task_id=refs["test"])
    assert task["workflow_id"] == created["id"] and task["project"] == "web"
    listed = await call(client, "list_tasks", workflow_id=created["id"])
    assert len(listed["tasks"]) == 4

    claim = await call(client, "claim_task", worker="w")
    assert claim["task"]["id"] == refs["build"]  # high before low
    running = await call(client, "get_workflow", workflow_id=created["id"])
    assert running["status"] == "running" and running["running"] == [refs["build"]]
    await call(client, "complete_task", task_id=refs["build"], worker="w", lease_id=claim["lease_id"])
    half = await call(client, "get_workflow", workflow_id=created["id"], include_tasks=False)
    assert half["progress"] == 0.25 and half["critical_path_length"] == 2 and "tasks" not in half

    for ref in ("test", "docs", "ship"):
        await work(client, refs[ref])
    done = await call(client, "get_workflow", workflow_id=created["id"])
    assert done["status"] == "completed" and done["progress"] == 1.0 and done["critical_path_length"] == 0


async def test_spec_violations_are_each_reported_with_their_json_pointer(client: Client) -> None:
    spec = {
        "name": "broken",
        "tasks": [
            {"ref": "a", "title": "A", "priority": "urgent"},
            {"ref": "b"},
            {"ref": "c", "title": "C", "colour": "red"},
            {"ref": "d", "title": "D", "depends_on": "a"},
        ],
    }
    text = await call_error(client, "create_workflow", spec=spec)
    assert "at /tasks/0/priority" in text and "(rule: enum)" in text
    assert "at /tasks/1" in text and "'title' is a required property" in text and "(rule: required)" in text
    assert "at /tasks/2" in text and "colour" in text and "(rule: additionalProperties)" in text
    assert "at /tasks/3/depends_on" in text and "(rule: type)" in text
    assert (await call_error(client, "create_workflow", spec={"tasks": []})).count("at ") == 2  # name, minItems
    assert await total_tasks(client) == 0


async def test_duplicate_refs_and_unknown_dependencies_are_refused(client: Client) -> None:
    dup = {"name": "dup", "tasks": [{"ref": "a", "title": "A"}, {"ref": "a", "title": "A again"}]}
    assert "/tasks/1/ref" in await call_error(client, "create_workflow", spec=dup)
    unknown = {"name": "unknown", "tasks": [{"ref": "a", "title": "A", "depends_on": ["ghost"]}]}
    assert "'ghost'" in await call_error(client, "create_workflow", spec=unknown)
    assert await total_tasks(client) == 0


@pytest.mark.parametrize(
    ("deps", "named"),
    [
        ({"a": ["a"]}, "a -> a"),
        ({"a": ["b"], "b": ["a"]}, "a -> b -> a"),
        ({"a": ["b"], "b": ["c"], "c": ["d"], "d": ["b"]}, "b -> c -> d -> b"),
    ],
)
async def test_a_cycle_in_a_workflow_is_refused_and_named(
    client: Client, deps: dict[str, list[str]], named: str
) -> None:
    spec = {"name": "loop", "tasks": [{"ref": r, "title": r, "depends_on": d} for r, d in deps.items()]}
    text = await call_error(client, "create_workflow", spec=spec)
    assert text.endswith(f"dependency cycle in the workflow: {named}")
    assert await total_tasks(client) == 0
    assert (await call(client, "list_workflows"))["workflows"] == []


async def test_workflow_tasks_may_depend_on_existing_tasks(client: Client) -> None:
    before = await call(client, "create_task", title="prerequisite")
    spec = {"name": "after", "tasks": [{"ref": "x", "title": "X", "depends_on": [before["id"]]}]}
    created = await call(client, "create_workflow", spec=spec)
    view = await call(client, "get_workflow", workflow_id=created["id"])
    assert view["tasks"][0]["depends_on"] == [before["id"]] and view["tasks"][0]["status"] == "pending"


# --- templates ------------------------------------------------------------------------------


async def test_template_is_filled_with_parameters(client: Client) -> None:
    created = await call(
        client,
        "create_workflow",
        template="feature",
        parameters={"feature": "login", "project": "auth", "priority": "high", "design_doc": "docs/login.md"},
    )
    assert created["name"] == "Feature: login" and created["project"] == "auth" and created["total"] == 5
    design = await call(client, "get_task", task_id=created["refs"]["design"])
    assert design["title"] == "Design login" and design["priority"] == "high"
    assert design["payload"] == {"doc_path": "docs/login.md"}
    view = await call(client, "get_workflow", workflow_id=created["id"])
    assert view["template"] == "feature" and view["critical_path_length"] == 5

    defaults = await call(client, "create_workflow", template="bugfix", parameters={"bug": "crash on save"})
    fix = await call(client, "get_task", task_id=defaults["refs"]["fix"])
    assert fix["title"] == "Fix crash on save" and fix["priority"] == "high" and fix["project"] == "default"


async def test_template_parameter_mistakes_are_named(client: Client) -> None:
    assert "needs parameter(s) feature" in await call_error(client, "create_workflow", template="feature")
    text = await call_error(client, "create_workflow", template="feature", parameters={"feature": "x", "colour": 1})
    assert "no parameter(s) colour" in text and "design_doc" in text
    text = await call_error(
        client, "create_workflow", template="feature", parameters={"feature": "x", "priority": "urgent"}
    )
    assert "/tasks/0/priority" in text  # the filled spec is validated like an inline one
    assert "available: bugfix, feature" in await call_error(client, "create_workflow", template="nope")
    assert "not both" in await call_error(client, "create_workflow", spec=release_spec(), template="feature")
    assert "not both" in await call_error(client, "create_workflow")
    assert await total_tasks(client) == 0


# --- failure, blocking and cancellation -----------------------------------------------------


async def test_failure_inside_a_workflow_blocks_everything_below_it(client: Client) -> None:
    spec = release_spec()
    spec["tasks"][0]["max_attempts"] = 1
    created = await call(client, "create_workflow", spec=spec)
    refs = created["refs"]
    claim = await call(client, "claim_task", worker="w")
    assert claim["task"]["id"] == refs["build"]
    await call(
        client, "fail_task", task_id=refs["build"], worker="w", lease_id=claim["lease_id"], error="compiler crashed"
    )
    view = await call(client, "get_workflow", workflow_id=created["id"])
    assert view["blocked"] == {refs["test"]: [refs["build"]], refs["ship"]: [refs["build"]]}
    assert view["status"] == "running"  # docs can still run
    await work(client, refs["docs"])
    stuck = await call(client, "get_workflow", workflow_id=created["id"])
    assert stuck["status"] == "blocked"
    assert (await call(client, "queue_stats"))["blocked"] == 2

    await call(client, "retry_task", task_id=refs["build"])
    revived = await call(client, "get_workflow", workflow_id=created["id"])
    assert not revived.get("blocked") and revived["status"] == "running"


async def test_cancel_workflow_cancels_unfinished_tasks_only(client: Client) -> None:
    created = await call(client, "create_workflow", spec=release_spec())
    refs = created["refs"]
    outside = await call(client, "create_task", title="outside", depends_on=[refs["ship"]])
    await work(client, refs["build"])
    claim = await call(client, "claim_task", worker="w2")
    running = claim["task"]
    cancelled = await call(client, "cancel_workflow", workflow_id=created["id"], reason="scope cut")
    assert cancelled["status"] == "cancelled"
    view = await call(client, "get_workflow", workflow_id=created["id"])
    statuses = {t["id"]: t["status"] for t in view["tasks"]}
    assert statuses[refs["build"]] == "completed"
    assert {statuses[refs[r]] for r in ("docs", "test", "ship")} == {"cancelled"}
    assert view["progress"] == 1.0  # the one task that still counts is done
    lost = await call_error(client, "complete_task", task_id=running["id"], worker="w2", lease_id=claim["lease_id"])
    assert "lease_lost" in lost and "it is cancelled" in lost  # the worker lost its task
    assert (await call(client, "get_task", task_id=outside["id"]))["blocked_by"] == [refs["ship"]]
    again = await call(client, "cancel_workflow", workflow_id=created["id"])
    assert again["status"] == "cancelled"
    history = await call(client, "get_task", task_id=refs["docs"])
    assert history["error"] == "scope cut"
    assert "no workflow" in await call_error(client, "cancel_workflow", workflow_id="missing")


async def test_list_workflows_newest_first_with_pages(client: Client) -> None:
    ids = [(await call(client, "create_workflow", spec={**release_spec(), "name": f"w{i}"}))["id"] for i in range(3)]
    await call(client, "create_workflow", spec={**release_spec(), "project": "other", "name": "elsewhere"})
    first = await call(client, "list_workflows", project="web", limit=2)
    assert [w["id"] for w in first["workflows"]] == [ids[2], ids[1]]
    second = await call(client, "list_workflows", project="web", limit=2, cursor=first["next_cursor"])
    assert [w["id"] for w in second["workflows"]] == [ids[0]] and "next_cursor" not in second
    assert second["workflows"][0]["total"] == 4 and second["workflows"][0]["status"] == "pending"
    assert len((await call(client, "list_workflows"))["workflows"]) == 4


# --- resources, prompts, completion ---------------------------------------------------------


async def read(client: Client, uri: str) -> Any:
    result = await client.read_resource(uri)
    return json.loads(result.contents[0].text)  # type: ignore[union-attr]


async def test_workflow_and_schema_resources(client: Client) -> None:
    created = await call(client, "create_workflow", spec=release_spec())
    view = await read(client, f"taskqueue://workflows/{created['id']}")
    assert view["id"] == created["id"] and len(view["tasks"]) == 4
    schema = await read(client, "taskqueue://schemas/workflow")
    assert schema["required"] == ["name", "tasks"]
    kind = await read(client, "taskqueue://schemas/code_review")
    assert kind["required"] == ["target"]
    with pytest.raises(MCPError, match="no workflow"):
        await client.read_resource("taskqueue://workflows/missing")
    with pytest.raises(MCPError, match="no schema named"):
        await client.read_resource("taskqueue://schemas/missing")


async def test_planning_prompts_render(client: Client) -> None:
    names = {p.name for p in (await client.list_prompts()).prompts}
    assert {"plan_project", "breakdown_task", "import_roadmap", "review_task"} <= names
    plan = await client.get_prompt("plan_project", {"goal": "ship a blog", "project": "blog"})
    text = plan.messages[0].content.text  # type: ignore[union-attr]
    assert "ship a blog" in text and "create_workflow" in text and 'project="blog"' in text
    review = await client.get_prompt("review_task", {"task_id": "abc", "reviewer": "rita"})
    text = review.messages[0].content.text  # type: ignore[union-attr]
    assert "taskqueue://tasks/abc/history" in text and 'reviewer="rita"' in text and "{task_id}" not in text
    roadmap = await client.get_prompt("import_roadmap", {"document": "# Roadmap\n### 1. A {thing}"})
    assert "### 1. A {thing}" in roadmap.messages[0].content.text  # type: ignore[union-attr]


async def test_prompt_and_resource_arguments_complete(client: Client) -> None:
    await call(client, "create_project", name="alpha")
    await call(client, "create_project", name="alps")
    await call(client, "create_project", name="beta")
    task = await call(client, "create_task", title="t", project="beta")
    projects = await client.complete(PromptReference(name="plan_project"), {"name": "project", "value": "al"})
    assert projects.completion.values == ["alpha", "alps"]
    tasks = await client.complete(PromptReference(name="review_task"), {"name": "task_id", "value": task["id"][:8]})
    assert task["id"] in tasks.completion.values
    created = await call(client, "create_workflow", spec=release_spec())
    workflows = await client.complete(
        ResourceTemplateReference(uri="taskqueue://workflows/{workflow_id}"), {"name": "workflow_id", "value": ""}
    )
    assert created["id"] in workflows.completion.values
    schemas = await client.complete(
        ResourceTemplateReference(uri="taskqueue://schemas/{name}"), {"name": "name", "value": "wo"}
    )
    assert schemas.completion.values == ["workflow"]


# --- the derivations, directly --------------------------------------------------------------


def test_find_cycle_and_critical_path() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    deps = {2: [1], 3: [1], 4: [2, 3], 5: [4], 6: [1]}
    assert critical_path({1, 2, 3, 4, 5, 6}, deps) == [1, 2, 4, 5]
    assert critical_path({4, 5, 6}, deps) == [4, 5]  # finished tasks are not on the path
    assert derive_status({"pending": 2}, 2, cancelled=False) == "blocked"
    assert derive_status({"completed": 1, "cancelled": 1}, 0, cancelled=False) == "completed"
    assert derive_status({"completed": 1, "failed": 1}, 0, cancelled=False) == "failed"


async def test_tasks_may_join_an_existing_workflow_but_not_an_unknown_or_cancelled_one(client: Client) -> None:
    created = await call(client, "create_workflow", spec=release_spec())
    joined = await call(
        client, "create_tasks", tasks=[{"title": "announce", "project": "web", "workflow_id": created["id"]}]
    )
    view = await call(client, "get_workflow", workflow_id=created["id"])
    assert joined["tasks"][0]["id"] in {t["id"] for t in view["tasks"]} and sum(view["counts"].values()) == 5
    assert "no workflow" in await call_error(client, "create_tasks", tasks=[{"title": "x", "workflow_id": "nope"}])
    await call(client, "cancel_workflow", workflow_id=created["id"])
    text = await call_error(client, "create_tasks", tasks=[{"title": "late", "workflow_id": created["id"]}])
    assert "is cancelled" in text
    assert await total_tasks(client) == 5


async def test_cancelling_a_finished_workflow_changes_nothing(client: Client) -> None:
    spec = {"name": "tiny", "tasks": [{"ref": "only", "title": "Only"}]}
    created = await call(client, "create_workflow", spec=spec)
    await work(client, created["refs"]["only"])
    after = await call(client, "cancel_workflow", workflow_id=created["id"])
    assert after["status"] == "completed" and after["progress"] == 1.0

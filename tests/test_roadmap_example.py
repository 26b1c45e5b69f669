"""examples/roadmap: the seed roadmap becomes a 20-task workflow through the real server, and a
worker's claims come out in dependency and priority order."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from mcp import Client

from mcp_taskqueue.models import PRIORITY_RANK, Priority
from mcp_taskqueue.server.app import build_server

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "roadmap" / "import_roadmap.py"
# What the roadmap document's own `**Priority:**` lines say, item by item.
DOCUMENT_PRIORITIES = {
    "high": {1, 2, 3, 7, 15, 19},
    "medium": {4, 5, 6, 9, 10, 11, 13, 14, 16, 17, 18},
    "low": {8, 12, 20},
}


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_roadmap", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_roadmap_parses_into_twenty_items_with_the_documents_priorities() -> None:
    example = load_example()
    items = example.parse_roadmap(example.ROADMAP.read_text(encoding="utf-8"))
    assert [item["number"] for item in items] == list(range(1, 21))
    for priority, numbers in DOCUMENT_PRIORITIES.items():
        assert {item["number"] for item in items if item["priority"] == priority} == numbers
    python_sdk = items[0]
    assert python_sdk["title"] == "Python SDK Development" and python_sdk["section"] == "SDKs and Integrations"
    assert "Async/await support for asynchronous operations" in python_sdk["requirements"]
    assert all(item["description"] and item["requirements"] for item in items)


@pytest.mark.anyio
async def test_the_roadmap_is_imported_and_drained_in_dependency_and_priority_order(db_path: Path) -> None:
    example = load_example()
    async with Client(build_server(db_path)) as client:
        created = await example.import_roadmap(client)
        assert created["total"] == 20 and created["project"] == "task-queue-roadmap"
        refs: dict[str, str] = created["refs"]
        view: Any = (await client.call_tool("get_workflow", {"workflow_id": created["id"]})).structured_content
        tasks = {task["id"]: task for task in view["tasks"]}
        assert Counter(task["priority"] for task in tasks.values()) == {"high": 6, "medium": 11, "low": 3}
        by_ref = {ref: tasks[task_id] for ref, task_id in refs.items()}
        assert by_ref["documentation"]["depends_on"] == sorted(refs[r] for r in ("python_sdk", "typescript_sdk", "cli"))
        edges = sum(len(task.get("depends_on", [])) for task in tasks.values())
        assert edges == sum(len(deps) for deps in example.DEPENDS_ON.values())
        assert view["counts"]["ready"] == 20 - len(example.DEPENDS_ON)
        assert view["critical_path_length"] == 3

        creation_order = list(tasks)  # get_workflow lists tasks in creation order
        done: set[str] = set()
        claims: list[str] = []
        while True:
            claimed: Any = (await client.call_tool("claim_task", {"worker": "w"})).structured_content
            if claimed["task"] is None:
                break
            task_id = claimed["task"]["id"]
            deps = tasks[task_id].get("depends_on", [])
            assert all(d in done for d in deps), f"{tasks[task_id]['title']} claimed before its dependencies"
            ready = [t for t in tasks if t not in done and all(d in done for d in tasks[t].get("depends_on", []))]
            best = min(ready, key=lambda t: (PRIORITY_RANK[Priority(tasks[t]["priority"])], creation_order.index(t)))
            assert task_id == best, f"claimed {tasks[task_id]['title']} before {tasks[best]['title']}"
            lease = claimed["lease_id"]
            await client.call_tool("complete_task", {"task_id": task_id, "worker": "w", "lease_id": lease})
            done.add(task_id)
            claims.append(task_id)
        assert len(claims) == 20
        assert claims[0] == refs["python_sdk"]
        assert claims.index(refs["documentation"]) > claims.index(refs["typescript_sdk"])
        final: Any = (await client.call_tool("get_workflow", {"workflow_id": created["id"]})).structured_content
        assert final["status"] == "completed" and final["progress"] == 1.0

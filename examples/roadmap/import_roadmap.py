"""Import the seed roadmap (roadmap.md) as one workflow, through the real MCP server.

Each numbered item becomes a task with the priority its own `**Priority:**` line gives, its
requirements as acceptance criteria and its section as a tag; DEPENDS_ON says which items
need which (judged from their content). Run it:

    python examples/roadmap/import_roadmap.py --db /tmp/roadmap.db

and it prints the workflow: ready tasks, the critical path, and the order a worker claims them.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from mcp_taskqueue.server.app import build_server

ROADMAP = Path(__file__).with_name("roadmap.md")
PROJECT = "task-queue-roadmap"

# Item number -> local ref in the workflow.
REFS = {
    1: "python_sdk",
    2: "typescript_sdk",
    3: "rust_unit_tests",
    4: "api_integration_tests",
    5: "dashboard_e2e_tests",
    6: "mcp_server",
    7: "cli",
    8: "plugin_system",
    9: "websocket",
    10: "notifications",
    11: "backup",
    12: "auth",
    13: "multi_environment",
    14: "rate_limiting",
    15: "docker",
    16: "structured_logging",
    17: "cache",
    18: "monitoring",
    19: "documentation",
    20: "task_versioning",
}

# What cannot start (or cannot be finished) before what, and why.
DEPENDS_ON = {
    "typescript_sdk": ["python_sdk"],  # mirrors the API surface the first SDK settles
    "cli": ["python_sdk"],  # the Python SDK ships the CLI tool
    "api_integration_tests": ["rust_unit_tests"],  # unit-level correctness before end-to-end
    "dashboard_e2e_tests": ["websocket"],  # the dashboard's real-time updates come over WebSocket
    "notifications": ["websocket"],  # status-change streaming feeds the notification channels
    "plugin_system": ["cli"],  # plugins extend the CLI
    "multi_environment": ["docker"],  # environments are deployed as containers
    "monitoring": ["structured_logging", "docker"],  # metrics from logs, health checks in containers
    "documentation": ["python_sdk", "typescript_sdk", "cli"],  # SDK and CLI docs need them to exist
    "task_versioning": ["api_integration_tests"],  # compatibility guarantees need the API test suite
}

ITEM = re.compile(r"^### \*\*(\d+)\. (.+?)\*\*\s*$")
SECTION = re.compile(r"^## .*?\*\*(.+?)\*\*\s*$")
PRIORITY = re.compile(r"^\*\*Priority:\*\* (\w+)")
DESCRIPTION = re.compile(r"^\*\*Description:\*\* (.+)$")


def parse_roadmap(text: str) -> list[dict[str, Any]]:
    """The numbered items: number, title, section, priority, description, requirements."""
    items: list[dict[str, Any]] = []
    section = ""
    in_requirements = False
    for line in text.splitlines():
        if match := SECTION.match(line):
            section = match[1]
        elif match := ITEM.match(line):
            items.append({"number": int(match[1]), "title": match[2], "section": section, "requirements": []})
            in_requirements = False
        elif not items:
            continue
        elif match := PRIORITY.match(line):
            items[-1]["priority"] = match[1].lower()
        elif match := DESCRIPTION.match(line):
            items[-1]["description"] = match[1]
        elif line.startswith("**Requirements:**"):
            in_requirements = True
        elif in_requirements and line.startswith("- "):
            items[-1]["requirements"].append(line[2:].strip())
        elif line.startswith("**"):
            in_requirements = False
    return items


def workflow_spec(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A create_workflow spec: one task per item, dependencies by ref."""
    tasks = []
    for item in items:
        ref = REFS[item["number"]]
        tag = re.sub(r"[^a-z0-9]+", "-", item["section"].lower()).strip("-")
        tasks.append(
            {
                "ref": ref,
                "title": item["title"],
                "description": item.get("description", ""),
                "priority": item["priority"],
                "acceptance_criteria": item["requirements"],
                "tags": [tag],
                "depends_on": DEPENDS_ON.get(ref, []),
            }
        )
    return {"name": "Task Queue Development Roadmap", "project": PROJECT, "tasks": tasks}


def load_spec(path: Path = ROADMAP) -> dict[str, Any]:
    return workflow_spec(parse_roadmap(path.read_text(encoding="utf-8")))


async def import_roadmap(client: Client, path: Path = ROADMAP) -> dict[str, Any]:
    """Create the roadmap workflow on the server behind `client`; returns create_workflow's reply."""
    result = await client.call_tool("create_workflow", {"spec": load_spec(path)})
    if result.is_error:
        raise RuntimeError(result.content[0].text)  # type: ignore[union-attr]
    assert result.structured_content is not None
    return result.structured_content


async def main(db: str) -> None:
    async with Client(build_server(db)) as client:
        created = await import_roadmap(client)
        view = (await client.call_tool("get_workflow", {"workflow_id": created["id"]})).structured_content
        assert view is not None
        titles = {task["id"]: task["title"] for task in view["tasks"]}
        print(f"workflow {created['id']}: {created['total']} tasks in project {created['project']}")
        print("critical path:", " -> ".join(titles[i] for i in view["critical_path"]))
        print("claim order:")
        while True:
            claimed = (await client.call_tool("claim_task", {"worker": "demo"})).structured_content
            task = claimed["task"] if claimed else None
            if task is None:
                break
            print(f"  {task['priority']:<6} {task['title']}")
            await client.call_tool(
                "complete_task", {"task_id": task["id"], "worker": "demo", "lease_id": task["lease_id"]}
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="roadmap.db", help="SQLite file to create the workflow in")
    anyio.run(main, parser.parse_args().db)

"""Group 5: token cost, as bytes of the JSON an agent receives from each read tool.

Measured on the text content of the tool result (the compact JSON a model reads), over
realistic tasks, so output size is tracked like speed.
"""

from __future__ import annotations

from pathlib import Path

import anyio
from mcp import Client

from benchmarks.report import Row, Section
from mcp_taskqueue.server.app import build_server

GROUP = "5 tokens"
SUMMARY_LIMIT = 300
TITLES = [
    "Implement password reset email flow",
    "Add pagination to the orders API",
    "Fix flaky test in payment webhook handler",
    "Write migration for user preferences table",
]


def seed_specs(count: int) -> list[dict[str, object]]:
    return [
        {
            "title": f"{TITLES[n % len(TITLES)]} ({n})",
            "project": "webapp",
            "kind": "code",
            "priority": ("high", "medium", "low")[n % 3],
            "description": "Follow the existing service layout; keep the public API unchanged. " * 2,
            "tags": ["backend", "sprint-12"],
            "payload": {"repo": "acme/webapp", "paths": ["src/orders/api.py", "tests/test_orders.py"]},
            "acceptance_criteria": ["tests pass", "docs updated"],
        }
        for n in range(count)
    ]


async def measure(db: Path) -> dict[str, int]:
    server = build_server(str(db))
    server.queue.create_many(seed_specs(25))  # type: ignore[attr-defined]
    sizes: dict[str, int] = {}
    async with Client(server) as client:

        async def size(name: str, args: dict[str, object]) -> dict[str, object]:
            result = await client.call_tool(name, args)
            assert not result.is_error, result.content
            text = result.content[0].text  # type: ignore[union-attr]
            sizes[name] = len(text.encode())
            data = result.structured_content
            assert isinstance(data, dict)
            return data

        page = await size("list_tasks", {"limit": 20})
        assert len(page["tasks"]) == 20  # type: ignore[arg-type]
        await size("get_task", {"task_id": page["tasks"][0]["id"]})  # type: ignore[index]
        await size("claim_task", {"worker": "agent-1"})
        await size("queue_stats", {})
    server.queue.store.close()  # type: ignore[attr-defined]
    return sizes


def run(workdir: Path) -> Section:
    sizes = anyio.run(measure, workdir / "tokens.db")
    section = Section("Token cost: bytes of JSON an agent receives")
    per_summary = sizes["list_tasks"] / 20
    section.rows += [
        Row(GROUP, "list_tasks, 20 tasks", sizes["list_tasks"], "B"),
        Row(
            GROUP,
            "list_tasks, per task summary",
            per_summary,
            "B",
            target=f"< {SUMMARY_LIMIT} B",
            ok=per_summary < SUMMARY_LIMIT,
        ),
        Row(GROUP, "get_task", sizes["get_task"], "B"),
        Row(GROUP, "claim_task", sizes["claim_task"], "B"),
        Row(GROUP, "queue_stats", sizes["queue_stats"], "B"),
    ]
    return section

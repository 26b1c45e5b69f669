"""The examples and the README's client configurations, run for real."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from mcp_taskqueue.models import Status
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store
from tests.servers import http_server, server_env

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def readme_client_configs() -> list[dict[str, Any]]:
    """The JSON blocks of the README's "Connect an MCP client" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Connect an MCP client", 1)[1].split("\n## ", 1)[0]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.S)]


def server_entries(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Claude/Cursor use "mcpServers", VS Code uses "servers"."""
    entries = config.get("mcpServers") or config.get("servers")
    assert isinstance(entries, dict) and entries
    return entries


async def tool_names(target: StdioServerParameters | str) -> set[str]:
    async with Client(target) as client:
        return {tool.name for tool in (await client.list_tools()).tools}


def stdio_from_entry(entry: dict[str, Any], db: Path) -> StdioServerParameters:
    """What a desktop client would spawn, with our installed script and a test database."""
    assert entry["command"] == "mcp-taskqueue" and entry["args"][0] == "serve"
    env = {**server_env(), **entry.get("env", {}), "TASKQUEUE_DB": str(db)}
    return StdioServerParameters(command=str(BIN / "mcp-taskqueue"), args=entry["args"], env=env)


@pytest.mark.anyio
async def test_claude_desktop_config_starts_the_server(tmp_path: Path) -> None:
    config = json.loads((ROOT / "examples" / "claude_desktop.json").read_text())
    entry = server_entries(config)["taskqueue"]
    names = await tool_names(stdio_from_entry(entry, tmp_path / "desktop.db"))
    assert {"create_task", "claim_task", "complete_task"} <= names
    assert (tmp_path / "desktop.db").exists()


@pytest.mark.anyio
async def test_readme_client_configs_connect(tmp_path: Path) -> None:
    configs = readme_client_configs()
    assert len(configs) >= 4  # Claude Desktop, Claude Code, VS Code, Cursor
    entries = [entry for config in configs for entry in server_entries(config).values()]
    urls = [entry["url"] for entry in entries if "url" in entry]
    assert urls and all(url == "http://127.0.0.1:8765/mcp" for url in urls)
    launches = {json.dumps([e["command"], e["args"], e.get("env")]): e for e in entries if "command" in e}
    assert all(entry.get("type", "stdio") == "stdio" for entry in launches.values())
    for entry in launches.values():  # each distinct command line once: they take a second to start
        assert "claim_task" in await tool_names(stdio_from_entry(entry, tmp_path / "stdio.db"))
    with http_server(tmp_path / "http.db") as base:  # the documented URL, on a free port
        assert "claim_task" in await tool_names(urls[0].replace("http://127.0.0.1:8765", base))


def test_multi_agent_example_drains_the_graph_over_http(tmp_path: Path) -> None:
    db = tmp_path / "agents.db"
    with http_server(db) as base:
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "multi_agent.py"), "--url", base + "/mcp", "--project", "demo"],
            capture_output=True,
            text=True,
            env=server_env(),
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["completed"] == 7 and sum(summary["by_worker"].values()) == 7
    assert len([n for n in summary["by_worker"].values() if n]) >= 2  # the work was shared
    queue = TaskQueue(Store(db))
    tasks = {ref: queue.get(task_id) for ref, task_id in summary["refs"].items()}
    assert all(task.status is Status.completed for task in tasks.values())
    # No task started before every one of its dependencies had finished.
    for task in tasks.values():
        for dep in task.depends_on:
            assert queue.get(dep).finished_at <= task.started_at  # type: ignore[operator]
    # The three sections ran side by side: their run windows overlap.
    log = {entry["title"]: entry for entry in summary["log"]}
    sections = [log["Write the introduction"], log["Write the body"], log["Write the examples"]]
    assert max(s["started"] for s in sections) < min(s["finished"] for s in sections)
    queue.store.close()


def test_worker_example_script(tmp_path: Path) -> None:
    db = tmp_path / "work.db"
    queue = TaskQueue(Store(db))
    counted = queue.create({"title": "count", "kind": "wordcount", "payload": {"text": "one two three"}})
    slept = queue.create({"title": "nap", "kind": "sleep", "payload": {"seconds": 0.2}})
    broken = queue.create({"title": "bad", "kind": "wordcount", "payload": {"text": 5}})
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "worker.py"), "--db", str(db), "--drain"],
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["completed"] == 2
    assert queue.get(counted.id).result == {"words": 3, "characters": 13}
    assert queue.get(slept.id).progress == 1.0
    failed = queue.get(broken.id)
    assert failed.status is Status.failed and failed.attempts == 1 and "payload.text" in (failed.error or "")
    queue.store.close()


def test_worker_example_through_the_cli(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    queue = TaskQueue(Store(db))
    task = queue.create({"title": "count", "kind": "wordcount", "payload": {"text": "a b"}})
    result = subprocess.run(
        [
            str(BIN / "mcp-taskqueue"),
            "--db",
            str(db),
            "--format",
            "json",
            "worker",
            "examples.worker:worker",
            "--drain",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**server_env(), "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["worker"] == "example-worker"
    assert queue.get(task.id).result == {"words": 2, "characters": 3}
    queue.store.close()

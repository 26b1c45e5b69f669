"""User data comes back exactly as stored, and `null` means what clients mean by it (issue 9, items 4-5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_taskqueue.client import TaskQueueClient
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.app import build_server
from mcp_taskqueue.store import Store
from tests.mcp_calls import call, call_error
from tests.servers import server_env
from tests.test_cli import ok

pytestmark = pytest.mark.anyio

PAYLOAD = {"keep": None, "files": [], "nested": {"cursor": None, "ids": []}, "zero": 0}
ODD = {"a": [None, [], {}, [[None]], {"b": {"c": None}}], "empty": {}, "s": "", "f": 0.0, "t": False}


async def test_payload_with_nulls_and_empties_round_trips_through_every_tool(client: Client) -> None:
    """The issue's example: get_task and claim_task used to return {"zero": 0, "nested": {}}."""
    created = await call(client, "create_task", title="t", payload=PAYLOAD)
    assert (await call(client, "get_task", task_id=created["id"]))["payload"] == PAYLOAD
    claim = await call(client, "claim_task", worker="w")
    assert claim["task"]["payload"] == PAYLOAD
    lease = {"task_id": created["id"], "worker": "w", "lease_id": claim["lease_id"]}
    await call(client, "complete_task", **lease, result=[])
    done = await call(client, "get_task", task_id=created["id"])
    assert done["result"] == []  # told apart from no result
    resource = await client.read_resource(f"taskqueue://tasks/{created['id']}")
    assert json.loads(resource.contents[0].text)["payload"] == PAYLOAD  # type: ignore[union-attr]


async def test_nested_empties_survive_updates_and_history(client: Client) -> None:
    created = await call(client, "create_task", title="t", payload={"v": 1})
    await call(client, "update_task", task_id=created["id"], payload=ODD)
    assert (await call(client, "get_task", task_id=created["id"]))["payload"] == ODD
    history = await client.read_resource(f"taskqueue://tasks/{created['id']}/history")
    events = json.loads(history.contents[0].text)["events"]  # type: ignore[union-attr]
    updated = next(e for e in events if e["action"] == "updated")
    assert updated["new"]["payload"] == ODD and updated["old"]["payload"] == {"v": 1}


async def test_python_client_and_cli_return_exact_json(db_path: Path) -> None:
    async with TaskQueueClient(db_path) as tq:
        created = await tq.create_task("t", payload=PAYLOAD)
        assert (await tq.get_task(created.id)).payload == PAYLOAD
        claim = await tq.claim_task("w")
        assert claim.task is not None and claim.task.payload == PAYLOAD
        await tq.complete_task(created.id, "w", {"out": None, "list": []})
        assert (await tq.get_task(created.id)).result == {"out": None, "list": []}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mcp_taskqueue.cli",
            "--db",
            str(db_path),
            "--format",
            "json",
            "task",
            "show",
            created.id,
        ],
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["payload"] == PAYLOAD and shown["result"] == {"out": None, "list": []}


async def test_null_for_an_optional_argument_means_its_default(client: Client) -> None:
    """Example A: project=null used to be refused while tags=null was accepted."""
    nulls: dict[str, Any] = {
        "project": None,
        "description": None,
        "kind": None,
        "priority": None,
        "tags": None,
        "max_attempts": None,
        "run_at": None,
    }
    created = await call(client, "create_task", title="t", **nulls)
    task = await call(client, "get_task", task_id=created["id"])
    assert task["project"] == "default" and task["kind"] == "task" and task["priority"] == "medium"
    assert task["max_attempts"] == 3 and task["status"] == "ready"
    page = await call(client, "list_tasks", project=None, status=None, limit=None, cursor=None)
    assert [t["id"] for t in page["tasks"]] == [created["id"]]
    batch = await call(client, "create_tasks", tasks=[{"title": "b", "project": None, "priority": None, "tags": None}])
    assert batch["tasks"][0]["status"] == "ready"
    claim = await call(client, "claim_task", worker="w", project=None, lease_seconds=None, max_tasks=None)
    assert claim["task"]["id"] == created["id"]


async def test_update_task_null_clears_and_missing_leaves_alone(client: Client) -> None:
    """Example B: update_task(run_at=null) answered "nothing to update" and the task stayed deferred."""
    created = await call(
        client,
        "create_task",
        title="t",
        description="d",
        run_at="2999-01-01T00:00:00Z",
        payload={"p": 1},
        timeout_seconds=60,
    )
    assert created["status"] == "pending"
    updated = await call(client, "update_task", task_id=created["id"], run_at=None)
    assert updated["status"] == "ready"
    task = await call(client, "get_task", task_id=created["id"])
    assert "run_at" not in task and task["payload"] == {"p": 1} and task["timeout_seconds"] == 60
    await call(client, "update_task", task_id=created["id"], payload=None, timeout_seconds=None, description=None)
    task = await call(client, "get_task", task_id=created["id"])
    assert "payload" not in task and "timeout_seconds" not in task and task["description"] == ""
    assert "title cannot be null" in await call_error(client, "update_task", task_id=created["id"], title=None)


async def test_the_python_client_sends_null_to_clear(db_path: Path) -> None:
    async with TaskQueueClient(db_path) as tq:
        created = await tq.create_task("t", run_at="2999-01-01T00:00:00Z")
        assert (await tq.update_task(created.id, run_at=None)).status == "ready"


@pytest.mark.parametrize(
    ("tool", "args", "field"),
    [
        ("create_task", {"title": "t", "max_attempts": True}, "max_attempts"),
        ("create_task", {"title": "t", "timeout_seconds": False}, "timeout_seconds"),
        ("claim_task", {"worker": "w", "lease_seconds": True}, "lease_seconds"),
        ("list_tasks", {"limit": True}, "limit"),
        ("create_tasks", {"tasks": [{"title": "t", "max_attempts": True}]}, "max_attempts"),
        ("update_task", {"task_id": "x", "max_attempts": True}, "max_attempts"),
    ],
)
async def test_a_boolean_is_not_an_integer(client: Client, tool: str, args: dict[str, Any], field: str) -> None:
    message = await call_error(client, tool, **args)
    assert "validation_failed" in message and field in message, message
    assert (await call(client, "queue_stats"))["total"] == 0


def test_strict_integers_in_process(queue: TaskQueue) -> None:
    from mcp_taskqueue.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match="max_attempts"):
        queue.create({"title": "t", "max_attempts": True})
    assert queue.stats().total == 0


async def test_export_keeps_user_json_exactly(db_path: Path, tmp_path: Path) -> None:
    queue = TaskQueue(Store(db_path))
    task = queue.create({"title": "t", "payload": PAYLOAD})
    queue.store.close()
    out = tmp_path / "dump.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "mcp_taskqueue.cli", "--db", str(db_path), "export", str(out)],
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    exported = next(r for r in records if r.get("id") == task.id or r.get("task", {}).get("id") == task.id)
    found = exported.get("payload", exported.get("task", {}).get("payload"))
    assert found == PAYLOAD


async def test_server_level_fields_may_be_left_out(db_path: Path) -> None:
    async with Client(build_server(db_path)) as client:
        created = await call(client, "create_task", title="t")
        assert "error" not in created and "worker" not in created  # the server's own empty fields


def test_the_cli_clears_with_clear_and_leaves_the_rest(db_path: Path) -> None:
    created = ok(db_path, "task", "add", "t", "--run-at", "2999-01-01T00:00:00Z", "--payload", '{"p": null}')
    assert created["status"] == "pending"
    updated = ok(db_path, "task", "update", created["id"], "--clear", "run_at", "--title", "renamed")
    assert updated["status"] == "ready" and updated["title"] == "renamed"
    shown = ok(db_path, "task", "show", created["id"])
    assert shown["payload"] == {"p": None} and shown["run_at"] is None

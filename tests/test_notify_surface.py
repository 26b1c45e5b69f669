"""The notifications toolset, its resource, the Python client's methods and `mcp-taskqueue notify`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client

from mcp_taskqueue.client import TaskQueueClient
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.app import build_server
from mcp_taskqueue.store import open_store
from tests.mcp_calls import call, call_error
from tests.receivers import Receiver, http_receiver
from tests.test_cli import cli, fails, ok

SECRET = "surface-test-secret-0123456789"
NOTIFIER_TOOLS = {"create_notifier", "list_notifiers", "delete_notifier", "test_notifier"}


@pytest.fixture(autouse=True)
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQUEUE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")


@pytest.fixture
async def client(db_path: Path) -> AsyncIterator[Client]:
    """The server as `serve` builds it: every toolset, `notifications` included."""
    async with Client(build_server(db_path)) as c:
        yield c


@pytest.mark.anyio
async def test_notifications_are_on_by_default_and_tools_list_stays_in_budget(db_path: Path, client: Client) -> None:
    async with Client(build_server(db_path, toolsets="tasks,queue")) as worker:
        names = {t.name for t in (await worker.list_tools()).tools}
    assert not names & NOTIFIER_TOOLS  # a plain worker's context leaves them out
    tools = (await client.list_tools()).tools
    wire = json.dumps(
        [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools], separators=(",", ":")
    )
    assert len(wire.encode()) < 32 * 1024, f"default tools/list is {len(wire.encode())} bytes"
    assert {t.name for t in tools} >= NOTIFIER_TOOLS
    for tool in tools:
        if tool.name in NOTIFIER_TOOLS:
            assert tool.description and tool.output_schema and tool.annotations, tool.name
    by_name = {t.name: t for t in tools}
    assert by_name["delete_notifier"].annotations.destructive_hint is True  # type: ignore[union-attr]
    assert by_name["test_notifier"].annotations.open_world_hint is True  # type: ignore[union-attr]
    assert by_name["list_notifiers"].annotations.read_only_hint is True  # type: ignore[union-attr]
    mine = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools if t.name in NOTIFIER_TOOLS]
    assert len(json.dumps(mine, separators=(",", ":"))) < 4000


@pytest.mark.anyio
async def test_tools_create_list_test_read_and_delete_without_ever_returning_the_secret(client: Client) -> None:
    with http_receiver(Receiver(secret=SECRET)) as rx:
        created = await call(
            client,
            "create_notifier",
            name="ci",
            channel="webhook",
            target=rx.url + "?token=QUERYTOKEN",
            events=["task.completed", "task.dead"],
            filters={"projects": ["web"], "tags": ["deploy"]},
            secret=SECRET,
        )
        assert created["has_secret"] is True and created["filters"] == {"projects": ["web"], "tags": ["deploy"]}
        assert created["target"] == rx.url + "?…"  # query strings may hold credentials
        listed = await call(client, "list_notifiers")
        assert [n["name"] for n in listed["notifiers"]] == ["ci"]
        tested = await call(client, "test_notifier", notifier="ci")
        assert tested["ok"] is True and tested["status_code"] == 200
        (got,) = rx.wait_for(1)
        assert got.verify_error is None and got.path == "/hook?token=QUERYTOKEN"
        resource = await client.read_resource(f"taskqueue://notifiers/{created['id']}")
        detail = json.loads(resource.contents[0].text)  # type: ignore[union-attr]
        assert detail["name"] == "ci" and detail["recent"] == []
        everything = json.dumps([created, listed, tested, detail])
        assert SECRET not in everything and "QUERYTOKEN" not in everything
        deleted = await call(client, "delete_notifier", notifier="ci")
        assert deleted == {"id": created["id"], "dropped_pending": 0}
        assert (await call(client, "list_notifiers"))["notifiers"] == []


@pytest.mark.anyio
async def test_tool_errors_say_what_to_fix(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKQUEUE_WEBHOOK_ALLOW_HOSTS")
    text = await call_error(
        client,
        "create_notifier",
        name="x",
        channel="webhook",
        target="http://127.0.0.1/x",
        events=["task.dead"],
        secret=SECRET,
    )
    assert "validation_failed" in text and "TASKQUEUE_WEBHOOK_ALLOW_HOSTS" in text
    text = await call_error(
        client, "create_notifier", name="x", channel="slack", target="https://h.example/x", events=["task.nope"]
    )
    assert "validation_failed" in text and "events" in text
    assert "not_found" in await call_error(client, "test_notifier", notifier="missing")
    assert "not_found" in await call_error(client, "delete_notifier", notifier="missing")


@pytest.mark.anyio
async def test_the_python_client_manages_notifiers(db_path: Path) -> None:
    with http_receiver(Receiver(secret=SECRET)) as rx:
        async with TaskQueueClient(db_path) as tq:
            info = await tq.create_notifier("c", "webhook", rx.url, ["task.completed"], secret=SECRET)
            assert (await tq.test_notifier("c")).ok
            await tq.create_task("x")
            claimed = await tq.claim_task("w")
            assert claimed.task is not None
            await tq.complete_task(claimed.task.id, "w")
            detail = await tq.get_notifier(info.id)
            assert [(d.event, d.status) for d in detail.recent] == [("task.completed", "pending")]
            assert [n.id for n in (await tq.list_notifiers()).notifiers] == [info.id]
            assert (await tq.delete_notifier(info.id)).dropped_pending == 1


def test_notify_commands(db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    template = tmp_path / "body.j2"
    template.write_text('{"text": "{{ headline }}: {{ subject }}"}', encoding="utf-8")
    with http_receiver(Receiver(secret=SECRET)) as rx:
        added = ok(
            db_path,
            *("notify", "add", "ops", "--channel", "webhook", "--target", rx.url, "-e", "task.completed"),
            *("-e", "task.dead", "--project", "web", "--template", f"body=@{template}", "--secret-env", "HOOK_SECRET"),
        )
        assert added["filters"] == {"projects": ["web"]} and added["has_secret"]
        result = cli(db_path, "notify", "test", "ops")
        assert result.exit_code == 0 and json.loads(result.stdout)["status_code"] == 200
        (got,) = rx.wait_for(1)
        assert got.verified == {"text": "Task completed: Sample task from test_notifier"}
    assert SECRET not in result.stdout + json.dumps(added)
    assert ok(db_path, "notify", "list")[0]["name"] == "ops"
    # a dead delivery, replayed by redeliver under its id
    store = open_store(db_path)
    try:
        queue = TaskQueue(store)
        task = queue.create({"title": "t", "project": "web"})
        assert queue.claim("w") is not None
        queue.complete(task.id, "w")
        store.write(lambda tx: tx.conn.execute("UPDATE outbox SET status = 'dead', attempts = 8"))
    finally:
        store.close()
    shown = ok(db_path, "notify", "list", "ops", "--status", "dead")
    assert [d["status"] for d in shown["recent"]] == ["dead"]
    assert ok(db_path, "notify", "redeliver", "ops") == {"notifier": "ops", "requeued": 1}
    assert [(d["status"], d["attempts"]) for d in ok(db_path, "notify", "list", "ops")["recent"]] == [("pending", 0)]
    failed = cli(db_path, "notify", "test", "ops")  # the receiver is gone now
    assert failed.exit_code == 1 and json.loads(failed.stdout)["ok"] is False
    assert ok(db_path, "notify", "remove", "ops")["dropped_pending"] == 1
    assert "not_found" in fails(db_path, "notify", "remove", "ops", code=3)
    assert "--secret-env" in fails(
        db_path, "notify", "add", "x", "-c", "webhook", "-t", rx.url, "-e", "task.dead", "--secret-env", "NOPE", code=2
    )

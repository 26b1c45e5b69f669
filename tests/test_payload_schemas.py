"""Payload schemas per kind: shipped files and project-registered schemas, checked on create and
update, with every violation named by its JSON pointer and rule."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from mcp import Client

from mcp_taskqueue.errors import ValidationFailed
from mcp_taskqueue.payload_schemas import SCHEMAS_DIR, PayloadSchemas
from mcp_taskqueue.queue import TaskQueue
from tests.mcp_calls import call

TICKET = {
    "type": "object",
    "required": ["url", "severity"],
    "properties": {"url": {"type": "string", "format": "uri"}, "severity": {"enum": ["low", "high"]}},
    "additionalProperties": False,
}


def test_every_shipped_schema_and_template_is_valid() -> None:
    kinds = PayloadSchemas().file_kinds()
    assert {"code_review", "test_run", "design"} <= set(kinds)
    for path in [SCHEMAS_DIR / "workflow.schema.json", *sorted((SCHEMAS_DIR / "kinds").glob("*.json"))]:
        Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_shipped_kind_schema_is_enforced_on_create(queue: TaskQueue) -> None:
    with pytest.raises(ValidationFailed) as refused:
        queue.create({"title": "review it", "kind": "code_review", "payload": {"focus": "security", "min_score": 2}})
    message = str(refused.value)
    assert "taskqueue://schemas/code_review" in message
    assert "payload at (root): 'target' is a required property (rule: required)" in message
    assert "payload at /focus: 'security' is not of type 'array' (rule: type)" in message
    assert "payload at /min_score: 2 is greater than the maximum of 1 (rule: maximum)" in message
    with pytest.raises(ValidationFailed, match="'target' is a required property"):
        queue.create({"title": "no payload at all", "kind": "code_review"})
    ok = queue.create({"title": "review it", "kind": "code_review", "payload": {"target": "abc123"}})
    assert ok.payload == {"target": "abc123"}
    assert queue.stats().total == 1


def test_a_batch_names_the_item_whose_payload_fails_and_creates_nothing(queue: TaskQueue) -> None:
    specs = [
        {"title": "fine", "kind": "test_run", "payload": {"command": "pytest"}},
        {"title": "bad", "kind": "test_run", "payload": {"command": ""}},
    ]
    with pytest.raises(ValidationFailed, match=r"tasks\[1\].payload at /command: .* \(rule: minLength\)"):
        queue.create_many(specs)
    assert queue.stats().total == 0


def test_update_checks_the_payload_against_the_new_kind(queue: TaskQueue) -> None:
    task = queue.create({"title": "plain", "payload": {"command": "make"}})
    with pytest.raises(ValidationFailed, match="'target' is a required property"):
        queue.update(task.id, {"kind": "code_review"})
    assert queue.get(task.id).kind == "task"
    assert queue.update(task.id, {"kind": "test_run"}).kind == "test_run"
    with pytest.raises(ValidationFailed, match="payload at /command: 5 is not of type 'string'"):
        queue.update(task.id, {"payload": {"command": 5}})
    assert queue.get(task.id).payload == {"command": "make"}


def test_a_project_registers_its_own_schemas(queue: TaskQueue) -> None:
    queue.create_project("support")
    queue.update_project("support", payload_schemas={"ticket": TICKET})
    with pytest.raises(ValidationFailed) as refused:
        queue.create({"title": "t", "project": "support", "kind": "ticket", "payload": {"severity": "mid", "x": 1}})
    message = str(refused.value)
    assert "taskqueue://schemas/support:ticket" in message
    assert "'url' is a required property (rule: required)" in message
    assert "at /severity: 'mid' is not one of ['low', 'high'] (rule: enum)" in message
    assert "(rule: additionalProperties)" in message
    queue.create({"title": "t", "project": "support", "kind": "ticket", "payload": {"url": "u", "severity": "low"}})
    # Other projects are not affected, and a project schema overrides a shipped one of the same kind.
    queue.create({"title": "t", "project": "other", "kind": "ticket", "payload": {"anything": True}})
    queue.update_project("support", payload_schemas={"code_review": {"type": "object"}})
    queue.create({"title": "r", "project": "support", "kind": "code_review", "payload": {}})
    queue.update_project("support", payload_schemas={"ticket": None})  # removed
    queue.create({"title": "t", "project": "support", "kind": "ticket", "payload": {}})


def test_an_invalid_schema_is_refused_at_registration(queue: TaskQueue) -> None:
    queue.create_project("support")
    with pytest.raises(ValidationFailed, match=r"payload_schemas\['ticket'\] is not a valid JSON Schema at /type"):
        queue.update_project("support", payload_schemas={"ticket": {"type": "banana"}})
    with pytest.raises(ValidationFailed, match="must be a JSON Schema object"):
        queue.update_project("support", payload_schemas={"ticket": ["type"]})
    queue.create({"title": "t", "project": "support", "kind": "ticket", "payload": {}})  # nothing was registered


@pytest.mark.anyio
async def test_schemas_through_the_server(client: Client) -> None:
    await call(client, "create_project", name="support")
    await call(client, "update_project", name="support", payload_schemas={"ticket": TICKET})
    refused = await client.call_tool(
        "create_task", {"title": "t", "project": "support", "kind": "ticket", "payload": {"url": 3, "severity": "low"}}
    )
    text = refused.content[0].text  # type: ignore[union-attr]
    assert refused.is_error and "validation_failed" in text and "payload at /url: 3 is not of type 'string'" in text
    update = await client.call_tool("update_task", {"task_id": "missing", "payload": {}})
    assert update.is_error
    registered = await client.read_resource("taskqueue://schemas/support:ticket")
    assert json.loads(registered.contents[0].text) == TICKET  # type: ignore[union-attr]
    spec = {"name": "w", "tasks": [{"ref": "a", "title": "A", "kind": "design", "payload": {}}]}
    inside = await client.call_tool("create_workflow", {"spec": spec})
    assert inside.is_error and "'doc_path' is a required property" in inside.content[0].text  # type: ignore[union-attr]
    assert (await call(client, "list_workflows"))["workflows"] == []
    assert (await call(client, "queue_stats"))["total"] == 0

"""One client cannot stall the others through a payload schema (issue 9, item 7)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_taskqueue.errors import ValidationFailed
from mcp_taskqueue.queue import TaskQueue
from tests.locks import write_lock_held
from tests.mcp_calls import call, call_error

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(client: Client) -> Client:
    """The shared client, with the project `shop` the examples register schemas on."""
    await call(client, "create_project", name="shop")
    return client


EVIL_SKU = {"type": "object", "properties": {"sku": {"type": "string", "pattern": "^(a+)+$"}}}


async def test_a_catastrophic_pattern_runs_in_linear_time(client: Client) -> None:
    """The issue's example took 7.5 s on the event loop inside the write transaction."""
    await call(client, "update_project", name="shop", payload_schemas={"order": EVIL_SKU})
    started = time.monotonic()
    message = await call_error(
        client, "create_task", project="shop", kind="order", title="o", payload={"sku": "a" * 26 + "!"}
    )
    assert time.monotonic() - started < 1.0
    assert "validation_failed" in message and "/sku" in message
    ok = await call(client, "create_task", project="shop", kind="order", title="o", payload={"sku": "aaa"})
    assert ok["status"] == "ready"


def test_long_input_against_nested_quantifiers_stays_fast(queue: TaskQueue) -> None:
    schema = {"type": "object", "patternProperties": {"^(x+x+)+y$": {"type": "integer"}}, "additionalProperties": False}
    queue.create_project("p")
    queue.update_project("p", payload_schemas={"k": schema})
    started = time.monotonic()
    with pytest.raises(ValidationFailed, match="Additional properties"):
        queue.create({"project": "p", "kind": "k", "title": "t", "payload": {"x" * 5000: 1}})
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("http://127.0.0.1:9/never-answers", "points outside the schema"),
        ("file:///etc/passwd", "points outside the schema"),
        ("other.json#/x", "points outside the schema"),
    ],
)
async def test_refs_outside_the_schema_are_refused_at_registration(client: Client, ref: str, expected: str) -> None:
    """Example B: the server fetched http refs (freezing every client) and echoed /etc/passwd."""
    started = time.monotonic()
    message = await call_error(client, "update_project", name="shop", payload_schemas={"order": {"$ref": ref}})
    assert time.monotonic() - started < 2.0
    assert "validation_failed" in message and expected in message and "root:" not in message


async def test_refs_inside_the_schema_still_work(client: Client) -> None:
    schema = {"$defs": {"sku": {"type": "string", "maxLength": 5}}, "properties": {"sku": {"$ref": "#/$defs/sku"}}}
    await call(client, "update_project", name="shop", payload_schemas={"order": schema})
    message = await call_error(
        client, "create_task", project="shop", kind="order", title="o", payload={"sku": "toolong"}
    )
    assert "maxLength" in message


@pytest.mark.parametrize("pattern", ["(a)\\1", "(?=a)b", "(?<!x)y"])
async def test_patterns_re2_cannot_run_are_refused_with_a_reason(client: Client, pattern: str) -> None:
    schema = {"properties": {"s": {"type": "string", "pattern": pattern}}}
    message = await call_error(client, "update_project", name="shop", payload_schemas={"k": schema})
    assert "validation_failed" in message and "RE2" in message


async def test_a_payload_is_checked_before_the_write_lock_is_taken(db_path: Path | str, client: Client) -> None:
    """Another connection holds the write lock: a payload that breaks its schema is refused at once
    (the check ran before the write transaction), instead of waiting for the lock."""
    await call(client, "update_project", name="shop", payload_schemas={"order": EVIL_SKU})
    with write_lock_held(db_path):
        started = time.monotonic()
        message = await call_error(
            client, "create_task", project="shop", kind="order", title="o", payload={"sku": "a" * 40 + "!"}
        )
        assert time.monotonic() - started < 2.0, "the check waited for the write lock"
    assert "validation_failed" in message and "/sku" in message
    assert (await call(client, "queue_stats"))["total"] == 0


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "http://127.0.0.1:9/never-answers"},
        {"properties": {"f": {"$ref": "file:///etc/passwd"}}},
        {"properties": {"sku": {"type": "string", "pattern": "^(a+)+$"}}},
    ],
)
def test_a_schema_stored_before_these_checks_is_still_safe_to_apply(queue: TaskQueue, schema: dict[str, Any]) -> None:
    """A schema that reached the store unchecked (written by an older version) is applied with the
    same rules: nothing fetched or read, patterns on RE2; the answer names the kind, fast."""
    queue.create_project("old")
    queue.store.write(lambda tx: tx.set_payload_schema("old", "order", json.dumps(schema), 0.0))
    started = time.monotonic()
    try:
        queue.create({"project": "old", "kind": "order", "title": "o", "payload": {"sku": "a" * 26 + "!", "f": 1}})
    except ValidationFailed as exc:
        assert "root:" not in str(exc) and "order" in str(exc)
    else:
        raise AssertionError("the payload was accepted")
    assert time.monotonic() - started < 2.0


async def test_a_workflow_payload_is_checked_before_the_write_lock_too(db_path: Path | str, client: Client) -> None:
    """The same rule for a workflow's tasks: a payload that breaks its schema is refused while another
    connection holds the write lock, and nothing of the workflow is created."""
    await call(client, "update_project", name="shop", payload_schemas={"order": EVIL_SKU})
    spec = {
        "name": "orders",
        "project": "shop",
        "tasks": [{"ref": "a", "title": "o", "kind": "order", "payload": {"sku": "a" * 40 + "!"}}],
    }
    with write_lock_held(db_path):
        started = time.monotonic()
        message = await call_error(client, "create_workflow", spec=spec)
        assert time.monotonic() - started < 2.0, "the check waited for the write lock"
    assert "validation_failed" in message and "/sku" in message
    assert (await call(client, "queue_stats"))["total"] == 0

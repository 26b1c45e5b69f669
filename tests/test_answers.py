"""Every request gets an answer that names its kind (issue 9, item 6)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from mcp_taskqueue.models import invalid_text
from mcp_taskqueue.queue import encode_cursor
from tests.mcp_calls import call, call_error
from tests.servers import server_env

pytestmark = pytest.mark.anyio


def forged(parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


@pytest.mark.parametrize("parts", [[2, 10**30], [True, False], [-5, -1], [7, 1], [1], "x", [1.5, 2]])
async def test_a_forged_cursor_is_named_as_such(client: Client, parts: Any) -> None:
    await call(client, "create_task", title="t")
    message = await call_error(client, "list_tasks", cursor=forged(parts))
    assert "validation_failed: cursor is not one this server issued" in message


async def test_an_issued_cursor_still_pages(client: Client) -> None:
    for i in range(3):
        await call(client, "create_task", title=f"t{i}")
    first = await call(client, "list_tasks", limit=2)
    second = await call(client, "list_tasks", limit=2, cursor=first["next_cursor"])
    assert len(first["tasks"]) == 2 and len(second["tasks"]) == 1
    assert "cursor is not one" in await call_error(client, "list_workflows", cursor=forged([-1]))
    assert encode_cursor(2, 5) == forged([2, 5]).replace(" ", "")  # our own encoding, for reference


async def test_text_that_is_not_unicode_is_refused_and_changes_nothing(client: Client) -> None:
    task = await call(client, "create_task", title="t")
    message = await call_error(client, "add_note", task_id=task["id"], text="half \udc00")
    assert "validation_failed: text: text is not valid Unicode" in message
    message = await call_error(client, "create_task", title="Deploy \ud83d")
    assert "validation_failed: title" in message
    nested = await call_error(client, "create_task", title="ok", payload={"a": [{"b": "x\ud800"}]})
    assert "validation_failed: payload.a[0].b" in nested
    listed = await call_error(client, "update_task", task_id=task["id"], tags=["ok", "\udfff"])
    assert "validation_failed: tags[1]" in listed
    assert invalid_text({"fine": 1, "\udfff": 1}) is not None and invalid_text({"é": ["ok"]}) is None
    after = await call(client, "get_task", task_id=task["id"])
    assert after["version"] == task["version"] and (await call(client, "queue_stats"))["total"] == 1


async def test_unknown_prompts_and_resources_are_invalid_params(client: Client) -> None:
    with pytest.raises(MCPError) as prompt:
        await client.get_prompt("no_such_prompt", {})
    assert prompt.value.error.code == INVALID_PARAMS and "no_such_prompt" in prompt.value.error.message
    with pytest.raises(MCPError) as missing_arg:
        await client.get_prompt("work_next", {})
    assert missing_arg.value.error.code == INVALID_PARAMS
    for uri in ("taskqueue://tasks/nope", "foo://bar", "taskqueue://nothing/here", "taskqueue://workflows/zz"):
        with pytest.raises(MCPError) as resource:
            await client.read_resource(uri)
        assert resource.value.error.code == INVALID_PARAMS, uri


@pytest.mark.parametrize("when", ["9999-12-31T23:30:00-14:00", "10000-01-01T00:00:00Z", "0000-01-01T00:00:00Z"])
async def test_stored_times_stay_within_year_9999(client: Client, when: str) -> None:
    message = await call_error(client, "create_task", title="t", run_at=when)
    assert "validation_failed" in message and "run_at" in message
    assert (await call(client, "queue_stats"))["total"] == 0


def run_stdio(db: Path, lines: list[str], last_id: int) -> tuple[list[dict[str, Any]], str]:
    """Send the lines after the handshake; read replies until the one with `last_id`, then close stdin."""
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_taskqueue.cli", "--db", str(db), "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    initialized = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
    proc.stdin.write("\n".join([json.dumps(init), initialized, *lines]) + "\n")
    proc.stdin.flush()
    replies: list[dict[str, Any]] = []
    try:
        while not any(r.get("id") == last_id for r in replies):
            line = proc.stdout.readline()
            assert line, "the server closed stdout before answering"
            replies.append(json.loads(line))
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.stderr is not None
    return replies, proc.stderr.read()


def test_stdio_answers_what_it_cannot_parse(db_path: Path) -> None:
    """Example B: a tools/call with a lone surrogate got no reply at all; garbage gets -32700."""
    surrogate = (
        '{"jsonrpc":"2.0","id":7,"method":"tools/call",'
        '"params":{"name":"create_task","arguments":{"title":"Deploy \\ud83d"}}}'
    )
    good = {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "queue_stats", "arguments": {}}}
    replies, stderr = run_stdio(db_path, [surrogate, "{not json", json.dumps(good)], last_id=8)
    by_id = {r.get("id"): r for r in replies}
    assert by_id[7]["error"]["code"] == INVALID_PARAMS and "validation_failed" in by_id[7]["error"]["message"]
    assert by_id[None]["error"]["code"] == -32700
    assert by_id[8]["result"]["structuredContent"]["total"] == 0  # the server carried on
    assert "Traceback" not in stderr


def test_cli_arguments_that_are_not_utf8_are_refused(db_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable.encode(),
            b"-m",
            b"mcp_taskqueue.cli",
            b"--db",
            str(db_path).encode(),
            b"task",
            b"add",
            b"\xff\xfe",
        ],
        capture_output=True,
        env=server_env(),
        timeout=60,
    )
    assert proc.returncode == 2
    assert b"validation_failed" in proc.stderr and b"Traceback" not in proc.stderr

"""End to end over real transports: a stdio subprocess, and HTTP (streamable and SSE) on a free port."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.sse import sse_client

from tests.servers import http_server, server_env, stdio_params

pytestmark = pytest.mark.anyio


async def drive(client: Client) -> None:
    """A whole worker cycle: create, claim, complete, read back."""
    created = await client.call_tool("create_task", {"title": "over the wire", "priority": "critical"})
    assert not created.is_error
    task_id = created.structured_content["id"]  # type: ignore[index]
    claim = await client.call_tool("claim_task", {"worker": "remote"})
    assert claim.structured_content["task"]["id"] == task_id  # type: ignore[index]
    lease = claim.structured_content["lease_id"]  # type: ignore[index]
    args = {"task_id": task_id, "worker": "remote", "lease_id": lease, "result": [1, 2]}
    done = await client.call_tool("complete_task", args)
    assert done.structured_content["status"] == "completed"  # type: ignore[index]
    resource = await client.read_resource(f"taskqueue://tasks/{task_id}")
    assert json.loads(resource.contents[0].text)["result"] == [1, 2]  # type: ignore[union-attr]


async def test_stdio_subprocess(tmp_path: Path) -> None:
    db = tmp_path / "stdio.db"
    async with Client(stdio_params(db)) as client:
        assert client.server_info is None or client.server_info.name == "mcp-taskqueue"
        await drive(client)
    assert db.exists()


def test_stdio_stdout_carries_only_protocol(tmp_path: Path) -> None:
    """Logs at DEBUG still go to stderr: every stdout line must be a JSON-RPC message."""
    messages = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "get_task", "arguments": {"task_id": "x"}},
        },
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_taskqueue.cli", "--db", str(tmp_path / "raw.db"), "serve", "--log-level", "DEBUG"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("".join(json.dumps(m) + "\n" for m in messages).encode())
    proc.stdin.flush()
    parsed = []
    try:
        while not any(m.get("id") == 3 for m in parsed):
            line = proc.stdout.readline()
            assert line, "server closed stdout before answering"
            parsed.append(json.loads(line))  # raises on any stray log line
    finally:
        proc.stdin.close()
        proc.stdin = None  # communicate() must not flush the closed pipe
        rest, err = proc.communicate(timeout=30)
    parsed.extend(json.loads(line) for line in rest.decode().splitlines() if line.strip())
    assert b"DEBUG" in err  # the logs exist; they just go to stderr
    assert all(m.get("jsonrpc") == "2.0" for m in parsed)
    by_id = {m["id"]: m for m in parsed if "id" in m}
    assert {1, 2, 3} <= set(by_id)
    assert len(by_id[2]["result"]["tools"]) >= 19
    raw_tools_list = json.dumps(by_id[2], separators=(",", ":"))
    assert len(raw_tools_list.encode()) < 32 * 1024, len(raw_tools_list)  # the context budget, on the wire
    assert by_id[3]["result"]["isError"] is True


async def test_streamable_http_and_sse_from_one_process(tmp_path: Path) -> None:
    with http_server(tmp_path / "http.db") as base:
        with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
            health = json.loads(response.read())
        assert health["status"] == "ok"
        async with Client(base + "/mcp") as client:
            await drive(client)
        async with Client(sse_client(base + "/sse")) as client:
            await drive(client)
            stats = await client.call_tool("queue_stats", {})
            assert stats.structured_content["by_status"]["completed"] == 2  # type: ignore[index]


async def test_sse_only_transport(tmp_path: Path) -> None:
    with http_server(tmp_path / "sse.db", transport="sse") as base:
        async with Client(sse_client(base + "/sse")) as client:
            await drive(client)


def test_unknown_toolset_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mcp_taskqueue.cli", "--db", str(tmp_path / "x.db"), "serve", "--toolsets", "bogus"],
        capture_output=True,
        timeout=60,
        env=server_env(),
    )
    assert proc.returncode == 2
    assert b"unknown toolset" in proc.stderr and proc.stdout == b""


# npm's own words for "no network": only these skip; any other failure of the Inspector fails the test.
NPM_UNREACHABLE = ("ENOTFOUND", "ETIMEDOUT", "ECONNREFUSED", "ECONNRESET", "EAI_AGAIN", "network request to")


@pytest.mark.skipif(shutil.which("npx") is None, reason="npx (Node.js) is not installed")
def test_official_inspector_cli(tmp_path: Path) -> None:
    """The official MCP Inspector, as a real third-party client, lists tools and calls one."""
    server = [sys.executable, "-m", "mcp_taskqueue.cli", "--db", str(tmp_path / "insp.db"), "serve"]
    base = ["npx", "-y", "@modelcontextprotocol/inspector@0", "--cli", *server]

    def inspector(*args: str) -> dict:  # type: ignore[type-arg]
        proc = subprocess.run(
            [*base, *args], capture_output=True, timeout=300, env=server_env(), stdin=subprocess.DEVNULL
        )
        err = proc.stderr.decode()
        if proc.returncode != 0 and any(code in err for code in NPM_UNREACHABLE):
            pytest.skip(f"the npm registry could not be reached to fetch the Inspector: {err[-300:]}")
        assert proc.returncode == 0, err[-2000:]
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    listed = inspector("--method", "tools/list")
    assert {"create_task", "claim_task", "complete_task"} <= {t["name"] for t in listed["tools"]}
    called = inspector("--method", "tools/call", "--tool-name", "create_task", "--tool-arg", "title=From the inspector")
    assert called["isError"] is False
    assert called["structuredContent"]["title"] == "From the inspector"

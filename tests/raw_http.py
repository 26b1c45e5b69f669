"""MCP over streamable HTTP by hand (urllib), for tests that need exact bytes, sessions and status codes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

PROTOCOL = "2025-06-18"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def message(self) -> dict[str, Any]:
        """The JSON-RPC message in the body (plain JSON, or the last `data:` line of an SSE stream)."""
        text = self.body.decode()
        if self.headers.get("content-type", "").startswith("text/event-stream"):
            text = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")][-1]
        return json.loads(text)  # type: ignore[no-any-return]


def post(base: str, body: bytes, session: str | None = None, method: str = "POST", timeout: float = 60) -> Reply:
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": PROTOCOL,
    }
    if session:
        headers["Mcp-Session-Id"] = session
    request = urllib.request.Request(base + "/mcp", data=body or None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def initialize(base: str) -> Reply:
    """An `initialize` request opening a new session (its id is in the `mcp-session-id` header)."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
    }
    return post(base, json.dumps(body).encode())


def open_session(base: str) -> str:
    reply = initialize(base)
    assert reply.status == 200, (reply.status, reply.body[:300])
    session = reply.headers["mcp-session-id"]
    note = post(base, b'{"jsonrpc":"2.0","method":"notifications/initialized"}', session)
    assert note.status == 202, note.status
    return session


def tool_call_body(name: str, arguments_json: str, request_id: int = 2) -> bytes:
    """A tools/call request whose arguments are given as ready JSON text (large bodies are built once)."""
    head = f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call","params":{{"name":"{name}","arguments":'
    return (head + arguments_json + "}}").encode()


def call_tool(base: str, session: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    reply = post(base, tool_call_body(name, json.dumps(arguments)), session)
    assert reply.status == 200, (reply.status, reply.body[:300])
    return reply.message()["result"]  # type: ignore[no-any-return]


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")

"""A real `mcp-taskqueue serve` subprocess with any options and environment, its stderr kept in a file,
and MCP clients that send a bearer token (streamable HTTP or SSE)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.servers import free_port, server_env, stop, wait_healthy


@dataclass
class Running:
    base: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines()

    def log_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_lines() if line.startswith("{")]


def cli(db: Path | str | None, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `mcp-taskqueue --db DB ARGS...` (no --db when None; DB a file or a postgresql:// URL) to completion."""
    return subprocess.run(
        [sys.executable, "-m", "mcp_taskqueue.cli", *(["--db", str(db)] if db else []), *args],
        capture_output=True,
        text=True,
        env={**server_env(), **(env or {})},
        timeout=120,
    )


def make_token(db: Path | str, name: str, scopes: str, *projects: str) -> str:
    args = ["--format", "json", "token", "create", "--name", name, "--scopes", scopes]
    for project in projects:
        args += ["--project", project]
    done = cli(db, *args)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["token"])


@contextmanager
def serve(
    db: Path | str,
    *args: str,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    timeout: float = 60.0,
) -> Iterator[Running]:
    """`serve --transport http --host HOST --port FREE ARGS...`; yields once /healthz answers.

    The server's stderr goes to a file next to an SQLite DB (in a temporary folder for a URL)."""
    port = free_port()
    log = (db.parent if isinstance(db, Path) else Path(tempfile.mkdtemp(prefix="tq-serve-"))) / f"server-{port}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcp_taskqueue.cli", "--db", str(db), "serve", "--transport", "http"]
            + ["--host", host, "--port", str(port), *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**server_env(), **(env or {})},
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base, timeout, log.read_text)
        yield Running(base, proc, log)
    finally:
        stop(proc)


@asynccontextmanager
async def mcp_client(
    base: str, token: str | None = None, transport: str = "http", mode: Any = "auto", message_handler: Any = None
) -> AsyncIterator[Client]:
    """An MCP client on /mcp (or /sse) sending `Authorization: Bearer token` when given.

    `mode="legacy"` forces the initialize handshake (for `resources/subscribe`); `message_handler`
    receives the server's notifications."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if transport == "sse":
        async with Client(
            sse_client(base + "/sse", headers=headers), mode=mode, message_handler=message_handler
        ) as client:
            yield client
        return
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
        Client(
            streamable_http_client(base + "/mcp", http_client=http), mode=mode, message_handler=message_handler
        ) as client,
    ):
        yield client

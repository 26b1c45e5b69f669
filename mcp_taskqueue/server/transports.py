"""Serving the MCP server: stdio, or streamable HTTP at /mcp and SSE at /sse in one process."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import mcp_types as types
from mcp.server import MCPServer
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.message import SessionMessage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcp_taskqueue import __version__
from mcp_taskqueue.models import invalid_text
from mcp_taskqueue.server.board_routes import add_board_routes

log = logging.getLogger("mcp_taskqueue")


def add_health_route(mcp: MCPServer) -> None:
    @mcp.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator]
    async def healthz(_request: Request) -> Response:
        queue = mcp.queue  # type: ignore[attr-defined]
        ok = await anyio.to_thread.run_sync(lambda: queue.store.integrity_check() == "ok")
        return JSONResponse(
            {"status": "ok" if ok else "degraded", "version": __version__}, status_code=200 if ok else 503
        )


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_BINDS = ("0.0.0.0", "::", "")


def transport_security(
    host: str, allowed_hosts: list[str] | None = None, allowed_origins: list[str] | None = None
) -> TransportSecuritySettings:
    """The DNS-rebinding defence for any bind address: the Host and Origin headers must name loopback,
    the address bound (unless it is a wildcard), or one of the configured public names. The SDK turns
    it on only for loopback binds; a server on 0.0.0.0 would otherwise answer `Host: evil.example`."""
    names = [*LOOPBACK_HOSTS, *(allowed_hosts or [])]
    if host not in WILDCARD_BINDS and host.strip("[]") not in ("127.0.0.1", "localhost", "::1"):
        names.append(f"[{host}]" if ":" in host and not host.startswith("[") else host)
    hosts: list[str] = []
    for name in names:
        hosts += [name] if name.rsplit(":", 1)[-1].isdigit() and not name.endswith("]") else [name, f"{name}:*"]
    origins = [f"http://{name}:*" for name in LOOPBACK_HOSTS] + [f"http://{name}" for name in LOOPBACK_HOSTS]
    for origin in allowed_origins or []:
        origins += [origin.rstrip("/"), f"{origin.rstrip('/')}:*"]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def http_app(
    mcp: MCPServer,
    *,
    host: str = "127.0.0.1",
    sse: bool = True,
    streamable: bool = True,
    allowed_hosts: list[str] | None = None,
    allowed_origins: list[str] | None = None,
) -> Starlette:
    """One Starlette app: streamable HTTP at /mcp, SSE at /sse (+ /messages/), health at /healthz, the
    board at /. Host and Origin headers are checked on every bind address (`transport_security`)."""
    add_health_route(mcp)
    add_board_routes(mcp)
    security = transport_security(host, allowed_hosts, allowed_origins)
    if streamable:
        app = mcp.streamable_http_app(host=host, transport_security=security)
        if sse:
            sse_app = mcp.sse_app(host=host, transport_security=security)
            app.router.routes.extend(r for r in sse_app.routes if getattr(r, "path", "") != "/healthz")
        return app
    return mcp.sse_app(host=host, transport_security=security)


def unparsable_reply(line: str) -> types.JSONRPCError | None:
    """The error a line the SDK cannot parse deserves (None when it parses, or needs no answer).

    The SDK's stdio reader drops such lines silently and the client waits for its own timeout. Not
    JSON is -32700; JSON whose text holds a lone surrogate (JavaScript's half of an emoji) gets
    -32602 `validation_failed` with the request's own id, so the client can match it.
    """
    if not line.strip():
        return None
    try:
        types.jsonrpc_message_adapter.validate_json(line, by_name=False)
        return None
    except ValueError:
        pass
    try:
        data: Any = json.loads(line)
    except ValueError as exc:
        return types.JSONRPCError(
            jsonrpc="2.0", id=None, error=types.ErrorData(code=types.PARSE_ERROR, message=f"Parse error: {exc}")
        )
    request_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(request_id, (int, str)) or isinstance(request_id, bool):
        request_id = None
    if isinstance(data, dict) and "method" in data and request_id is None and "id" not in data:
        return None  # a notification: no reply is expected, and none can be matched
    bad = invalid_text(data)
    if bad is not None:
        message = f"validation_failed: {bad}: text is not valid Unicode (a lone surrogate); send well-formed UTF-8"
        error = types.ErrorData(code=types.INVALID_PARAMS, message=message)
    else:
        error = types.ErrorData(code=types.INVALID_REQUEST, message="Invalid Request: not a JSON-RPC 2.0 message")
    return types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error)


class AnsweringLines:
    """stdin's lines for the SDK's stdio reader, minus those it could not parse: each of those is
    answered here (through the transport's own writer) instead of vanishing."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.write_stream: Any = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        async for line in self.source:
            reply = unparsable_reply(line)
            if reply is None:
                yield line
            elif self.write_stream is not None:
                log.info("answered an unparsable stdio message with %s", reply.error.code)
                await self.write_stream.send(SessionMessage(reply))


async def run_stdio(mcp: MCPServer) -> None:
    """`mcp.run("stdio")`, except that every message gets an answer (see `unparsable_reply`)."""
    raw = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    lines = AnsweringLines(anyio.wrap_file(raw))
    async with stdio_server(stdin=lines) as (read_stream, write_stream):  # type: ignore[arg-type]
        lines.write_stream = write_stream
        server = mcp._lowlevel_server
        await server.run(read_stream, write_stream, server.create_initialization_options())


def serve(
    mcp: MCPServer,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    allowed_hosts: list[str] | None = None,
    allowed_origins: list[str] | None = None,
) -> None:
    """Run until interrupted. In stdio mode only protocol messages reach stdout."""
    if transport == "stdio":
        anyio.run(run_stdio, mcp)
        return
    import uvicorn

    if host in WILDCARD_BINDS:
        log.warning(
            "serving on all interfaces (%s): anyone who can reach this machine can use the queue; only "
            "Host/Origin headers naming loopback or --allowed-hosts/--allowed-origins are accepted",
            host or "*",
        )
    app = http_app(
        mcp,
        host=host,
        sse=True,
        streamable=transport == "http",
        allowed_hosts=allowed_hosts,
        allowed_origins=allowed_origins,
    )
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    print_banner(transport, host, port, str(mcp.queue.store.path))  # type: ignore[attr-defined]
    anyio.run(server.serve)


def print_banner(transport: str, host: str, port: int, db: str) -> None:
    base = f"http://{host}:{port}"
    lines = [f"mcp-taskqueue {__version__} listening on {base}", f"  store:           {db}"]
    if transport == "http":
        lines += [
            f"  streamable HTTP: {base}/mcp",
            f"  SSE:             {base}/sse",
            f"  health:          {base}/healthz",
            f"  board:           {base}/",
            "",
            "Connect:",
            f"  Claude Code:    claude mcp add --transport http taskqueue {base}/mcp",
            f"  MCP Inspector:  npx @modelcontextprotocol/inspector --cli {base}/mcp --transport http --method tools/list",
            '  Claude Desktop: add to claude_desktop_config.json: {"mcpServers": {"taskqueue": '
            '{"command": "mcp-taskqueue", "args": ["serve"]}}}',
        ]
    else:
        lines += [f"  SSE: {base}/sse", f"  health: {base}/healthz"]
    print("\n".join(lines), file=sys.stderr, flush=True)

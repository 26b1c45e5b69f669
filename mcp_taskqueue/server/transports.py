"""Serving the MCP server: stdio, or streamable HTTP at /mcp and SSE at /sse in one process."""

from __future__ import annotations

import logging
import sys

import anyio
from mcp.server import MCPServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcp_taskqueue import __version__
from mcp_taskqueue.logs import json_logging
from mcp_taskqueue.server.board_routes import add_board_routes
from mcp_taskqueue.server.service import install_http, wrap_app

log = logging.getLogger("mcp_taskqueue")


def add_health_route(mcp: MCPServer) -> None:
    @mcp.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator]
    async def healthz(_request: Request) -> Response:
        queue = mcp.queue  # type: ignore[attr-defined]
        ok = await anyio.to_thread.run_sync(lambda: queue.store.integrity_check() == "ok")
        return JSONResponse(
            {"status": "ok" if ok else "degraded", "version": __version__}, status_code=200 if ok else 503
        )


def http_app(mcp: MCPServer, *, host: str = "127.0.0.1", sse: bool = True, streamable: bool = True) -> Starlette:
    """One Starlette app: streamable HTTP at /mcp, SSE at /sse (+ /messages/), health at /healthz, the board at /,
    metrics at /metrics (server/service.py adds it, with auth and rate limits when configured)."""
    add_health_route(mcp)
    add_board_routes(mcp)
    install_http(mcp)
    if streamable:
        app = mcp.streamable_http_app(host=host)
        if sse:
            sse_app = mcp.sse_app(host=host)
            own = {getattr(r, "path", "") for r in app.routes}
            app.router.routes.extend(r for r in sse_app.routes if getattr(r, "path", "") not in own)
        return wrap_app(mcp, app)
    return wrap_app(mcp, mcp.sse_app(host=host))


def serve(mcp: MCPServer, transport: str = "stdio", host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run until interrupted. In stdio mode only protocol messages reach stdout."""
    if transport == "stdio":
        mcp.run("stdio")
        return
    import uvicorn

    app = http_app(mcp, host=host, sse=True, streamable=transport == "http")
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    if json_logging():  # machines read JSON logs: one record instead of the banner for people
        log.info("mcp-taskqueue %s listening on http://%s:%s", __version__, host, port, extra={"event": "listening"})
    else:
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

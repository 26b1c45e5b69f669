"""Serving the MCP server: stdio, or streamable HTTP at /mcp and SSE at /sse in one process."""

from __future__ import annotations

import errno
import json
import logging
import socket
import sys

import anyio
from mcp.server import MCPServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcp_taskqueue import __version__
from mcp_taskqueue.server.board_routes import add_board_routes
from mcp_taskqueue.server.event_store import RETRY_MILLISECONDS, BoundedEventStore

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
    """One Starlette app: streamable HTTP at /mcp, SSE at /sse (+ /messages/), health at /healthz, the board at /."""
    add_health_route(mcp)
    add_board_routes(mcp)
    if streamable:
        # An event store makes POST streams resumable: priming event with an id, a retry: hint.
        app = mcp.streamable_http_app(host=host, event_store=BoundedEventStore(), retry_interval=RETRY_MILLISECONDS)
        if sse:
            sse_app = mcp.sse_app(host=host)
            app.router.routes.extend(r for r in sse_app.routes if getattr(r, "path", "") != "/healthz")
        return app
    return mcp.sse_app(host=host)


class ServeError(Exception):
    """The server cannot start (e.g. the port is taken): one line for the user, no traceback."""


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port), or ServeError saying why not."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    # IPv4 first, as uvicorn does for 'localhost'.
    family, kind, proto, _, address = sorted(infos, key=lambda info: info[0] != socket.AF_INET)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(
                f"port {port} on {host} is already in use (another mcp-taskqueue?); choose another with --port"
            ) from None
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def serve(mcp: MCPServer, transport: str = "stdio", host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run until interrupted. In stdio mode only protocol messages reach stdout. Over HTTP the
    socket is bound first (ServeError if it cannot be) and the banner printed once the server is up."""
    if transport == "stdio":
        mcp.run("stdio")
        return
    import uvicorn

    sock = bind(host, port)
    app = http_app(mcp, host=host, sse=True, streamable=transport == "http")
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    bound_port = int(sock.getsockname()[1])
    db = str(mcp.queue.store.path)  # type: ignore[attr-defined]

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            while not server.started:
                if server.should_exit:
                    return
                await anyio.sleep(0.05)
            print_banner(transport, host, bound_port, db)

    try:
        anyio.run(run)
    finally:
        sock.close()


def reachable_host(host: str) -> str:
    """A host a client can connect to: a wildcard address becomes loopback; IPv6 is bracketed."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def print_banner(transport: str, host: str, port: int, db: str) -> None:
    """What is listening where, and how to connect (to stderr; printed after the server is up)."""
    base = f"http://{reachable_host(host)}:{port}"
    lines = [f"mcp-taskqueue {__version__} listening on {base}", f"  store:           {db}"]
    if host in ("", "0.0.0.0", "::"):
        lines.append(f"  other machines:  http://{socket.gethostname()}:{port} (listening on every interface)")
    desktop = json.dumps({"mcpServers": {"taskqueue": {"command": "mcp-taskqueue", "args": ["serve", "--db", db]}}})
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
            f"  Claude Desktop: add to claude_desktop_config.json (stdio, same store): {desktop}",
        ]
    else:
        lines += [f"  SSE: {base}/sse", f"  health: {base}/healthz"]
    print("\n".join(lines), file=sys.stderr, flush=True)

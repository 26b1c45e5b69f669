"""The SDK floor: a bare `MCPServer` whose claim_task/complete_task take our arguments and do nothing.

Run it the way ours is run, so the only difference measured is our work per call:
`python -m benchmarks.floor_server --transport stdio` or `--transport http --port P`
(streamable HTTP at /mcp, SSE at /sse, through the same app builder as ours).
"""

from __future__ import annotations

import argparse
from typing import Any

from mcp.server import MCPServer


def build_floor_server() -> MCPServer:
    mcp = MCPServer("floor", log_level="WARNING")

    @mcp.tool()
    async def claim_task(
        worker: str,
        project: str | None = None,
        kinds: list[str] | None = None,
        tags: list[str] | None = None,
        lease_seconds: int | None = None,
    ) -> dict[str, Any]:
        """No-op with claim_task's arguments."""
        return {"task": {"id": "0000000000000000", "status": "running", "worker": worker}}

    @mcp.tool()
    async def complete_task(
        task_id: str, worker: str, lease_id: str | None = None, result: Any = None
    ) -> dict[str, Any]:
        """No-op with complete_task's arguments."""
        return {"id": task_id, "status": "completed", "version": 3}

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    mcp = build_floor_server()
    if args.transport == "stdio":
        mcp.run("stdio")
        return
    import anyio
    import uvicorn

    app = mcp.streamable_http_app(host=args.host)
    app.router.routes.extend(mcp.sse_app(host=args.host).routes)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", lifespan="on"))
    anyio.run(server.serve)


if __name__ == "__main__":
    main()

"""The MCP surface: tools, resources and prompts over `TaskQueue`, and the transports."""

from mcp_taskqueue.server.app import build_server

__all__ = ["build_server"]

"""mcp-taskqueue: a durable task queue and workflow orchestrator for AI agents, served over MCP."""

__version__ = "0.1.0"

"""Calling tools through a real `mcp.Client` and checking the reply's shape on the way."""

from __future__ import annotations

import json
from typing import Any

from mcp import Client


async def call(client: Client, tool: str, **args: Any) -> Any:
    """Call a tool that must succeed; its text content must be the same JSON as its structured content."""
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    assert json.loads(result.content[0].text) == result.structured_content  # type: ignore[union-attr]
    return result.structured_content


async def call_error(client: Client, tool: str, **args: Any) -> str:
    """Call a tool that must fail; returns the error text the model would read."""
    result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    return result.content[0].text  # type: ignore[union-attr,no-any-return]

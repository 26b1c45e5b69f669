"""Writes docs/reference.md from the live server, so the tool reference cannot drift from the code.

`python -m mcp_taskqueue.reference > docs/reference.md`; tests/test_reference.py fails when the
committed file differs from what the server describes.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from mcp_taskqueue.server.app import build_server, parse_toolsets

HEADER = """# Reference

Generated from the server itself by `python -m mcp_taskqueue.reference > docs/reference.md`
(a test fails when this file is stale). Every tool returns structured content matching its output
schema, and the same JSON as text; fields that are null or empty are omitted.
"""


def _type(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"] if v is not None)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = "/".join(k for k in kind if k != "null")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if kind is None and "$ref" in schema:
        return str(schema["$ref"]).split("/")[-1]
    if kind is None and "anyOf" in schema:
        return " or ".join(_type(option) for option in schema["anyOf"] if option.get("type") != "null")
    return str(kind or "any")


def _flat(text: str | None) -> str:
    return " ".join((text or "").split())


def _arguments(schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", []))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        default = "" if "default" not in prop else f" (default `{json.dumps(prop['default'])}`)"
        need = "**required**" if name in required else "optional"
        text = _flat(prop.get("description"))
        rows.append(f"| `{name}` | {_type(prop)} | {need}{default} | {text} |")
    return rows


async def render() -> str:
    """The whole reference page, from a server on a throwaway database."""
    with tempfile.TemporaryDirectory() as tmp:
        server = build_server(Path(tmp) / "reference.db")
        full_outputs: dict[str, Any] = server.output_schemas  # type: ignore[attr-defined]
        async with Client(server) as client:
            tools = (await client.list_tools()).tools
            resources = (await client.list_resources()).resources
            templates = (await client.list_resource_templates()).resource_templates
            prompts = (await client.list_prompts()).prompts
        groups = {
            name: {t.name for t in await _tools_of(Path(tmp) / f"{name}.db", name)} for name in parse_toolsets(None)
        }
    lines = [HEADER, "## Tools", ""]
    for group in parse_toolsets(None):
        lines += [f"### Toolset `{group}`", ""]
        for tool in (t for t in tools if t.name in groups[group]):
            hints = tool.annotations
            flags = []
            if hints is not None:
                flags.append("read-only" if hints.read_only_hint else "writes")
                if hints.destructive_hint:
                    flags.append("destructive")
                if hints.idempotent_hint:
                    flags.append("idempotent")
            lines += [f"#### `{tool.name}` ({', '.join(flags)})", "", tool.description or "", ""]
            args = _arguments(tool.input_schema)
            if args:
                lines += ["| argument | type | | meaning |", "| --- | --- | --- | --- |", *args, ""]
            output = full_outputs.get(tool.name) or tool.output_schema or {}
            fields = ", ".join(f"`{name}`" for name in output.get("properties", {}))
            lines += [f"Returns: {fields}.", ""]
    lines += ["## Resources", "", "| URI | what |", "| --- | --- |"]
    lines += [f"| `{r.uri}` | {_flat(r.description)} |" for r in resources]
    lines += [f"| `{t.uri_template}` | {_flat(t.description)} |" for t in templates]
    lines += ["", "## Prompts", "", "| prompt | arguments | what |", "| --- | --- | --- |"]
    for prompt in prompts:
        names = ", ".join(f"`{a.name}`" + ("" if a.required else "?") for a in prompt.arguments or [])
        lines.append(f"| `{prompt.name}` | {names} | {_flat(prompt.description)} |")
    return "\n".join(lines).rstrip() + "\n"


async def _tools_of(db: Path, toolset: str) -> list[Any]:
    async with Client(build_server(db, toolsets=toolset)) as client:
        return list((await client.list_tools()).tools)


def main() -> None:
    sys.stdout.write(anyio.run(render))


if __name__ == "__main__":
    main()

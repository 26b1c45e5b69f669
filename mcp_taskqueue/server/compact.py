"""Shrinks the JSON Schemas pydantic generates for tools, because agents pay for every byte.

Pydantic writes a `title` on every property, `anyOf [X, null]` plus `"default": null` for
each optional, and `$defs` with docstrings for every enum. None of that tells a model
anything the property name and type do not. The server still validates every argument with
the full pydantic model, so dropping length limits and patterns here loses no safety.
"""

from __future__ import annotations

from typing import Any

from mcp.server import MCPServer

# Keys that only restate what the name says, or that the server enforces anyway (maxItems and long
# texts' maxLength stay: the HTTP layer enforces and advertises them, server/body_limits.py).
TERSE_LENGTH = 200
DROPPED_KEYS = frozenset(
    {"title", "pattern", "minLength", "maxLength", "additionalProperties", "minItems", "maximum", "minimum"}
)


def _resolve_enums(node: Any, defs: dict[str, Any]) -> Any:
    """Replace `$ref`s to enum definitions by the enum itself (shorter than $defs + description)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = defs.get(ref.split("/")[-1], {})
            if "enum" in target:
                extra = {k: v for k, v in node.items() if k != "$ref"}
                return {"enum": target["enum"], **extra}
        return {k: _resolve_enums(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_enums(item, defs) for item in node]
    return node


def _simplify(node: Any, in_properties: bool = False, keep_null: bool = True) -> Any:
    if isinstance(node, list):
        return [_simplify(item, keep_null=keep_null) for item in node]
    if not isinstance(node, dict):
        return node
    if in_properties:  # keys are property names, not schema keywords
        return {name: _simplify(schema, keep_null=keep_null) for name, schema in node.items()}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROPPED_KEYS and not isinstance(value, dict | list):
            continue
        if key == "default" and (value is None or not keep_null):
            continue  # an output's defaults say nothing: the value is always there or omitted
        if (
            key == "description"
            and not keep_null
            and not in_properties
            and isinstance(value, str)
            and "properties" in node
        ):
            continue  # an output model's docstring: the tool description already says it
        out[key] = _simplify(value, in_properties=key in ("properties", "$defs"), keep_null=keep_null)
    options = out.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        other = next(o for o in options if o != {"type": "null"})
        if isinstance(other.get("type"), str):
            del out["anyOf"]
            out.update({**other, "type": [other["type"], "null"]} if keep_null else other)
        elif "enum" in other:
            del out["anyOf"]
            out.update({**other, "enum": [*other["enum"], None]} if keep_null else other)
    return out


def compact_schema(schema: dict[str, Any], *, output: bool = False, outline: bool = True) -> dict[str, Any]:
    """A smaller schema for the same documents: enums inlined, noise dropped.

    For outputs, optional fields lose their `null` alternative: `reply()` omits null values
    instead of sending them, so the schema only has to describe values that are present.
    """
    defs = schema.get("$defs", {})
    result = _resolve_enums(schema, defs)
    result = _simplify(result, keep_null=not output)
    remaining = {name: d for name, d in result.get("$defs", {}).items() if "enum" not in d}
    if remaining:
        result["$defs"] = remaining
    else:
        result.pop("$defs", None)
    if output:
        result.pop("description", None)
        if outline:
            result = _outline(result)
    else:
        _optional_takes_null(result)
    return result  # type: ignore[no-any-return]


def _outline(node: Any) -> Any:
    """An output schema cut to its outline: the fields that are always there, and the shape of nested
    objects. Optional fields (sent only when set), types, enums and per-field prose go: an agent reads
    the output itself, and every byte here costs tokens on every turn. docs/reference.md documents
    every field in full; further fields stay allowed."""
    if not isinstance(node, dict):
        return node
    out = {k: v for k, v in node.items() if k in ("type", "required", "$ref", "$defs", "anyOf", "items", "properties")}
    if "properties" in out:
        always = set(out.get("required", [])) or set(out["properties"])  # no required field: name them all
        out["properties"] = {name: _field(prop) for name, prop in out["properties"].items() if name in always}
    if "$defs" in out:
        out["$defs"] = {name: _outline(d) for name, d in out["$defs"].items()}
    return out


def _field(prop: Any) -> Any:
    if not isinstance(prop, dict):
        return prop
    text = str(prop)
    if "$ref" in text or "properties" in text:  # a nested model: keep its shape
        return _outline(prop)
    return {}


def _optional_takes_null(schema: dict[str, Any]) -> None:
    """Say in the schema that null is accepted for every optional argument (it means the default)."""
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        if name in required or not isinstance(prop, dict):
            continue
        kind = prop.get("type")
        if isinstance(kind, str) and kind != "null":
            prop["type"] = [kind, "null"]
        elif "enum" in prop and None not in prop["enum"]:
            prop["enum"] = [*prop["enum"], None]


def compact_tool_schemas(
    mcp: MCPServer, documented_inputs: dict[str, dict[str, Any]] | None = None
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Compact every registered tool's description and schemas in place. Returns each tool's full
    input and output schemas (every field, typed; `documented_inputs` for arguments whose schema
    `tools/list` leaves generic), which `tools/list` no longer carries: for docs/reference.md and
    SDK generators, which have the server object at hand."""
    inputs: dict[str, dict[str, Any]] = {}
    full: dict[str, dict[str, Any]] = {}
    for tool in mcp._tool_manager.list_tools():
        tool.description = " ".join(tool.description.split())  # docstring indentation is not content
        if tool.annotations is not None and tool.annotations.idempotent_hint is False:
            tool.annotations.idempotent_hint = None  # false is the default: saying it costs bytes
        original = tool.parameters.get("properties", {})
        tool.parameters = compact_schema(tool.parameters)
        # A top-level text argument keeps its maxLength: clients see it, and the server and the HTTP layer
        # refuse a longer value before validating anything else (server/body_limits.py). Names and ids
        # (<= 200 characters) stay terse: their limits are enforced all the same.
        for name, schema in tool.parameters.get("properties", {}).items():
            found = [o["maxLength"] for o in (original[name], *original[name].get("anyOf", ())) if "maxLength" in o]
            if found and min(found) > TERSE_LENGTH:
                schema["maxLength"] = min(found)
        documented = (documented_inputs or {}).get(tool.name)
        inputs[tool.name] = compact_schema(documented) if documented is not None else tool.parameters
        output = tool.output_schema
        if output is not None:
            full[tool.name] = compact_schema(output, output=True, outline=False)
            compacted = compact_schema(output, output=True)
            output.clear()
            output.update(compacted)
    return inputs, full

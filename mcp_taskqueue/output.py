"""How the CLI shows results: rich tables for people, exact JSON or YAML for scripts.

JSON is the model's full `model_dump(mode="json")` (nulls included, so a script can rely
on every key); YAML is the same data through a small emitter (no extra dependency).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import click
from pydantic import BaseModel
from rich.console import Console, Group, RenderableType
from rich.table import Table

FORMATS = ("table", "json", "yaml")

STATUS_STYLE = {
    "pending": "yellow",
    "ready": "cyan",
    "running": "blue",
    "completed": "green",
    "failed": "red",
    "cancelled": "dim",
}


def to_data(value: Any) -> Any:
    """Models (and lists of them) -> plain JSON-compatible data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [to_data(v) for v in value]
    if isinstance(value, dict):
        return {k: to_data(v) for k, v in value.items()}
    return value


def render(value: Any, fmt: str, *, title: str | None = None) -> None:
    """Print `value` to stdout in the chosen format."""
    data = to_data(value)
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    elif fmt == "yaml":
        click.echo(to_yaml(data), nl=False)
    else:
        console = Console(soft_wrap=False)
        console.print(table_for(data, title=title))


# --- tables --------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False) if value else ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _status(value: Any) -> str:
    style = STATUS_STYLE.get(str(value))
    return f"[{style}]{value}[/]" if style else _cell(value)


def rows_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column, no_wrap=column in ("id", "status"), overflow="fold")
    for row in rows:
        table.add_row(*[_status(row.get(c)) if c == "status" else _cell(row.get(c)) for c in columns])
    return table


def record_table(data: dict[str, Any], title: str | None = None) -> Table:
    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in data.items():
        if value is None or value == [] or value == {}:
            continue
        table.add_row(key, _status(value) if key == "status" else _cell(value))
    return table


TASK_COLUMNS = ("id", "status", "priority", "project", "kind", "title", "worker")


def table_for(data: Any, title: str | None = None) -> RenderableType:
    """Pick a layout from the shape of the data."""
    if isinstance(data, dict):
        if isinstance(data.get("tasks"), list) and set(data) <= {"tasks", "next_cursor", "refs"}:
            rows = data["tasks"]
            columns = [c for c in TASK_COLUMNS if any(c in r for r in rows)] or list(TASK_COLUMNS)
            caption = f"next cursor: {data['next_cursor']}" if data.get("next_cursor") else None
            table = rows_table(rows, columns, title)
            table.caption = caption
            return table
        if isinstance(data.get("projects"), list):
            rows = [
                {
                    "name": p["name"],
                    "description": p.get("description"),
                    "tasks": sum((p.get("task_counts") or {}).values()),
                    "counts": ", ".join(f"{k} {v}" for k, v in (p.get("task_counts") or {}).items() if v),
                }
                for p in data["projects"]
            ]
            return rows_table(rows, ("name", "tasks", "counts", "description"), title)
        if "critical_path" in data and isinstance(data.get("tasks"), list):
            # A workflow: its derived state, then its tasks.
            head = record_table({k: v for k, v in data.items() if k not in ("tasks", "refs")}, title)
            tasks = rows_table(data["tasks"], ("id", "status", "priority", "title", "depends_on", "worker"), "tasks")
            return Group(head, tasks)
        if isinstance(data.get("workflows"), list):
            rows = data["workflows"]
            columns = [c for c in ("id", "name", "project", "status", "progress", "total") if any(c in r for r in rows)]
            return rows_table(rows, columns or ["id"], title)
        if "task" in data and set(data) <= {"task", "lease_expires_at"}:
            if data["task"] is None:
                table = Table(show_header=False, box=None)
                table.add_column("")
                table.add_row("nothing ready to claim")
                return table
            return record_table(data["task"], title)
        if "events" in data and isinstance(data["events"], list):
            rows = [{**e, "change": _change(e)} for e in data["events"]]
            return rows_table(rows, ("seq", "at", "actor", "action", "change"), title)
        return record_table(data, title)
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        columns = list(dict.fromkeys(k for r in data for k in r))
        return rows_table(data, columns, title)
    return record_table({"value": data}, title)


def _change(event: dict[str, Any]) -> str:
    old, new = event.get("old"), event.get("new")
    if old is None:
        return _cell(new)
    return f"{_cell(old)} -> {_cell(new)}"


# --- a small YAML emitter ------------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./@+-]*( [A-Za-z0-9_./@+-]+)*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "~", "y", "n"}


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _RESERVED:
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(data: Any, indent: int = 0) -> str:
    """Block-style YAML for JSON data (dicts, lists, scalars)."""
    pad = "  " * indent
    if isinstance(data, dict):
        if not data:
            return pad + "{}\n"
        out = []
        for key, value in data.items():
            if isinstance(value, (dict, list)) and value:
                out.append(f"{pad}{_scalar(str(key))}:\n{to_yaml(value, indent + 1)}")
            else:
                out.append(f"{pad}{_scalar(str(key))}: {_inline(value)}\n")
        return "".join(out)
    if isinstance(data, list):
        if not data:
            return pad + "[]\n"
        out = []
        for item in data:
            if isinstance(item, (dict, list)) and item:
                body = to_yaml(item, indent + 1)
                out.append(f"{pad}- {body[len(pad) + 2 :]}")
            else:
                out.append(f"{pad}- {_inline(item)}\n")
        return "".join(out)
    return pad + _scalar(data) + "\n"


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)

"""The CLI's habits: global options anywhere, positional files, and options that are real tool arguments.

The option -> tool-argument check reads the live tool schemas from the server, so a CLI option
the tool would refuse (as `workflow list --status` once was) fails here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from mcp_taskqueue import cli as cli_module
from mcp_taskqueue.cli import EXTERNAL_COMMANDS, GLOBAL_OPTIONS, main
from mcp_taskqueue.server.app import build_server
from tests.servers import http_server, server_env


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin)


def ok_json(*args: str) -> Any:
    result = run(*args)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return json.loads(result.stdout)


def walk(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command under `command` (resolved through the root, as a user's invocation would)."""
    found = [(path, command)]
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, name
            found += walk(sub, (*path, name))
    return found


def test_global_options_before_or_after_the_subcommand(tmp_path: Path) -> None:
    db = str(tmp_path / "a.db")
    created = ok_json("task", "add", "after", "--db", db, "--format", "json")
    assert created["title"] == "after"
    # Before, after, and on the intermediate group: all the same store and format.
    for args in (
        ("--db", db, "--format", "json", "task", "list"),
        ("task", "list", "--format", "json", "--db", db),
        ("task", "--db", db, "list", "--format", "json"),
        ("--format", "yaml", "task", "list", "--db", db, "--format", "json"),  # the later one wins
    ):
        assert [t["id"] for t in ok_json(*args)["tasks"]] == [created["id"]], args
    yaml_out = run("task", "list", "--db", db, "--format", "yaml")
    assert yaml_out.exit_code == 0 and yaml_out.stdout.startswith("tasks:\n")
    # A bad value after the subcommand is refused like one before it.
    bad = run("task", "list", "--format", "xml", "--db", db)
    assert bad.exit_code == 2 and "xml" in bad.stderr and bad.stderr.count("\n") == 1
    # Nothing leaked into the default store: the other database is empty.
    assert ok_json("task", "list", "--db", str(tmp_path / "b.db"), "--format", "json")["tasks"] == []


def test_every_command_takes_every_global_option() -> None:
    names = {opt for option in GLOBAL_OPTIONS.values() for opt in option.decls if opt.startswith("--")}
    assert names == {"--db", "--url", "--format", "--config", "--profile"}
    for path, command in walk(main):
        opts = {opt for param in command.params for opt in getattr(param, "opts", [])}
        assert names <= opts, (path, names - opts)


def test_url_after_the_subcommand(tmp_path: Path) -> None:
    db = tmp_path / "served.db"
    with http_server(db) as base:
        created = ok_json("task", "add", "remote", "--url", base + "/mcp", "--format", "json")
        listed = ok_json("task", "list", "--status", "ready", "--format", "json", "--url", base + "/mcp")
    assert [t["id"] for t in listed["tasks"]] == [created["id"]]


@pytest.mark.anyio
async def test_serve_takes_db_after_the_subcommand(tmp_path: Path) -> None:
    """Client configs write `"args": ["serve", "--db", "..."]`: the server must start on that file."""
    db = tmp_path / "configured.db"
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_taskqueue.cli", "serve", "--db", str(db), "--toolsets", "tasks"],
        env=server_env(),
    )
    async with Client(params) as client:
        result = await client.call_tool("create_task", {"title": "via args"})
        assert not result.is_error
    async with Client(build_server(db)) as local:  # the same file, opened directly
        listed = await local.call_tool("list_tasks", {})
    assert [t["title"] for t in listed.structured_content["tasks"]] == ["via args"]  # type: ignore[index]


def test_file_arguments_are_positional_for_export_import_backup_restore(tmp_path: Path) -> None:
    db, copy = str(tmp_path / "src.db"), str(tmp_path / "copy.db")
    ok_json("task", "add", "carried", "--db", db, "--format", "json")
    dump, backup = str(tmp_path / "dump.jsonl"), str(tmp_path / "snap.db")
    assert ok_json("export", dump, "--db", db, "--format", "json")["tasks"] == 1
    assert ok_json("import", dump, "--db", copy, "--format", "json")["tasks"] == 1
    assert ok_json("backup", backup, "--db", db, "--format", "json")["backup"] == backup
    ok_json("task", "add", "after the backup", "--db", db, "--format", "json")
    assert ok_json("restore", backup, "--yes", "--db", db, "--format", "json")["integrity_check"] == "ok"
    titles = [t["title"] for t in ok_json("task", "list", "--db", db, "--format", "json")["tasks"]]
    assert titles == ["carried"]
    assert [t["title"] for t in ok_json("task", "list", "--db", copy, "--format", "json")["tasks"]] == ["carried"]
    # Export to stdout when no file is given; the older -o spelling still works.
    streamed = run("export", "--db", db)
    assert streamed.exit_code == 0
    assert [json.loads(line)["type"] for line in streamed.stdout.splitlines()][:3] == ["header", "project", "task"]
    assert ok_json("export", "-o", str(tmp_path / "o.jsonl"), "--db", db, "--format", "json")["tasks"] == 1
    for command in ("export", "import", "backup", "restore"):
        params = main.commands[command].params
        assert isinstance(params[0], click.Argument), command  # FILE first, positional, in all four


def test_workflow_list_status_filter(tmp_path: Path) -> None:
    db = str(tmp_path / "w.db")
    spec = tmp_path / "spec.json"
    ids = []
    for name in ("one", "two", "three"):
        spec.write_text(json.dumps({"name": name, "tasks": [{"ref": "a", "title": "A"}]}))
        ids.append(ok_json("workflow", "create", str(spec), "--db", db, "--format", "json")["id"])
    claimed = ok_json("task", "claim", "--worker", "w", "--db", db, "--format", "json")["task"]
    running = ok_json("workflow", "list", "--status", "running", "--db", db, "--format", "json")["workflows"]
    assert [w["id"] for w in running] == [claimed["workflow_id"]]
    pending = ok_json("workflow", "list", "--status", "pending", "--limit", "1", "--db", db, "--format", "json")
    assert len(pending["workflows"]) == 1 and pending["next_cursor"]
    rest = ok_json(
        "workflow", "list", "--status", "pending", "--cursor", pending["next_cursor"], "--db", db, "--format", "json"
    )
    assert {pending["workflows"][0]["id"], *(w["id"] for w in rest["workflows"])} == set(ids) - {claimed["workflow_id"]}
    assert rest["next_cursor"] is None
    assert ok_json("workflow", "list", "--status", "failed", "--db", db, "--format", "json")["workflows"] == []
    bad = run("workflow", "list", "--status", "runing", "--db", db)
    assert bad.exit_code == 2 and "runing" in bad.stderr


@pytest.mark.anyio
async def test_cli_options_are_tool_arguments(tmp_path: Path) -> None:
    """Each command marked with maps_to_tool: every option/argument is an argument of that tool
    (by name or its declared rename), and every choice list is within the tool's enum."""
    async with Client(build_server(tmp_path / "s.db", toolsets="all")) as client:
        schemas = {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}
    global_names = set(GLOBAL_OPTIONS)
    checked = 0
    for path, command in walk(main):
        tool = getattr(command, "tool", None)
        if tool is None:
            continue
        assert tool in schemas, (path, tool)
        properties = schemas[tool].get("properties", {})
        for param in command.params:
            if param.name in global_names or param.name in command.tool_cli_only or not param.expose_value:  # type: ignore[attr-defined]
                continue
            if param.name == "help":
                continue
            argument = command.tool_renamed.get(param.name, param.name)  # type: ignore[attr-defined]
            assert argument in properties, f"{' '.join(path)}: {param.name} is not an argument of {tool}"
            if isinstance(param.type, click.Choice):
                allowed = enum_of(properties[argument])
                assert allowed is not None and set(param.type.choices) <= allowed, (path, param.name, allowed)
            checked += 1
    assert checked >= 40


def enum_of(schema: dict[str, Any]) -> set[Any] | None:
    if "enum" in schema:
        return set(schema["enum"])
    for branch in schema.get("anyOf", []):
        if "enum" in branch:
            return set(branch["enum"])
    return None


@click.group("hello")
def hello_group() -> None:
    """A group that lives in another module."""


@hello_group.command("world")
@click.pass_context
def hello_world(ctx: click.Context) -> None:
    """Print where the global options point."""
    options = cli_module.root_options(ctx)
    cli_module.show(ctx, {k: options[k] for k in ("db", "config", "profile")})


def test_a_group_registered_with_one_line_gets_the_global_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(EXTERNAL_COMMANDS, "hello", f"{__name__}:hello_group")
    assert "hello" in run("--help").stdout
    expected = {"db": "x.db", "config": "c.toml", "profile": "p"}
    assert (
        ok_json("hello", "world", "--db", "x.db", "--config", "c.toml", "--profile", "p", "--format", "json")
        == expected
    )
    assert (
        ok_json("--config", "c.toml", "--profile", "p", "hello", "world", "--db", "x.db", "--format", "json")
        == expected
    )
    assert (
        ok_json("hello", "--profile", "p", "world", "--format", "json", "--config", "c.toml", "--db", "x.db")
        == expected
    )

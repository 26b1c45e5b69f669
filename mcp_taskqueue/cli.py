"""The `mcp-taskqueue` command: a thin click layer over the queue and the server.

Every queue command goes through one path, `TaskQueueClient`: with `--db` it talks to an
in-memory MCP server over that file, with `--url` to a running server, so local and remote
behave the same. Export, import, backup and restore work on the local file (store/archive.py).
Results print as tables for people or exact JSON/YAML for scripts (`--format`); errors are
one line on stderr with an exit code per kind of error (see docs/cli.md).

Adding a command or group (token, config, notify, top, ...): write it in its own module as a
plain click command/group and add ONE line to `EXTERNAL_COMMANDS` below ("name": "module:attr").
It is imported only when used (so it may import `with_client`, `show`, `CommandError` from here).
The global options (GLOBAL_OPTIONS: --db, --url, --format, --config, --profile) are added to
every command automatically, so they work before or after the subcommand; read them with
`root_options(ctx)` (a dict with those keys), never declare them again.
A command that calls a tool declares it with `maps_to_tool(...)`: tests/test_cli_surface.py
checks each of its options against that tool's live input schema.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from mcp_taskqueue import __version__
from mcp_taskqueue.errors import TaskQueueError
from mcp_taskqueue.models import WORKFLOW_STATUSES, Priority, Status, invalid_text
from mcp_taskqueue.output import FORMATS, render
from mcp_taskqueue.store import default_db_path

T = TypeVar("T")
FC = TypeVar("FC", bound=Callable[..., Any])
CommandT = TypeVar("CommandT", bound=click.Command)

# Exit codes by error kind: scripts can tell "no such task" from "someone else has it".
EXIT_CODES = {
    "error": 1,
    "tool_failed": 1,
    "validation_failed": 2,
    "usage": 2,
    "not_found": 3,
    "conflict": 4,
    "invalid_transition": 4,
    "lease_lost": 4,
    "store_busy": 5,
    "store_full": 5,
    "store_lost": 8,
    "store_unavailable": 8,
    "startup": 9,
    "transport": 6,
    "unknown_tool": 7,
    "forbidden": 8,
    "rate_limited": 9,
}
PRIORITIES = tuple(p.value for p in Priority)
STATUSES = tuple(s.value for s in Status)


class CommandError(click.ClickException):
    """A failure we explain in one line, with the exit code of its kind."""

    def __init__(self, message: str, code: str = "error") -> None:
        super().__init__(message)
        self.exit_code = EXIT_CODES.get(code, 1)  # type: ignore[misc]


# Command groups that live in their own modules, imported on first use: "name": "module:attribute".
EXTERNAL_COMMANDS: dict[str, str] = {
    "notify": "mcp_taskqueue.notify_cli:notify",
    "top": "mcp_taskqueue.top:top",
    "token": "mcp_taskqueue.cli_service:token_group",
    "config": "mcp_taskqueue.cli_service:config_group",
}


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A global option given after the subcommand overrides the one given before it."""
    if value is not None and param.name is not None:
        root = ctx.find_root()
        if root.obj is None:
            root.obj = {}
        root.obj[param.name] = value
    return value


@dataclass(frozen=True)
class GlobalOption:
    """A global option: the root's copy has defaults and env vars; late copies only record a value."""

    decls: tuple[str, ...]
    attrs: dict[str, Any]

    def at_root(self) -> Callable[[FC], FC]:
        return click.option(*self.decls, **self.attrs)

    def late(self) -> click.Option:
        kept = {k: v for k, v in self.attrs.items() if k in ("type", "help", "metavar")}
        return click.Option(list(self.decls), expose_value=False, callback=_remember, hidden=True, **kept)


def _global_option(*decls: str, **attrs: Any) -> GlobalOption:
    return GlobalOption(decls, attrs)


GLOBAL_OPTIONS = {
    "db": _global_option(
        "--db",
        type=click.Path(dir_okay=False),
        envvar="TASKQUEUE_DB",
        help="SQLite file or postgresql://user@host/db URL [default: $TASKQUEUE_DB, else ~/.local/share/mcp-taskqueue/tasks.db].",
    ),
    "url": _global_option(
        "--url",
        envvar="TASKQUEUE_URL",
        help="Act on a running server over MCP (e.g. http://127.0.0.1:8765/mcp) instead of the local file.",
    ),
    "format": _global_option(
        "--format",
        "format",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        envvar="TASKQUEUE_FORMAT",
        help="table for people; json or yaml for scripts.",
    ),
    "config": _global_option(
        "--config",
        type=click.Path(dir_okay=False),
        envvar="TASKQUEUE_CONFIG",
        help="Settings file (mcp-taskqueue.toml) [default: $TASKQUEUE_CONFIG].",
    ),
    "profile": _global_option(
        "--profile", envvar="TASKQUEUE_PROFILE", help="Profile within the settings file [$TASKQUEUE_PROFILE]."
    ),
}


def add_global_options(command: click.Command) -> click.Command:
    """Give `command` and everything under it late copies of the global options (idempotent)."""
    if not getattr(command, "_has_global_options", False):
        taken = {opt for p in command.params for opt in getattr(p, "opts", [])}
        for global_option in GLOBAL_OPTIONS.values():
            option = global_option.late()
            if not taken & set(option.opts):  # a command's own option of that name wins
                command.params.append(option)
        command._has_global_options = True  # type: ignore[attr-defined]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_global_options(sub)
    return command


def root_options(ctx: click.Context) -> dict[str, Any]:
    """The global options wherever they were given: db, url, format, config, profile."""
    return ctx.find_root().obj  # type: ignore[no-any-return]


class RootGroup(click.Group):
    """The root command: global options anywhere, external groups imported on first use, and
    errors as one `error: ...` line on stderr instead of a usage block."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *EXTERNAL_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in EXTERNAL_COMMANDS:
            module, _, attr = EXTERNAL_COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
        return None if command is None else add_global_options(command)

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        argv = list(args[0]) if args and args[0] is not None else sys.argv[1:]
        bad = next((index for index, arg in enumerate(argv, 1) if invalid_text(arg) is not None), None)
        if bad is not None:  # bytes that are not UTF-8 reach us as lone surrogates; they cannot be stored
            click.echo(f"error: validation_failed: argument {bad} is not valid UTF-8 text", err=True)
            sys.exit(EXIT_CODES["validation_failed"])
        try:
            rv = super().main(*args, **kwargs)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"error: {_one_line(exc.format_message())}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {_one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _root_options(fn: FC) -> FC:
    for global_option in reversed(GLOBAL_OPTIONS.values()):
        fn = global_option.at_root()(fn)
    return fn


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mcp-taskqueue")
@_root_options
@click.pass_context
def main(ctx: click.Context, /, **options: Any) -> None:
    """A durable task queue and workflow orchestrator for AI agents, served over MCP.

    Global options (--db, --url, --format, --config, --profile) go before or after the command."""
    obj = ctx.ensure_object(dict)
    for name, value in options.items():
        obj.setdefault(name, value)


# --- tools behind commands: each command's options are checked against its tool's schema ---------


def maps_to_tool(
    tool: str, *, cli_only: tuple[str, ...] = (), renamed: dict[str, str] | None = None
) -> Callable[[CommandT], CommandT]:
    """Mark a command as a front for `tool`: every option is a tool argument of the same name (or
    `renamed[option]`), except `cli_only` ones. tests/test_cli_surface.py holds commands to it."""

    def mark(command: CommandT) -> CommandT:
        command.tool = tool  # type: ignore[attr-defined]
        command.tool_cli_only = cli_only  # type: ignore[attr-defined]
        command.tool_renamed = renamed or {}  # type: ignore[attr-defined]
        return command

    return mark


@main.command()
@click.option("--transport", type=click.Choice(["stdio", "http", "sse"]), help="[default: stdio, or the config's]")
@click.option("--host", help="[default: 127.0.0.1]")
@click.option("--port", type=click.IntRange(0, 65535), help="0 picks a free port (see the banner) [default: 8765]")
@click.option(
    "--toolsets",
    default=None,
    help="Comma-separated tool groups to expose, e.g. tasks,queue [default: all].",
)
@click.option("--auth", type=click.Choice(["auto", "none", "tokens", "oauth"]), help="[default: auto]")
@click.option("--no-auth", is_flag=True, help="Allow a non-loopback address without authentication.")
@click.option(
    "--allowed-hosts", help="Comma-separated Host names (host or host:port) accepted besides loopback and --host."
)
@click.option("--allowed-origins", help="Comma-separated Origins (e.g. https://app.example) accepted besides loopback.")
@click.option("--log-level", help="INFO logs every request [default: INFO over http/sse, WARNING on stdio]")
@click.option("--log-format", type=click.Choice(["json", "text"]), help="[default: json unless stderr is a terminal]")
@click.option("--log-file", help="Write logs here (rotated) instead of stderr.")
@click.option(
    "--store-timeout",
    type=click.FloatRange(min=0.01),
    envvar="TASKQUEUE_STORE_TIMEOUT",
    help="Seconds one store call may wait for locks before store_busy [default: 5].",
)
@click.option("--max-sessions", type=click.IntRange(1), default=1000, show_default=True, help="Open HTTP sessions.")
@click.option("--sessions-per-peer", type=click.IntRange(1), default=100, show_default=True, help="Per client address.")
@click.option(
    "--session-idle-timeout",
    type=click.FloatRange(min=1),
    default=300,
    show_default=True,
    help="Seconds without a request before an HTTP session is closed.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    /,
    no_auth: bool,
    toolsets: str | None,
    store_timeout: float | None,
    max_sessions: int,
    sessions_per_peer: int,
    session_idle_timeout: float,
    **flags: Any,
) -> None:
    """Serve the queue over MCP (stdio for IDEs and desktop clients; http for many agents).

    Settings come from --config/--profile, TASKQUEUE_* and these options (docs/deployment.md).
    A non-loopback --host needs tokens (mcp-taskqueue token create) or OAuth, or --no-auth."""
    from mcp_taskqueue.cli_service import serve as run
    from mcp_taskqueue.server.transports import HttpLimits

    keys = {
        "log_level": "logging.level",
        "log_format": "logging.format",
        "log_file": "logging.file",
        "auth": "auth.mode",
    }
    given = {keys.get(k, f"server.{k}"): v for k, v in flags.items()}
    given["server.toolsets"] = toolsets.split(",") if toolsets else None
    for name in ("allowed_hosts", "allowed_origins"):  # comma-separated on the command line, lists in settings
        value = given.pop(f"server.{name}")
        if value is not None:
            given[f"server.{name}"] = [part.strip() for part in value.split(",") if part.strip()]
    limits = HttpLimits(max_sessions, session_idle_timeout, sessions_per_peer)
    run(ctx, no_auth, store_timeout, limits, **given)


# --- the one path: a TaskQueueClient on the local file or the --url server ------------------------


def with_client(ctx: click.Context, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Open a client on `--url` or `--db`, run `fn(client)`, and turn our errors into exit codes."""
    import anyio

    from mcp_taskqueue.client import TaskQueueClient

    obj = root_options(ctx)
    target = obj["url"] or obj["db"]

    async def run() -> T:
        # A few quick retries: a person or a script waiting on a dead URL wants to hear about it soon.
        async with TaskQueueClient(target, retries=3, backoff=0.2) as client:
            return await fn(client)

    try:
        return anyio.run(run)
    except TaskQueueError as exc:
        raise CommandError(f"{exc.code}: {_one_line(str(exc))}", exc.code) from None


def show(ctx: click.Context, value: Any, title: str | None = None) -> None:
    render(value, root_options(ctx)["format"], title=title)


def parse_json(value: str | None, what: str) -> Any:
    """A JSON argument, inline or `@path` to read it from a file."""
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"cannot read {value[1:]}: {exc.strerror}", param_hint=what) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc.msg} at position {exc.pos})", param_hint=what) from None


def local_store(ctx: click.Context, action: str, must_exist: bool = False) -> Any:
    """The local database for file-level work, refusing --url (a server's file is its own business)."""
    obj = root_options(ctx)
    if obj["url"]:
        raise CommandError(f"{action} works on a local database file; use --db instead of --url", "usage")
    from mcp_taskqueue.store import is_postgres_url, open_store

    path = Path(obj["db"]).expanduser() if obj["db"] else default_db_path()
    if must_exist and not is_postgres_url(obj["db"]) and not path.exists():
        raise CommandError(f"not_found: there is no database at {path} to {action}", "not_found")

    try:
        return open_store(obj["db"])
    except TaskQueueError as exc:
        raise CommandError(f"{exc.code}: {exc}", exc.code) from None


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr (only on a terminal: pipes and logs stay clean)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=max(total, done))

        yield update


# --- task ---------------------------------------------------------------------------------------


@main.group()
def task() -> None:
    """Create, inspect and move tasks."""


@maps_to_tool("create_task")
@task.command("add")
@click.argument("title")
@click.option("--project", "-p", help="[default: default; with --url and a token limited to one project: that project]")
@click.option("--description", "-d", default="")
@click.option("--kind", "-k", default="task", show_default=True)
@click.option("--priority", type=click.Choice(PRIORITIES), default="medium", show_default=True)
@click.option("--payload", help="JSON object for the worker, or @file.json.")
@click.option("--tag", "tags", multiple=True, help="Repeatable.")
@click.option("--depends-on", "depends_on", multiple=True, help="Task id that must complete first (repeatable).")
@click.option("--parent", "parent_id")
@click.option("--criterion", "acceptance_criteria", multiple=True, help="Acceptance criterion (repeatable).")
@click.option("--run-at", help="ISO-8601 time before which the task is not claimable.")
@click.option("--max-attempts", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option("--timeout", "timeout_seconds", type=click.IntRange(1), help="Default lease seconds per attempt.")
@click.option("--idempotency-key", help="Repeat calls with the same key return the first task.")
@click.pass_context
def task_add(ctx: click.Context, /, title: str, payload: str | None, **fields: Any) -> None:
    """Create a task."""
    args = {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()}
    args = {k: v for k, v in args.items() if v not in (None, [])}
    parsed = parse_json(payload, "--payload")
    if parsed is not None:
        args["payload"] = parsed
    show(ctx, with_client(ctx, lambda tq: tq.create_task(title, **args)))


@maps_to_tool("list_tasks", cli_only=("all_pages",))
@task.command("list")
@click.option("--project", "-p")
@click.option("--status", "-s", type=click.Choice(STATUSES))
@click.option("--kind", "-k")
@click.option("--tag")
@click.option("--worker")
@click.option("--workflow", "workflow_id")
@click.option("--query", "-q", help="Full-text words in title/description.")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@click.option("--cursor", help="next_cursor of the previous page.")
@click.option("--all", "all_pages", is_flag=True, help="Follow cursors and list every match.")
@click.pass_context
def task_list(ctx: click.Context, /, all_pages: bool, **filters: Any) -> None:
    """List tasks in claim order (priority, then age)."""
    from mcp_taskqueue.models import TaskPage

    filters = {k: v for k, v in filters.items() if v is not None}

    async def run(tq: Any) -> TaskPage:
        if not all_pages:
            page: TaskPage = await tq.list_tasks(**filters)
            return page
        return TaskPage(tasks=[summary async for summary in tq.iter_tasks(**filters)])

    show(ctx, with_client(ctx, run))


@maps_to_tool("get_task", cli_only=("history",))
@task.command("show")
@click.argument("task_id")
@click.option("--history", is_flag=True, help="Also show the task's history.")
@click.pass_context
def task_show(ctx: click.Context, task_id: str, history: bool) -> None:
    """Everything about one task."""

    async def run(tq: Any) -> Any:
        found = await tq.get_task(task_id)
        return (found, await tq.task_history(task_id)) if history else (found, None)

    found, events = with_client(ctx, run)
    if events is None:
        show(ctx, found)
    elif root_options(ctx)["format"] == "table":
        show(ctx, found)
        show(ctx, events, title="history")
    else:
        show(ctx, {"task": found, "history": events.events})


@maps_to_tool("claim_task")
@task.command("claim")
@click.option("--worker", "-w", required=True, help="Your stable worker name.")
@click.option("--project", "-p")
@click.option("--kind", "kinds", multiple=True, help="Only these kinds (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Only tasks with any of these tags (repeatable).")
@click.option("--lease", "lease_seconds", type=click.IntRange(1, 86400), help="Lease seconds (default 300).")
@click.pass_context
def task_claim(
    ctx: click.Context,
    worker: str,
    project: str | None,
    kinds: tuple[str, ...],
    tags: tuple[str, ...],
    lease_seconds: int | None,
) -> None:
    """Lease the next ready task (prints `task: null` when nothing is ready)."""
    result = with_client(
        ctx, lambda tq: tq.claim_task(worker, project=project, kinds=kinds, tags=tags, lease_seconds=lease_seconds)
    )
    show(ctx, result)


@maps_to_tool("complete_task")
@task.command("complete")
@click.argument("task_id")
@click.option("--worker", "-w", required=True)
@click.option("--lease-id", "lease_id", required=True, help="The lease_id claim printed.")
@click.option("--result", help="JSON result, or @file.json.")
@click.pass_context
def task_complete(ctx: click.Context, task_id: str, worker: str, lease_id: str, result: str | None) -> None:
    """Complete a task you hold."""
    value = parse_json(result, "--result")
    show(ctx, with_client(ctx, lambda tq: tq.complete_task(task_id, worker, value, lease_id=lease_id)))


@maps_to_tool("fail_task", renamed={"permanent": "retryable"})
@task.command("fail")
@click.argument("task_id")
@click.option("--worker", "-w", required=True)
@click.option("--lease-id", "lease_id", required=True, help="The lease_id claim printed.")
@click.option("--error", "-e", "error", required=True, help="What went wrong.")
@click.option("--permanent", is_flag=True, help="Do not retry, even with attempts left.")
@click.pass_context
def task_fail(ctx: click.Context, task_id: str, worker: str, lease_id: str, error: str, permanent: bool) -> None:
    """Report a failed attempt on a task you hold."""
    show(
        ctx,
        with_client(ctx, lambda tq: tq.fail_task(task_id, worker, error, retryable=not permanent, lease_id=lease_id)),
    )


@maps_to_tool("release_task", renamed={"delay": "delay_seconds"})
@task.command("release")
@click.argument("task_id")
@click.option("--worker", "-w", required=True)
@click.option("--lease-id", "lease_id", required=True, help="The lease_id claim printed.")
@click.option("--delay", type=click.FloatRange(0, 86400), default=0.0)
@click.pass_context
def task_release(ctx: click.Context, task_id: str, worker: str, lease_id: str, delay: float) -> None:
    """Give a task you hold back, unfinished."""
    show(ctx, with_client(ctx, lambda tq: tq.release_task(task_id, worker, delay, lease_id=lease_id)))


@maps_to_tool("cancel_task")
@task.command("cancel")
@click.argument("task_id")
@click.option("--reason")
@click.pass_context
def task_cancel(ctx: click.Context, task_id: str, reason: str | None) -> None:
    """Cancel an unfinished task."""
    show(ctx, with_client(ctx, lambda tq: tq.cancel_task(task_id, reason)))


@maps_to_tool("retry_task")
@task.command("retry")
@click.argument("task_id")
@click.pass_context
def task_retry(ctx: click.Context, task_id: str) -> None:
    """Re-queue a failed or cancelled task with fresh attempts."""
    show(ctx, with_client(ctx, lambda tq: tq.retry_task(task_id)))


CLEARABLE = ("description", "payload", "tags", "acceptance_criteria", "run_at", "timeout_seconds")


@maps_to_tool("update_task", cli_only=("clear",))
@task.command("update")
@click.argument("task_id")
@click.option("--title")
@click.option("--description", "-d")
@click.option("--kind", "-k")
@click.option("--priority", type=click.Choice(PRIORITIES))
@click.option("--payload", help="JSON object for the worker, or @file.json.")
@click.option("--tag", "tags", multiple=True, help="Replaces the tags (repeatable).")
@click.option("--criterion", "acceptance_criteria", multiple=True, help="Replaces the criteria (repeatable).")
@click.option("--run-at", help="ISO-8601 time before which the task is not claimable.")
@click.option("--max-attempts", type=click.IntRange(1, 100))
@click.option("--timeout", "timeout_seconds", type=click.IntRange(1), help="Default lease seconds per attempt.")
@click.option("--expected-version", type=int, help="Refuse if the task changed since you read it.")
@click.option("--clear", multiple=True, type=click.Choice(CLEARABLE), help="Clear this field (repeatable).")
@click.pass_context
def task_update(
    ctx: click.Context, /, task_id: str, payload: str | None, clear: tuple[str, ...], **fields: Any
) -> None:
    """Change a task's descriptive fields: only those given; --clear FIELD empties one (as null does over MCP)."""
    expected = fields.pop("expected_version")
    args = {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()}
    args = {k: v for k, v in args.items() if v not in (None, [])}
    parsed = parse_json(payload, "--payload")
    if parsed is not None:
        args["payload"] = parsed
    args.update({name: None for name in clear})
    show(ctx, with_client(ctx, lambda tq: tq.update_task(task_id, expected, **args)))


@maps_to_tool("add_note")
@task.command("note")
@click.argument("task_id")
@click.argument("text")
@click.pass_context
def task_note(ctx: click.Context, task_id: str, text: str) -> None:
    """Append a note to a task's history."""
    show(ctx, with_client(ctx, lambda tq: tq.add_note(task_id, text)))


# --- workflow (through the spec'd workflow tools) --------------------------------------------------


@main.group()
def workflow() -> None:
    """Create and inspect workflows (dependency graphs of tasks)."""


def parse_args(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`key=value` pairs; a value that parses as JSON is taken as JSON, else as text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="--param")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@maps_to_tool("create_workflow", renamed={"pairs": "parameters"})
@workflow.command("create")
@click.argument("spec", required=False, type=click.File("r", encoding="utf-8"))
@click.option("--template", "-t", help="Create from this template instead of a SPEC file.")
@click.option(
    "--param", "pairs", multiple=True, help="Template parameter as key=value (JSON values allowed; repeatable)."
)
@click.pass_context
def workflow_create(ctx: click.Context, spec: Any, template: str | None, pairs: tuple[str, ...]) -> None:
    """Create a workflow from SPEC, a JSON file (- for stdin) with name, project and tasks whose
    depends_on name other tasks' refs; or from --template with --param values."""
    if (spec is None) == (template is None):
        raise click.UsageError("give either a SPEC file or --template NAME")
    if spec is not None and pairs:
        raise click.UsageError("--param only applies to --template")
    loaded: Any = None
    if spec is not None:
        try:
            loaded = json.load(spec)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON ({exc.msg}, line {exc.lineno})", param_hint="SPEC") from None
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object (name, project, tasks)", param_hint="SPEC")
    params = parse_args(pairs) if template is not None else None

    async def create(tq: Any) -> Any:
        with progress_bar("creating tasks") as update:

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                update(int(done), int(total or done))

            return await tq.create_workflow(loaded, template=template, parameters=params, progress=on_progress)

    show(ctx, with_client(ctx, create))


@maps_to_tool("get_workflow")
@workflow.command("show")
@click.argument("workflow_id")
@click.pass_context
def workflow_show(ctx: click.Context, workflow_id: str) -> None:
    """A workflow with its derived status and progress."""
    show(ctx, with_client(ctx, lambda tq: tq.get_workflow(workflow_id)))


@maps_to_tool("list_workflows")
@workflow.command("list")
@click.option("--project", "-p")
@click.option("--status", "-s", type=click.Choice(WORKFLOW_STATUSES))
@click.option("--limit", type=click.IntRange(1, 200))
@click.option("--cursor", help="next_cursor of the previous page.")
@click.pass_context
def workflow_list(ctx: click.Context, /, **filters: Any) -> None:
    """List workflows."""
    filters = {k: v for k, v in filters.items() if v is not None}
    show(ctx, with_client(ctx, lambda tq: tq.list_workflows(**filters)))


@maps_to_tool("cancel_workflow")
@workflow.command("cancel")
@click.argument("workflow_id")
@click.option("--reason")
@click.pass_context
def workflow_cancel(ctx: click.Context, workflow_id: str, reason: str | None) -> None:
    """Cancel a workflow's unfinished tasks."""
    show(ctx, with_client(ctx, lambda tq: tq.cancel_workflow(workflow_id, reason)))


# --- project and stats -------------------------------------------------------------------------


@main.group()
def project() -> None:
    """Inspect projects."""


@maps_to_tool("list_projects")
@project.command("list")
@click.pass_context
def project_list(ctx: click.Context) -> None:
    """Every project with its task counts."""
    show(ctx, with_client(ctx, lambda tq: tq.list_projects()))


@project.command("show")
@click.argument("name")
@click.pass_context
def project_show(ctx: click.Context, name: str) -> None:
    """One project: settings and task counts."""
    show(ctx, with_client(ctx, lambda tq: tq.get_project(name)))


@maps_to_tool("queue_stats")
@main.command()
@click.option("--project", "-p")
@click.pass_context
def stats(ctx: click.Context, project: str | None) -> None:
    """Counts by status, ready work by priority, expired leases, blocked tasks."""
    show(ctx, with_client(ctx, lambda tq: tq.queue_stats(project)))


# --- export / import / backup / restore (local file) ----------------------------------------------


@main.command("export")
@click.argument("output", required=False, default="-", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--output", "-o", "output_option", hidden=True, help="Same as the FILE argument (older spelling).")
@click.pass_context
def export_cmd(ctx: click.Context, output: str, output_option: str | None) -> None:
    """Write every project, task, dependency and history event to OUTPUT as JSON Lines (lossless;
    - or nothing for stdout)."""
    output = output_option or output
    from mcp_taskqueue.store.archive import export_jsonl

    store = local_store(ctx, "export", must_exist=True)
    try:
        if output == "-":
            export_jsonl(store, sys.stdout)
            return
        tmp = Path(output + ".partial")
        try:
            with progress_bar("exporting") as update, tmp.open("w", encoding="utf-8") as fh:
                counts = export_jsonl(store, fh, update)
            tmp.replace(output)  # a reader never sees half a file
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CommandError(f"cannot write {output}: {exc.strerror}") from None
        show(ctx, {"output": output, **counts.as_dict()})
    finally:
        store.close()


@main.command("import")
@click.argument("source", type=click.Path(allow_dash=True, dir_okay=False))
@click.pass_context
def import_cmd(ctx: click.Context, source: str) -> None:
    """Load a JSON Lines export (one transaction: all of it or nothing)."""
    from mcp_taskqueue.store.archive import import_jsonl

    try:
        # Streamed, not read whole: import_jsonl reads it line by line (a pipe is spooled to a temp file).
        lines = sys.stdin if source == "-" else Path(source).open(encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise CommandError(f"cannot read {source}: {exc.strerror or exc}") from None
    store = local_store(ctx, "import")
    try:
        with progress_bar("importing") as update:
            counts = import_jsonl(store, lines, update)
    except TaskQueueError as exc:
        raise CommandError(f"{exc.code}: {exc}", exc.code) from None
    except OSError as exc:
        raise CommandError(f"cannot read {source}: {exc.strerror or exc}") from None
    finally:
        store.close()
        if lines is not sys.stdin:
            lines.close()
    show(ctx, {"source": source, **counts.as_dict()})


@main.command("backup")
@click.argument("target", type=click.Path(dir_okay=False))
@click.option("--verify", is_flag=True, help="Re-read the copy: checksum and integrity_check.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.pass_context
def backup_cmd(ctx: click.Context, target: str, verify: bool, force: bool) -> None:
    """Online backup to TARGET (safe while others write), with TARGET.sha256 beside it."""
    from mcp_taskqueue.store.archive import backup, verify_backup

    if Path(target).exists() and not force:
        raise CommandError(f"{target} exists; pass --force to overwrite it", "usage")
    store = local_store(ctx, "backup", must_exist=True)
    try:
        if force:
            Path(target).unlink(missing_ok=True)
        with progress_bar("backing up") as update:
            digest = backup(store, target, update)
        if verify:
            verify_backup(target)
    except TaskQueueError as exc:
        raise CommandError(f"{exc.code}: {exc}", exc.code) from None
    except OSError as exc:
        raise CommandError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        store.close()
    show(ctx, {"backup": target, "sha256": digest, "bytes": Path(target).stat().st_size, "verified": verify})


@main.command("restore")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("--yes", "-y", is_flag=True, help="Do not ask before replacing the database's contents.")
@click.option("--force", is_flag=True, help="Restore even while other processes have the database open.")
@click.pass_context
def restore_cmd(ctx: click.Context, source: str, yes: bool, force: bool) -> None:
    """Replace the database with a backup, after checking its sha256 and integrity_check."""
    from mcp_taskqueue.store.archive import restore, verify_backup

    try:
        verify_backup(source)
    except TaskQueueError as exc:
        raise CommandError(f"{exc.code}: {exc}", exc.code) from None
    obj = root_options(ctx)
    if not yes and not sys.stdin.isatty():
        raise CommandError("restore replaces every task in the database; pass --yes to confirm", "usage")
    if not yes:
        click.confirm(f"Replace every task in {obj['db'] or default_db_path()} with {source}?", abort=True, err=True)
    store = local_store(ctx, "restore")
    try:
        with progress_bar("restoring") as update:
            digest = restore(store, source, update, force=force)
        check = store.integrity_check()
    except TaskQueueError as exc:
        raise CommandError(f"{exc.code}: {exc}", exc.code) from None
    finally:
        store.close()
    show(ctx, {"restored": source, "sha256": digest, "integrity_check": check})


@main.command("check")
@click.pass_context
def check_cmd(ctx: click.Context) -> None:
    """Run SQLite's full integrity_check on the local database (slow on big files; the server never does)."""
    store = local_store(ctx, "check", must_exist=True)
    try:
        result = store.integrity_check()
    finally:
        store.close()
    show(ctx, {"database": store.description, "integrity_check": result})
    if result != "ok":
        raise CommandError(
            f"store_unavailable: {store.description} fails integrity_check; restore the last backup",
            "store_unavailable",
        )


# --- worker and completion --------------------------------------------------------------------


@main.command("worker")
@click.argument("spec")
@click.option("--drain", is_flag=True, help="Exit once nothing is ready, running or pending.")
@click.option("--max-tasks", type=click.IntRange(1), help="Exit after this many tasks.")
@click.option("--log-level", default="INFO", show_default=True)
@click.pass_context
def worker_cmd(ctx: click.Context, spec: str, drain: bool, max_tasks: int | None, log_level: str) -> None:
    """Run the Worker named by SPEC (module:attribute) until SIGINT/SIGTERM."""
    from mcp_taskqueue.worker import load_worker

    logging.basicConfig(stream=sys.stderr, level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    try:
        worker = load_worker(spec)
    except (ImportError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="SPEC") from None
    obj = root_options(ctx)
    try:
        result = worker.run_sync(obj["url"] or obj["db"], stop_when_idle=drain, max_tasks=max_tasks)
    except TaskQueueError as exc:
        raise CommandError(f"{exc.code}: {exc}", exc.code) from None
    show(ctx, {"worker": worker.name, **vars(result)})


@main.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(mcp-taskqueue completion bash)"."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(main, {}, "mcp-taskqueue", "_MCP_TASKQUEUE_COMPLETE").source())


# --- the reference in docs/cli.md is generated from the commands themselves --------------------

REFERENCE_BEGIN = "<!-- BEGIN GENERATED REFERENCE: python -m mcp_taskqueue.cli --update-docs docs/cli.md -->"
REFERENCE_END = "<!-- END GENERATED REFERENCE -->"


def help_reference() -> str:
    """Every command's --help as Markdown, so the docs cannot drift from the code."""
    parts: list[str] = []

    def walk(command: click.Command, ctx: click.Context) -> None:
        parts.append(f"### `{ctx.command_path}`\n\n```text\n{command.get_help(ctx)}\n```\n")
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None:
                    walk(sub, click.Context(sub, info_name=name, parent=ctx))

    root = click.Context(
        main, info_name="mcp-taskqueue", terminal_width=100, max_content_width=100, **main.context_settings
    )
    walk(main, root)
    return "\n".join(parts)


def update_reference(path: str | Path) -> bool:
    """Rewrite the generated part of `path`; True if it changed."""
    doc = Path(path)
    text = doc.read_text(encoding="utf-8")
    head, _, rest = text.partition(REFERENCE_BEGIN)
    _, _, tail = rest.partition(REFERENCE_END)
    new = f"{head}{REFERENCE_BEGIN}\n\n{help_reference()}\n{REFERENCE_END}{tail}"
    if new != text:
        doc.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    if sys.argv[1:2] == ["--update-docs"]:
        sys.exit(1 if update_reference(sys.argv[2]) else 0)
    main()

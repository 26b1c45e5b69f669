"""`mcp-taskqueue notify add|list|remove|test|redeliver`: notifiers from the shell.

add, list, remove and test go through the same client path as every queue command (local file
or `--url`); redeliver works on the local file. Registered in cli.py's EXTERNAL_COMMANDS. Secrets are read from an environment variable or
a file, never from the command line (shell history) and never printed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mcp_taskqueue.cli import CommandError, local_store, maps_to_tool, root_options, show, with_client
from mcp_taskqueue.errors import TaskQueueError
from mcp_taskqueue.notify.events import EVENTS
from mcp_taskqueue.notify.notifiers import Notifiers
from mcp_taskqueue.notify.transport import allow_configured_hosts

CHANNELS = ("webhook", "slack", "discord", "email", "twilio", "fcm")


def key_values(pairs: tuple[str, ...], what: str) -> dict[str, Any]:
    """KEY=VALUE pairs; a value `@path` is read from that file; JSON values (numbers, true) are decoded."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=what)
        if value.startswith("@"):
            value = Path(value[1:]).read_text(encoding="utf-8")
            out[key] = value
            continue
        try:
            out[key] = json.loads(value) if what == "--option" else value
        except json.JSONDecodeError:
            out[key] = value
    return out


def read_secret(secret_env: str | None, secret_file: str | None) -> str | None:
    if secret_env:
        value = os.environ.get(secret_env)
        if not value:
            raise click.BadParameter(f"environment variable {secret_env} is not set", param_hint="--secret-env")
        return value
    if secret_file:
        return Path(secret_file).read_text(encoding="utf-8").strip()
    return None


def use_settings(ctx: click.Context) -> None:
    """The config's `notifications.allow_hosts` apply here as in the server (with the environment's)."""
    from mcp_taskqueue.cli_service import settings_for

    allow_configured_hosts(settings_for(ctx)[0].notifications.allow_hosts)


def shown(ctx: click.Context, info: Any, title: str | None = None) -> None:
    """Notifiers as flat rows for tables (JSON and YAML get every field unchanged)."""

    if root_options(ctx)["format"] != "table":
        show(ctx, info, title=title)
        return
    items = info if isinstance(info, list) else [info]
    rows = [
        {
            "id": n.id,
            "name": n.name,
            "channel": n.channel,
            "target": n.target,
            "events": " ".join(n.events),
            "filters": "; ".join(f"{k}={','.join(v)}" for k, v in n.filters.items()),
            "threshold": n.threshold,
            "deliveries": ", ".join(f"{k} {v}" for k, v in sorted(n.deliveries.items())),
        }
        for n in items
    ]
    show(ctx, rows if isinstance(info, list) else rows[0], title=title)


@click.group()
def notify() -> None:
    """Notifiers: webhooks, Slack, Discord, email, SMS and push when work finishes, fails or gets stuck."""


@maps_to_tool(
    "create_notifier",
    cli_only=("events", "secret_env", "secret_file"),  # --event's choices are the tool's own enum (EVENTS)
    renamed={"projects": "filters", "kinds": "filters", "tags": "filters"},
)
@notify.command("add")
@click.argument("name")
@click.option("--channel", "-c", type=click.Choice(CHANNELS), required=True)
@click.option("--target", "-t", required=True, help="URL (webhook, slack, discord, twilio, fcm) or email addresses.")
@click.option("--event", "-e", "events", multiple=True, required=True, type=click.Choice(EVENTS), help="Repeatable.")
@click.option("--project", "-p", "projects", multiple=True, help="Only tasks of these projects (repeatable).")
@click.option("--kind", "-k", "kinds", multiple=True, help="Only tasks of these kinds (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Only tasks with any of these tags (repeatable).")
@click.option("--threshold", type=click.IntRange(0), help="queue.depth: notify when ready tasks rise above this.")
@click.option("--template", "templates", multiple=True, help="KEY=TEMPLATE or KEY=@file (Jinja2; repeatable).")
@click.option("--option", "options", multiple=True, help="KEY=VALUE channel option, e.g. smtp_host=mail (repeatable).")
@click.option("--secret-env", help="Environment variable holding the signing key, API token or SMTP password.")
@click.option("--secret-file", type=click.Path(exists=True, dir_okay=False), help="File holding the secret.")
@click.option("--replace", is_flag=True, help="Change the notifier of this name (a new secret starts a rotation).")
@click.pass_context
def notify_add(
    ctx: click.Context,
    name: str,
    channel: str,
    target: str,
    events: tuple[str, ...],
    projects: tuple[str, ...],
    kinds: tuple[str, ...],
    tags: tuple[str, ...],
    threshold: int | None,
    templates: tuple[str, ...],
    options: tuple[str, ...],
    secret_env: str | None,
    secret_file: str | None,
    replace: bool,
) -> None:
    """Create (or with --replace change) a notifier."""

    use_settings(ctx)
    filters = {k: list(v) for k, v in (("projects", projects), ("kinds", kinds), ("tags", tags)) if v}
    fields = {
        "filters": filters or None,
        "threshold": threshold,
        "templates": key_values(templates, "--template") or None,
        "options": key_values(options, "--option") or None,
        "secret": read_secret(secret_env, secret_file),
        "replace": replace or None,
    }
    shown(ctx, with_client(ctx, lambda tq: tq.create_notifier(name, channel, target, list(events), **fields)))


@maps_to_tool("list_notifiers", cli_only=("notifier", "status"))
@notify.command("list")
@click.argument("notifier", required=False)
@click.option("--status", type=click.Choice(["pending", "delivered", "dead"]), help="Only deliveries in this state.")
@click.pass_context
def notify_list(ctx: click.Context, notifier: str | None, status: str | None) -> None:
    """Every notifier with delivery counts; or, given NOTIFIER, its latest deliveries."""

    if notifier is None:
        shown(ctx, with_client(ctx, lambda tq: tq.list_notifiers()).notifiers, title="notifiers")
        return
    detail = with_client(ctx, lambda tq: tq.get_notifier(notifier))
    recent = [d for d in detail.recent if status is None or d.status == status]
    if root_options(ctx)["format"] == "table":
        shown(ctx, detail)
        columns = ("id", "event", "key", "status", "attempts", "last_status_code", "last_latency_ms", "last_error")
        show(ctx, [{c: getattr(d, c) for c in columns} for d in recent], title="deliveries")
    else:
        show(ctx, detail.model_copy(update={"recent": recent}))


def notifier_command(name: str, tool: str) -> Callable[[Callable[..., None]], click.Command]:
    """`notify NAME NOTIFIER`: a command on one notifier (id or name) that fronts `tool`."""

    def make(fn: Callable[..., None]) -> click.Command:
        return maps_to_tool(tool)(notify.command(name)(click.argument("notifier")(click.pass_context(fn))))

    return make


@notifier_command("remove", "delete_notifier")
def notify_remove(ctx: click.Context, notifier: str) -> None:
    """Delete a notifier and its delivery records (undelivered notifications are dropped)."""

    show(ctx, with_client(ctx, lambda tq: tq.delete_notifier(notifier)))


@notifier_command("test", "test_notifier")
def notify_test(ctx: click.Context, notifier: str) -> None:
    """Send a sample event now and show the receiver's answer; exits 1 when it did not accept it."""

    use_settings(ctx)
    result = with_client(ctx, lambda tq: tq.test_notifier(notifier))
    show(ctx, result)
    if not result.ok:
        ctx.exit(1)


@notify.command("redeliver")
@click.argument("notifier")
@click.option("--id", "ids", multiple=True, help="Delivery id (webhook-id) to send again (repeatable).")
@click.option("--delivered", is_flag=True, help="Also replay deliveries that succeeded (with --id: any).")
@click.pass_context
def notify_redeliver(ctx: click.Context, notifier: str, ids: tuple[str, ...], delivered: bool) -> None:
    """Send dead deliveries again (or those named by --id), under their original ids. Local file only."""

    store = local_store(ctx, "redeliver", must_exist=True)
    try:
        statuses = ("dead", "delivered") if delivered else ("dead",)
        count = Notifiers(store).redeliver(notifier, ids, statuses)
    except TaskQueueError as exc:
        raise CommandError(f"{exc.code}: {exc}", exc.code) from None
    finally:
        store.close()
    show(ctx, {"notifier": notifier, "requeued": count})

"""CLI for running a team server: `serve` (settings, auth, logs), `token create|list|revoke`,
`config show|check`. Registered in cli.py; the click layer only, the work is elsewhere."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any

import click

from mcp_taskqueue.cli import CommandError, root_options, show
from mcp_taskqueue.config import ConfigError, Settings, load, redacted
from mcp_taskqueue.errors import TaskQueueError


def settings_for(ctx: click.Context, **overrides: Any) -> tuple[Settings, Any]:
    """Settings from --config/--profile, the environment and these command-line values."""
    obj = root_options(ctx)
    if obj.get("db"):
        overrides.setdefault("db", obj["db"])
    try:
        return load(obj.get("config"), obj.get("profile"), **overrides)
    except ConfigError as exc:
        raise CommandError(str(exc), "usage") from None


def _when(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds") if epoch else None


def _tokens(ctx: click.Context) -> Any:
    """Tokens in the store the server uses: --db, else the settings' db (TASKQUEUE_DB, *_FILE, file)."""
    from mcp_taskqueue.identity import Tokens
    from mcp_taskqueue.store import open_store

    if root_options(ctx).get("url"):
        raise CommandError(
            "tokens live in the server's store; run this where the store is (--db), not with --url", "usage"
        )
    settings, _ = settings_for(ctx)
    try:
        return Tokens(open_store(settings.db))
    except TaskQueueError as exc:
        raise CommandError(f"{exc.code}: {exc}", exc.code) from None


def _row(row: Any) -> dict[str, Any]:
    return {
        "name": row.name,
        "prefix": row.prefix + "…",
        "scopes": ",".join(row.scopes),
        "projects": ",".join(row.projects) if row.projects else "*",
        "created_at": _when(row.created_at),
        "expires_at": _when(row.expires_at),
        "revoked_at": _when(row.revoked_at),
    }


@click.group("token")
def token_group() -> None:
    """Bearer tokens for HTTP clients: the token's name is the caller's identity."""


@token_group.command("create")
@click.option("--name", required=True, help="Identity of the holder (the actor in history, worker, reviewer).")
@click.option("--scopes", required=True, help="Comma-separated: read, write, claim, review, admin.")
@click.option("--project", "projects", multiple=True, help="Limit to this project (repeatable; default: all).")
@click.option("--expires-in", type=click.FloatRange(min=1), help="Seconds until the token stops working.")
@click.pass_context
def token_create(
    ctx: click.Context, name: str, scopes: str, projects: tuple[str, ...], expires_in: float | None
) -> None:
    """Create a token and print it ONCE (only its hash is stored; it cannot be shown again)."""
    tokens = _tokens(ctx)
    try:
        secret, row = tokens.create(name, scopes, list(projects) or None, expires_in)
    except TaskQueueError as exc:
        raise CommandError(f"{exc.code}: {exc}", exc.code) from None
    finally:
        tokens.store.close()
    show(ctx, {**_row(row), "token": secret})
    if root_options(ctx).get("format", "table") == "table":
        click.echo(
            "Store this token now: it is not shown again. Clients send it as Authorization: Bearer <token>", err=True
        )


@token_group.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
@click.pass_context
def token_list(ctx: click.Context, include_revoked: bool) -> None:
    """Tokens by name, scopes and projects (never the secrets: only their first characters)."""
    tokens = _tokens(ctx)
    try:
        rows = tokens.list(include_revoked)
    finally:
        tokens.store.close()
    show(ctx, [_row(r) for r in rows])


@token_group.command("revoke")
@click.argument("name")
@click.pass_context
def token_revoke(ctx: click.Context, name: str) -> None:
    """Revoke the token called NAME; requests with it are refused from now on."""
    tokens = _tokens(ctx)
    try:
        row = tokens.revoke(name)
    except TaskQueueError as exc:
        raise CommandError(f"{exc.code}: {exc}", exc.code) from None
    finally:
        tokens.store.close()
    show(ctx, _row(row))


@click.group("config")
def config_group() -> None:
    """Inspect the settings (mcp-taskqueue.toml, profiles, TASKQUEUE_* environment)."""


@config_group.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """The effective settings, secrets masked, and the file they came from."""
    import json

    settings, found = settings_for(ctx)
    click.echo(json.dumps({"file": str(found) if found else None, **redacted(settings)}, indent=2))


@config_group.command("check")
@click.pass_context
def config_check(ctx: click.Context) -> None:
    """Validate the settings; exit 2 with each bad key and its rule, else print `ok`."""
    settings, found = settings_for(ctx)
    try:
        rate_policy(settings)
        if settings.server.toolsets is not None:
            from mcp_taskqueue.server.app import parse_toolsets

            parse_toolsets(settings.server.toolsets)
    except ValueError as exc:
        raise CommandError(f"invalid settings: {exc}", "usage") from None
    click.echo(f"ok: {found or 'no config file; defaults and environment'}")


def rate_policy(settings: Settings) -> Any:
    """[rate_limits] -> RatePolicy (ValueError naming the key on a bad limit)."""
    from mcp_taskqueue.identity import SCOPES
    from mcp_taskqueue.server.ratelimit import BUCKETS, RatePolicy, parse_limit

    limits = settings.rate_limits
    default = {
        b: parse_limit(getattr(limits, b), f"rate_limits.{b}") for b in BUCKETS if getattr(limits, b) is not None
    }

    def table(group: str, entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out = {}
        for key, buckets in entries.items():
            if group == "scopes" and key not in SCOPES:
                raise ValueError(f"rate_limits.scopes.{key}: unknown scope (choose from {', '.join(SCOPES)})")
            for bucket in buckets:
                if bucket not in BUCKETS:
                    raise ValueError(f"rate_limits.{group}.{key}.{bucket}: unknown bucket ({', '.join(BUCKETS)})")
            out[key] = {b: parse_limit(v, f"rate_limits.{group}.{key}.{b}") for b, v in buckets.items()}
        return out

    return RatePolicy(default, table("scopes", limits.scopes), table("tokens", limits.tokens))


def configure_tracing(settings: Settings) -> None:
    """Install an OpenTelemetry tracer provider (the `tracing` extra); the SDK's middleware then
    emits one span per MCP message."""
    if not settings.tracing.enabled:
        return
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
            SpanExporter,
        )
    except ImportError:
        raise click.ClickException("tracing needs the extra: pip install 'mcp-taskqueue[tracing]'") from None
    exporter: SpanExporter
    if settings.tracing.exporter == "console":
        exporter = ConsoleSpanExporter(out=sys.stderr)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # endpoint, headers, timeout from OTEL_EXPORTER_OTLP_* (protobuf over HTTP)
    # service.name: OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES when set, else mcp-taskqueue
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "unknown_service")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "mcp-taskqueue"}))
    provider = TracerProvider(resource=resource)
    # the console exporter is for looking: each span as it ends; OTLP batches
    console = settings.tracing.exporter == "console"
    provider.add_span_processor(SimpleSpanProcessor(exporter) if console else BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def serve(ctx: click.Context, no_auth: bool, store_timeout: float | None, limits: Any, **flags: Any) -> None:
    """The serve command's body: settings, logs, tracing, auth mode, then run until interrupted."""
    from mcp_taskqueue.identity import Tokens
    from mcp_taskqueue.logs import configure_logging
    from mcp_taskqueue.notify.dispatcher import Dispatcher
    from mcp_taskqueue.notify.transport import allow_configured_hosts
    from mcp_taskqueue.server.app import build_server
    from mcp_taskqueue.server.auth import OAuthSettings
    from mcp_taskqueue.server.service import ServiceOptions, StartupRefused, resolve_auth
    from mcp_taskqueue.server.transports import StartupError
    from mcp_taskqueue.server.transports import serve as run
    from mcp_taskqueue.store import open_store

    settings, _ = settings_for(ctx, **flags)
    allow_configured_hosts(settings.notifications.allow_hosts)
    log_settings = settings.logging
    configure_logging(
        log_settings.level_for(settings.server.transport),
        log_settings.format,
        log_settings.file,
        log_settings.max_bytes,
        log_settings.backups,
    )
    configure_tracing(settings)
    server = settings.server
    try:
        policy = rate_policy(settings)
    except ValueError as exc:
        raise CommandError(f"invalid settings: {exc}", "usage") from None
    try:
        store = open_store(settings.db, timeout=store_timeout)
        service = None
        if server.transport != "stdio":
            oauth = OAuthSettings(**settings.auth.oauth.model_dump()) if settings.auth.oauth else None
            try:
                mode = resolve_auth(settings.auth.mode, server.host, no_auth, Tokens(store), oauth)
            except StartupRefused as exc:
                raise CommandError(str(exc), "usage") from None
            service = ServiceOptions(
                auth=mode,
                oauth=oauth,
                base_url=f"http://{server.host}:{server.port}",
                rates=policy,
                metrics=settings.metrics.enabled,
                metrics_public=settings.metrics.public,
            )
        try:
            mcp = build_server(store, toolsets=server.toolsets, service=service)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--toolsets") from None
        with Dispatcher(store):  # sends notifications for the server's whole life, on every transport
            run(
                mcp,
                server.transport,
                server.host,
                server.port,
                limits,
                allowed_hosts=server.allowed_hosts,
                allowed_origins=server.allowed_origins,
            )
    except (TaskQueueError, StartupError) as exc:
        # An operator's problem, not a bug: one line saying what and what to do (traceback only in debug).
        if log_settings.level == "DEBUG":
            raise
        code = getattr(exc, "code", "startup")
        raise CommandError(f"{code}: {exc}", code) from None

"""The `mcp-taskqueue` command: a thin click layer over the queue and the server."""

from __future__ import annotations

import logging
import sys

import click

from mcp_taskqueue import __version__
from mcp_taskqueue.store import default_db_path


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mcp-taskqueue")
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    envvar="TASKQUEUE_DB",
    help=f"SQLite database file (default {default_db_path()}).",
)
@click.pass_context
def main(ctx: click.Context, db: str | None) -> None:
    """A durable task queue and workflow orchestrator for AI agents, served over MCP."""
    ctx.obj = {"db": db}


@main.command()
@click.option("--transport", type=click.Choice(["stdio", "http", "sse"]), default="stdio", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, type=int, show_default=True)
@click.option("--toolsets", default=None, help="Comma-separated tool groups to expose (default: all).")
@click.option("--log-level", default="WARNING", show_default=True)
@click.pass_context
def serve(ctx: click.Context, transport: str, host: str, port: int, toolsets: str | None, log_level: str) -> None:
    """Serve the queue over MCP (stdio for IDEs and desktop clients; http for many agents)."""
    # Logs go to stderr: in stdio mode stdout carries only protocol messages.
    logging.basicConfig(
        stream=sys.stderr, level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from mcp_taskqueue.server.app import build_server
    from mcp_taskqueue.server.transports import serve as run

    try:
        mcp = build_server(ctx.obj["db"], toolsets=toolsets)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--toolsets") from None
    run(mcp, transport, host, port)


if __name__ == "__main__":
    main()

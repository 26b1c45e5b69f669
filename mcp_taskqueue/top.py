"""`mcp-taskqueue top`: the live board in the terminal (textual).

The same six columns as the browser board, a detail pane for the highlighted task, and keys
for the actions: `r` retry, `c` cancel, `l` release a stuck lease (the last two ask first).
Locally it reads the store through board.py and wakes on commits from any process through the
server's own change watcher; with `--url` it reads a running server's board API and follows
its `/board/events` stream. Nothing polls the board itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import anyio
import click
from mcp.server.subscriptions import InMemorySubscriptionBus
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Header, Label, OptionList, Static
from textual.widgets.option_list import Option

from mcp_taskqueue.board import COLUMNS, DESTRUCTIVE_ACTIONS, Board, BoardView, Card, Filters, TaskDetail
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.notifications import LegacySubscriptions, ResourceWatcher
from mcp_taskqueue.store import open_store

ACTOR = "top"
CARDS_PER_COLUMN = 100
RECONNECT_SECONDS = 1.0


class BoardSource(Protocol):
    """Where `top` reads the board and sends actions: the local store or a server's board API."""

    async def view(self, filters: Filters) -> BoardView: ...
    async def task(self, task_id: str) -> TaskDetail: ...
    async def act(self, action: str, task_id: str) -> None: ...
    def changes(self) -> AsyncIterator[None]: ...
    async def close(self) -> None: ...


class LocalSource:
    """The store file itself; commits by any process wake `changes()` through a ResourceWatcher."""

    def __init__(self, db: str | Path | None) -> None:
        self.store = open_store(db)
        self.board = Board(TaskQueue(self.store))

    async def view(self, filters: Filters) -> BoardView:
        return await anyio.to_thread.run_sync(lambda: self.board.view(filters, limit=CARDS_PER_COLUMN))

    async def task(self, task_id: str) -> TaskDetail:
        return await anyio.to_thread.run_sync(self.board.task, task_id)

    async def act(self, action: str, task_id: str) -> None:
        actions: dict[str, Callable[[str, str], Any]] = {
            "retry": self.board.retry,
            "cancel": self.board.cancel,
            "release": self.board.release,
        }
        await anyio.to_thread.run_sync(actions[action], task_id, ACTOR)

    async def changes(self) -> AsyncIterator[None]:
        # the server's watcher: PRAGMA data_version per poll, events read only after a commit
        watcher = ResourceWatcher(self.store, InMemorySubscriptionBus(), LegacySubscriptions())
        first = True
        while True:
            found = await watcher.poll_once()
            # The first poll only sets the feed's starting point: one resync then catches whatever
            # committed between the first view and that point, which no later poll reports.
            if first or found.uris or found.list_changed:
                yield
            first = False
            await anyio.sleep(watcher.poll_seconds)

    async def close(self) -> None:
        self.store.close()


def board_base(url: str) -> str:
    """The server's root from the URL the CLI takes (`.../mcp` or `.../sse`)."""
    base = url.rstrip("/")
    for suffix in ("/mcp", "/sse"):
        base = base.removesuffix(suffix)
    return base


class RemoteSource:
    """A running server: its board JSON API and its `/board/events` stream (reconnecting)."""

    def __init__(self, url: str) -> None:
        import httpx2

        self.base = board_base(url)
        token = os.environ.get("TASKQUEUE_TOKEN")  # a server with tokens: as for every --url command
        self.http = httpx2.AsyncClient(
            base_url=self.base,
            timeout=httpx2.Timeout(10.0, read=30.0),
            headers={"Authorization": f"Bearer {token}"} if token else None,
        )
        self.errors: tuple[type[Exception], ...] = (httpx2.HTTPError,)

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            response = await self.http.get(path, params=params)
        except self.errors as exc:
            raise click.ClickException(f"cannot reach {self.base}: {exc}") from exc
        if response.status_code == 401:
            message = response.json().get("message", response.text)
            raise click.ClickException(f"{message} (top --url sends $TASKQUEUE_TOKEN)")
        if response.status_code >= 400:
            raise click.ClickException(response.json().get("message", response.text))
        return response.json()

    async def view(self, filters: Filters) -> BoardView:
        params = {k: v for k, v in filters.model_dump().items() if v and k != "query"}
        if filters.query:
            params["q"] = filters.query
        params["limit"] = CARDS_PER_COLUMN
        return BoardView.model_validate(await self._get("/board/api/board", params))

    async def task(self, task_id: str) -> TaskDetail:
        return TaskDetail.model_validate(await self._get(f"/board/api/tasks/{task_id}"))

    async def act(self, action: str, task_id: str) -> None:
        response = await self.http.post(f"/board/api/tasks/{task_id}/{action}", json={})
        if response.status_code >= 400:
            raise click.ClickException(response.json().get("message", response.text))

    async def changes(self) -> AsyncIterator[None]:
        while True:
            try:
                async with self.http.stream("GET", "/board/events") as response:
                    async for line in response.aiter_lines():
                        if line.startswith("event: "):
                            yield  # hello (a resync after a reconnect) or change
            except self.errors:
                pass
            await anyio.sleep(RECONNECT_SECONDS)

    async def close(self) -> None:
        await self.http.aclose()


def card_text(card: Card) -> Text:
    """Two lines: the title, then priority · worker · lease left · attempt · progress."""
    parts = [card.priority.value]
    if card.worker:
        parts.append(card.worker)
    if card.lease_seconds_left is not None:
        parts.append(f"lease {int(card.lease_seconds_left)}s")
    if card.attempts:
        parts.append(f"try {card.attempts}/{card.max_attempts}")
    if card.progress is not None:
        parts.append(f"{round(card.progress * 100)}%")
    if card.blocked_by:
        parts.append("blocked")
    text = Text(card.title, style="bold")
    text.append("\n" + " · ".join(parts), style="dim")
    return text


def detail_text(detail: TaskDetail) -> Text:
    task = detail.task
    text = Text(f"{task.title}\n", style="bold")
    fields = [
        ("id", task.id),
        ("status", task.status.value),
        ("priority", task.priority.value),
        ("kind", task.kind),
        ("worker", task.worker or "—"),
        ("attempts", f"{task.attempts}/{task.max_attempts}"),
        ("progress", "—" if task.progress is None else f"{round(task.progress * 100)}%"),
    ]
    text.append("  ".join(f"{k}: {v}" for k, v in fields) + "\n")
    if task.error:
        text.append(f"error: {task.error}\n", style="red")
    if task.result is not None:
        text.append(f"result: {json.dumps(task.result)[:200]}\n")
    for event in detail.history[-5:]:
        text.append(f"{event.at}  {event.actor or '—'}  {event.action}\n", style="dim")
    return text


class Confirm(ModalScreen[bool]):
    """Yes/no before an action that throws work away."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Label(self.question)
            with Horizontal():
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class TopApp(App[None]):
    """Six columns of cards, a detail pane, live."""

    TITLE = "mcp-taskqueue top"
    CSS = """
    #columns { height: 1fr; }
    .column { width: 1fr; border: round $primary-darken-2; }
    .column:focus-within { border: round $accent; }
    #detail { height: 11; border: round $secondary; padding: 0 1; }
    #confirm { width: 60; height: auto; border: thick $error; padding: 1 2; background: $surface; }
    Confirm { align: center middle; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("r", "act('retry')", "Retry"),
        Binding("c", "act('cancel')", "Cancel"),
        Binding("l", "act('release')", "Release"),
        Binding("left", "move(-1)", "←", show=False),
        Binding("right", "move(1)", "→", show=False),
    ]

    def __init__(self, source: BoardSource, filters: Filters | None = None) -> None:
        super().__init__()
        self.source = source
        self.filters = filters or Filters()
        self.cards: dict[str, Card] = {}
        self.selected: str | None = None
        self.refreshes = 0
        self.failure: str | None = None  # why the first read failed (the app then exits with code 1)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="columns"):
            for key, _, label in COLUMNS:
                column = OptionList(id=f"col-{key}", classes="column")
                column.border_title = label
                yield column
        yield Static("Select a task to see it here.", id="detail")
        yield Footer()

    async def on_mount(self) -> None:
        self.sub_title = self.filters.project or "all projects"
        try:
            await self.reload()
        except click.ClickException as exc:  # no token, a refused one, no server: say so, not a traceback
            self.failure = exc.message
            self.exit(return_code=1)
            return
        self.query_one("#col-ready", OptionList).focus()
        self.follow()

    @work(exclusive=True, group="follow")
    async def follow(self) -> None:
        async for _ in self.source.changes():
            try:
                await self.reload()
            except click.ClickException as exc:  # gone away or refused meanwhile: keep following
                self.notify(exc.message, severity="error", timeout=6)

    async def reload(self) -> None:
        """Redraw every column from a fresh read, keeping each column's highlighted card."""
        view = await self.source.view(self.filters)
        self.cards = {card.id: card for column in view.columns for card in column.cards}
        for column in view.columns:
            widget = self.query_one(f"#col-{column.key}", OptionList)
            keep = widget.highlighted_option.id if widget.highlighted_option is not None else None
            widget.border_title = f"{column.label} {column.count}"
            widget.clear_options()
            widget.add_options([Option(card_text(card), id=card.id) for card in column.cards])
            ids = [card.id for card in column.cards]
            if keep in ids:
                widget.highlighted = ids.index(keep)
        self.refreshes += 1
        if self.selected:
            await self.show(self.selected)

    async def show(self, task_id: str) -> None:
        try:
            detail = await self.source.task(task_id)
        except Exception as exc:  # gone or unreachable: say so in the pane
            self.query_one("#detail", Static).update(f"{task_id}: {exc}")
            return
        self.query_one("#detail", Static).update(detail_text(detail))

    @on(OptionList.OptionHighlighted)
    async def highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id and event.option.id != self.selected:
            self.selected = event.option.id
            await self.show(event.option.id)

    def action_move(self, step: int) -> None:
        keys = [key for key, _, _ in COLUMNS]
        focused = self.focused
        current = keys.index(focused.id.removeprefix("col-")) if focused is not None and focused.id else 0
        self.query_one(f"#col-{keys[(current + step) % len(keys)]}", OptionList).focus()

    @work(exclusive=True, group="act")
    async def action_act(self, action: str) -> None:
        card = self.cards.get(self.selected or "")
        if card is None:
            self.notify("Highlight a task first.", severity="warning")
            return
        if action in DESTRUCTIVE_ACTIONS and not await self.push_screen_wait(
            Confirm(f"{action.title()} “{card.title}”?")
        ):
            return
        try:
            await self.source.act(action, card.id)
        except Exception as exc:  # refused by the queue (e.g. retry a running task): show why
            self.notify(str(exc), severity="error", timeout=6)
            return
        self.notify(f"{action}: {card.title}")
        await self.reload()

    async def on_unmount(self) -> None:
        await self.source.close()


@click.command("top")
@click.option("--project", "-p", help="Show one project (default: all).")
@click.option("--kind", "-k", help="Only tasks of this kind.")
@click.option("--worker", help="Only tasks of this worker.")
@click.pass_context
def top(ctx: click.Context, project: str | None, kind: str | None, worker: str | None) -> None:
    """Live full-screen board: columns by status, task details; keys r retry, c cancel, l release, q quit."""
    obj = ctx.find_root().obj or {}  # the global --db/--url, wherever they were given
    source: BoardSource = RemoteSource(obj["url"]) if obj.get("url") else LocalSource(obj.get("db"))
    app = TopApp(source, Filters(project=project, kind=kind, worker=worker))
    app.run()
    if app.failure:
        raise click.ClickException(app.failure)

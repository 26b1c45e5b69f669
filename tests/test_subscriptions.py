"""Live updates: subscribers hear about changes within a second, from this process or another one.

Both mechanisms of the SDK are covered: 2026-07-28 `subscriptions/listen` (`Client.listen`)
and the handshake-era `resources/subscribe` (`Client(mode="legacy").subscribe_resource`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.subscriptions import ResourcesListChanged, ResourceUpdated, Subscription

from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.app import build_server
from mcp_taskqueue.store import Store, open_store
from tests.mcp_calls import call
from tests.servers import http_server, stdio_params

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
DEADLINE = 1.0  # the promise: a subscriber hears of a change within a second


async def next_update(sub: Subscription, timeout: float = DEADLINE) -> set[str]:
    """URIs delivered on a listen stream until the first one arrives, plus any already queued."""
    seen: set[str] = set()
    with anyio.fail_after(timeout):
        event = await sub.__anext__()
        assert isinstance(event, ResourceUpdated)
        seen.add(event.uri)
    return seen


async def settle(sub: Subscription, quiet: float = 0.4) -> None:
    """Swallow notifications of earlier changes, until none arrives for `quiet` seconds."""
    while True:
        with anyio.move_on_after(quiet) as scope:
            await sub.__anext__()
        if scope.cancelled_caught:
            return


class Inbox:
    """A legacy client's message handler: remembers every resources/updated URI and list change."""

    def __init__(self) -> None:
        self.updated: list[str] = []
        self.list_changed = 0
        self._arrived = anyio.Event()

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.updated.append(str(message.params.uri))
        elif isinstance(message, types.ResourceListChangedNotification):
            self.list_changed += 1
        else:
            return
        self._arrived.set()

    async def wait_for(self, uri: str, timeout: float = DEADLINE) -> float:
        """Seconds until `uri` was notified (fails after `timeout`)."""
        start = time.monotonic()
        with anyio.fail_after(timeout):
            while uri not in self.updated:
                self._arrived = anyio.Event()
                await self._arrived.wait()
        return time.monotonic() - start


@pytest.fixture
async def modern(db_path: Path) -> AsyncIterator[Client]:
    async with Client(build_server(db_path)) as client:
        yield client


async def test_listen_stream_hears_task_changes_made_in_this_process(modern: Client) -> None:
    task = await call(modern, "create_task", title="watch me")
    uri = f"taskqueue://tasks/{task['id']}"
    async with modern.listen(resource_subscriptions=[uri, "taskqueue://stats"]) as sub:
        await settle(sub)
        start = time.monotonic()
        await call(modern, "claim_task", worker="w1")
        seen: set[str] = set()
        while not {uri, "taskqueue://stats"} <= seen:
            seen |= await next_update(sub)
        assert time.monotonic() - start < DEADLINE
        # the resource now reads as changed
        read = await modern.read_resource(uri)
        assert '"running"' in read.contents[0].text  # type: ignore[union-attr]


async def test_listen_stream_is_filtered_to_subscribed_uris(modern: Client) -> None:
    watched = await call(modern, "create_task", title="watched")
    other = await call(modern, "create_task", title="other", priority="critical")
    uri = f"taskqueue://tasks/{watched['id']}"
    async with modern.listen(resource_subscriptions=[uri]) as sub:
        await settle(sub)
        await call(modern, "claim_task", worker="w1")  # takes `other` (critical)
        await call(modern, "add_note", task_id=watched["id"], text="now you")
        seen = await next_update(sub)
        assert seen == {uri}
        assert f"taskqueue://tasks/{other['id']}" not in seen


async def test_listen_hears_new_projects_as_list_changed(modern: Client) -> None:
    async with modern.listen(resources_list_changed=True) as sub:
        await call(modern, "create_task", title="first in a new project", project="fresh")
        with anyio.fail_after(DEADLINE):
            event = await sub.__anext__()
        assert isinstance(event, ResourcesListChanged)


async def test_workflow_uri_is_published_when_one_of_its_tasks_changes(modern: Client) -> None:
    tools = {tool.name for tool in (await modern.list_tools()).tools}
    if "create_workflow" not in tools:
        pytest.skip("the workflows toolset is not registered")
    spec = {"name": "ship", "tasks": [{"ref": "a", "title": "A"}, {"ref": "b", "title": "B", "depends_on": ["a"]}]}
    workflow = await call(modern, "create_workflow", spec=spec)
    uri = f"taskqueue://workflows/{workflow['id']}"
    async with modern.listen(resource_subscriptions=[uri]) as sub:
        await settle(sub)
        claimed = await call(modern, "claim_task", worker="w1")
        assert claimed["task"]["workflow_id"] == workflow["id"]
        assert uri in await next_update(sub)


async def test_legacy_subscribe_gets_resources_updated(db_path: Path) -> None:
    inbox = Inbox()
    async with Client(build_server(db_path), mode="legacy", message_handler=inbox) as client:
        caps = client.server_capabilities.resources
        assert caps is not None and caps.subscribe and caps.list_changed
        task = await call(client, "create_task", title="old client")
        uri = f"taskqueue://tasks/{task['id']}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            await client.subscribe_resource(uri)
            await client.subscribe_resource(f"{uri}/history")
        await call(client, "claim_task", worker="w1")
        assert await inbox.wait_for(uri) < DEADLINE
        await inbox.wait_for(f"{uri}/history")
        # unsubscribed URIs are not sent
        assert all(u in (uri, f"{uri}/history") for u in inbox.updated)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            await client.unsubscribe_resource(uri)
            await client.unsubscribe_resource(f"{uri}/history")
        count = len(inbox.updated)
        await call(client, "add_note", task_id=task["id"], text="after unsubscribe")
        await anyio.sleep(0.5)
        assert len(inbox.updated) == count


async def test_legacy_subscribe_refuses_foreign_uris(db_path: Path) -> None:
    async with Client(build_server(db_path), mode="legacy") as client:
        with warnings.catch_warnings(), pytest.raises(Exception, match="taskqueue://"):
            warnings.simplefilter("ignore")
            await client.subscribe_resource("file:///etc/passwd")


async def test_change_from_another_process_reaches_both_kinds_of_subscriber(tmp_path: Path) -> None:
    """Two real server processes on one file: a change made through one is heard through the other."""
    db = tmp_path / "shared.db"
    inbox = Inbox()
    async with (
        Client(stdio_params(db)) as writer,
        Client(stdio_params(db)) as modern_reader,
        Client(stdio_params(db), mode="legacy", message_handler=inbox) as legacy_reader,
    ):
        task = await call(writer, "create_task", title="cross-process")
        uri = f"taskqueue://tasks/{task['id']}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            await legacy_reader.subscribe_resource(uri)
        async with modern_reader.listen(resource_subscriptions=[uri]) as sub:
            await settle(sub)
            inbox.updated.clear()
            start = time.monotonic()
            await call(writer, "claim_task", worker="elsewhere")
            assert await next_update(sub) == {uri}
            modern_latency = time.monotonic() - start
            await inbox.wait_for(uri)
            legacy_latency = time.monotonic() - start
        assert modern_latency < DEADLINE and legacy_latency < DEADLINE
        got = await legacy_reader.read_resource(uri)
        assert '"elsewhere"' in got.contents[0].text  # type: ignore[union-attr]


async def test_watcher_reads_nothing_while_the_file_is_unchanged(db_path: Path) -> None:
    """Idle polling costs one PRAGMA: no events are read when data_version has not moved."""
    queue = TaskQueue(open_store(db_path))
    server = build_server(queue)
    watcher = server.watcher  # type: ignore[attr-defined]
    queue.create({"title": "before"})
    assert (await watcher.poll_once()).uris == set()  # the first poll sets the starting point
    assert (await watcher.poll_once()).uris == set()
    task = queue.create({"title": "after", "project": "p2"})
    changes = await watcher.poll_once()
    assert f"taskqueue://tasks/{task.id}" in changes.uris
    assert {"taskqueue://stats", "taskqueue://projects", "taskqueue://projects/p2"} <= changes.uris
    assert changes.list_changed
    assert (await watcher.poll_once()).uris == set()


async def test_both_kinds_of_subscriber_over_streamable_http(tmp_path: Path) -> None:
    """One HTTP server process, one watcher: modern and legacy clients both hear a change."""
    inbox = Inbox()
    with http_server(tmp_path / "http.db") as base:
        async with (
            Client(base + "/mcp") as writer,
            Client(base + "/mcp") as modern_reader,
            Client(base + "/mcp", mode="legacy", message_handler=inbox) as legacy_reader,
        ):
            task = await call(writer, "create_task", title="over http")
            uri = f"taskqueue://tasks/{task['id']}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                await legacy_reader.subscribe_resource(uri)
            async with modern_reader.listen(resource_subscriptions=[uri]) as sub:
                await settle(sub)
                inbox.updated.clear()
                await call(writer, "claim_task", worker="http-agent")
                assert await next_update(sub) == {uri}
                assert await inbox.wait_for(uri) < DEADLINE


async def test_a_departed_legacy_client_does_not_stop_notifications_to_others(db_path: Path) -> None:
    server = build_server(db_path)
    inbox = Inbox()
    async with Client(server, mode="legacy", message_handler=inbox) as staying:
        task = await call(staying, "create_task", title="shared interest")
        uri = f"taskqueue://tasks/{task['id']}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            async with Client(server, mode="legacy") as leaving:
                await leaving.subscribe_resource(uri)
            await staying.subscribe_resource(uri)
        for n in range(3):
            inbox.updated.clear()
            await call(staying, "add_note", task_id=task["id"], text=f"note {n}")
            await inbox.wait_for(uri)


@pytest.mark.sqlite_only("batches of SQLite's events high-water mark; PostgreSQL's feed reads events by transaction id")
async def test_a_burst_larger_than_one_poll_is_caught_up_on_the_next_polls(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcp_taskqueue.store import database

    monkeypatch.setattr(database, "EVENT_BATCH", 3)
    monkeypatch.setattr(database, "MAX_BATCHES_PER_POLL", 2)  # six events per poll
    queue = TaskQueue(open_store(db_path))
    watcher = build_server(queue).watcher  # type: ignore[attr-defined]
    await watcher.poll_once()
    created = queue.create_many([{"title": f"t{i}"} for i in range(10)])
    first = await watcher.poll_once()
    second = await watcher.poll_once()  # no new commit, but the first poll was not caught up
    third = await watcher.poll_once()
    notified = {uri for uri in first.uris | second.uris if "/history" not in uri}
    assert {f"taskqueue://tasks/{t.id}" for t in created} <= notified
    assert len([u for u in first.uris if u.endswith(tuple(t.id for t in created))]) == 6
    assert third.uris == set()


@pytest.mark.sqlite_only("rewinds an SQLite file with its backup API; PostgreSQL restores are pg_restore (test_cli)")
async def test_watcher_follows_a_restore_that_rewinds_the_history(db_path: Path, tmp_path: Path) -> None:
    store = Store(db_path)
    queue = TaskQueue(store)
    watcher = build_server(queue).watcher  # type: ignore[attr-defined]
    queue.create({"title": "in the backup"})
    store.backup_to(tmp_path / "backup.db")
    queue.create_many([{"title": f"after the backup {i}"} for i in range(5)])
    await watcher.poll_once()
    store.restore_from(tmp_path / "backup.db")  # five tasks' history is gone
    rewound = await watcher.poll_once()
    assert rewound.list_changed and "taskqueue://stats" in rewound.uris
    task = queue.create({"title": "after the restore"})
    assert f"taskqueue://tasks/{task.id}" in (await watcher.poll_once()).uris


async def test_legacy_subscriptions_per_client_are_capped(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mcp_taskqueue.server import notifications

    monkeypatch.setattr(notifications, "MAX_SUBSCRIPTIONS_PER_CLIENT", 5)
    async with Client(build_server(db_path), mode="legacy") as client:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for n in range(5):
                await client.subscribe_resource(f"taskqueue://tasks/t{n}")
            await client.subscribe_resource("taskqueue://tasks/t0")  # a repeat costs nothing
            with pytest.raises(Exception, match="at most 5 subscriptions"):
                await client.subscribe_resource("taskqueue://tasks/one-too-many")
            await client.unsubscribe_resource("taskqueue://tasks/t0")
            await client.subscribe_resource("taskqueue://tasks/one-too-many")

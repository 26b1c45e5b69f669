"""Live updates: commits to the store, from any process or host, become resource notifications.

One `ResourceWatcher` per server process polls the store's change feed (`Storage.change_feed`:
what committed since the last poll, from every process on the database, cheap while nothing
changes), maps each change to the resources it touches, and publishes them both ways the SDK offers:

- the 2026-07-28 `subscriptions/listen` streams, through the server's `SubscriptionBus`;
- the legacy `resources/subscribe` requests, tracked per connection by `LegacySubscriptions`
  and answered with `notifications/resources/updated` on that connection.

Lease extensions without progress are not history events, so they are not notified.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.session import ServerSession
from mcp.server.subscriptions import ResourcesListChanged, ResourceUpdated, SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams
from starlette.requests import HTTPConnection

from mcp_taskqueue.server.auth import REVERIFY_SECONDS
from mcp_taskqueue.server.reporting import connection_of
from mcp_taskqueue.store import ChangeBatch, ChangeFeed, Storage

log = logging.getLogger("mcp_taskqueue.notifications")

POLL_SECONDS = 0.15
MAX_SUBSCRIPTIONS_PER_CLIENT = 1_000
SEND_TIMEOUT_SECONDS = 5.0
SCHEME = "taskqueue://"
STATS_URI = "taskqueue://stats"
PROJECTS_URI = "taskqueue://projects"


def task_uris(task_id: str, project: str, workflow_id: str | None) -> list[str]:
    """The resources one task event changes (besides stats and the projects list)."""
    uris = [f"taskqueue://tasks/{task_id}", f"taskqueue://tasks/{task_id}/history", f"taskqueue://projects/{project}"]
    if workflow_id:
        uris.append(f"taskqueue://workflows/{workflow_id}")
    return uris


@dataclass
class Changes:
    """What one poll found: resource URIs to notify, and whether the resource list changed."""

    uris: set[str] = field(default_factory=set)
    list_changed: bool = False


@dataclass
class _Subscriber:
    session: ServerSession
    uris: set[str] = field(default_factory=set)
    tokens: dict[str, AccessToken] = field(default_factory=dict)  # the bearer tokens it subscribed with
    checked: float = 0.0  # time.monotonic() of the last token check


class LegacySubscriptions:
    """`resources/subscribe` bookkeeping: which connection wants which URIs.

    `still_valid(access)`: whether a bearer token accepted at subscribe time still holds (not revoked by
    any process, not expired). A connection whose token no longer holds loses all its subscriptions
    before its next notification; tokens are re-checked at most every REVERIFY_SECONDS per connection."""

    def __init__(self, still_valid: Callable[[AccessToken], Awaitable[bool]] | None = None) -> None:
        # keyed by the connection, so several requests of one client share one entry
        self._clients: dict[int, tuple[object, _Subscriber]] = {}
        self.still_valid = still_valid

    @staticmethod
    def _key(session: ServerSession) -> object:
        return connection_of(session)

    async def subscribe(self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
        uri = str(params.uri)
        if not uri.startswith(SCHEME):
            raise MCPError(INVALID_PARAMS, f"cannot subscribe to {uri!r}: this server's resources are {SCHEME}...")
        key = self._key(ctx.session)
        _, entry = self._clients.setdefault(id(key), (key, _Subscriber(ctx.session)))
        if uri not in entry.uris and len(entry.uris) >= MAX_SUBSCRIPTIONS_PER_CLIENT:
            raise MCPError(INVALID_PARAMS, f"at most {MAX_SUBSCRIPTIONS_PER_CLIENT} subscriptions per client")
        user = ctx.request.scope.get("user") if isinstance(ctx.request, HTTPConnection) else None
        if isinstance(user, AuthenticatedUser):
            entry.tokens[user.access_token.token] = user.access_token
        entry.uris.add(uri)
        return EmptyResult()

    async def unsubscribe(self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
        found = self._clients.get(id(self._key(ctx.session)))
        if found is not None:
            found[1].uris.discard(str(params.uri))
            if not found[1].uris:
                del self._clients[id(found[0])]
        return EmptyResult()

    async def deliver(self, changes: Changes) -> None:
        """Notify every subscribed connection at once; one that fails or stalls past a timeout is dropped."""
        async with anyio.create_task_group() as tg:
            for key, (_, entry) in list(self._clients.items()):
                wanted = sorted(entry.uris & changes.uris)
                if wanted or changes.list_changed:
                    tg.start_soon(self._send, key, entry, wanted, changes.list_changed)

    async def _tokens_hold(self, entry: _Subscriber) -> bool:
        if self.still_valid is None or not entry.tokens or time.monotonic() - entry.checked < REVERIFY_SECONDS:
            return True
        for access in list(entry.tokens.values()):
            if not await self.still_valid(access):
                return False
        entry.checked = time.monotonic()
        return True

    async def _send(self, key: int, entry: _Subscriber, uris: list[str], list_changed: bool) -> None:
        try:
            if not await self._tokens_hold(entry):
                names = ", ".join(sorted({a.client_id for a in entry.tokens.values()}))
                log.info("dropping resource subscriptions of %s: token revoked or expired", names,
                         extra={"event": "stream_revoked", "identity": names})  # fmt: skip
                self._clients.pop(key, None)
                return
            with anyio.fail_after(SEND_TIMEOUT_SECONDS):
                for uri in uris:
                    await entry.session.send_resource_updated(uri)
                if list_changed:
                    await entry.session.send_resource_list_changed()
        except Exception as exc:  # a gone client: closed stream, broken pipe, timeout
            log.info("dropping resource subscriptions of a client that cannot be reached: %r", exc)
            self._clients.pop(key, None)


class ResourceWatcher:
    """Polls the store's change feed and publishes the resources its commits changed."""

    def __init__(
        self,
        store: Storage,
        bus: SubscriptionBus,
        legacy: LegacySubscriptions,
        poll_seconds: float = POLL_SECONDS,
        promote: Callable[[], object] | None = None,
    ) -> None:
        self.store = store
        self.promote = promote  # time-driven changes (due tasks, expired leases), applied every poll interval
        self.bus = bus
        self.legacy = legacy
        self.poll_seconds = poll_seconds
        self._feed: ChangeFeed | None = None
        self._polling = False
        self._promoting = False
        self._users = 0
        self._last_poll: float | None = None

    # --- reading the feed (in a worker thread) ---------------------------------------------

    def collect(self) -> Changes:
        """What changed since the last call (nothing, cheaply, when nothing committed)."""
        if self._feed is None:
            self._feed = self.store.change_feed()
        return self.changes(self._feed.poll())

    @staticmethod
    def changes(batch: ChangeBatch) -> Changes:
        """The resources a batch of commits touched."""
        changes = Changes()
        for task_id, project, workflow_id in batch.tasks:
            changes.uris.update(task_uris(task_id, project, workflow_id))
        if batch.reset:
            changes.list_changed = True
            changes.uris.add(STATS_URI)
        if changes.uris:
            changes.uris.update((STATS_URI, PROJECTS_URI))
        if batch.projects or batch.projects_listed:
            changes.list_changed = changes.list_changed or batch.projects_listed
            changes.uris.update(f"taskqueue://projects/{name}" for name in batch.projects)
            changes.uris.add(PROJECTS_URI)
        return changes

    # --- publishing (on the event loop) ----------------------------------------------------

    async def poll_once(self) -> Changes:
        changes = await anyio.to_thread.run_sync(self.collect)
        self._last_poll = time.monotonic()
        await self.publish(changes)
        return changes

    def seconds_since_poll(self) -> float | None:
        """How stale the feed is: seconds since it last read the store (None before the first read)."""
        return None if self._last_poll is None else time.monotonic() - self._last_poll

    async def publish(self, changes: Changes) -> None:
        for uri in sorted(changes.uris):
            await self.bus.publish(ResourceUpdated(uri=uri))
        if changes.list_changed:
            await self.bus.publish(ResourcesListChanged())
        if changes.uris or changes.list_changed:
            await self.legacy.deliver(changes)

    async def run(self) -> None:
        """Poll until cancelled. Only one poller runs per watcher; others wait to take over."""
        while self._polling:
            await anyio.sleep(self.poll_seconds)
        self._polling = True
        try:
            while True:
                try:
                    await self.poll_once()
                except Exception:  # keep watching: a busy or briefly unreadable file is not fatal
                    log.exception("resource watcher poll failed; retrying")
                await anyio.sleep(self.poll_seconds)
        finally:
            self._polling = False

    async def promote_loop(self) -> None:
        """Apply time-driven changes every poll interval, beside (not in front of) the change poll, so
        a slow promotion never delays notifications; what it changes is then noticed like any commit,
        so a subscriber hears of a task that became ready by time alone."""
        assert self.promote is not None
        while self._promoting:  # one promoter per process; the others wait to take over
            await anyio.sleep(self.poll_seconds)
        self._promoting = True
        try:
            while True:
                try:
                    await anyio.to_thread.run_sync(self.promote)
                except Exception as exc:  # a busy store: try again next time
                    log.warning("promoting due tasks failed: %s; retrying", exc)
                await anyio.sleep(self.poll_seconds)
        finally:
            self._promoting = False

    @asynccontextmanager
    async def lifespan(self, _server: MCPServer[Any]) -> AsyncIterator[dict[str, Any]]:
        """The MCPServer lifespan: entered once per process (HTTP) or per connection (stdio, SSE)."""
        self._users += 1
        try:
            async with anyio.create_task_group() as tg:
                if self.store.description != ":memory:":  # a private in-memory file has no other writers to see
                    tg.start_soon(self.run)
                if self.promote is not None:
                    tg.start_soon(self.promote_loop)
                try:
                    yield {}
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._users -= 1
            if self._users == 0 and self._feed is not None:
                self._feed.close()
                self._feed = None


def register_subscriptions(mcp: MCPServer[Any], legacy: LegacySubscriptions) -> None:
    """Serve legacy `resources/subscribe`/`unsubscribe` and advertise resource list changes."""
    lowlevel = mcp._lowlevel_server  # the SDK's MCPServer has no public hook for these two methods
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, legacy.subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, legacy.unsubscribe)
    create_options = lowlevel.create_initialization_options

    def with_list_changed(notification_options: NotificationOptions | None = None, *args: Any, **kwargs: Any) -> Any:
        # handshake-era clients learn from the capability that resources/list_changed is sent
        return create_options(notification_options or NotificationOptions(resources_changed=True), *args, **kwargs)

    lowlevel.create_initialization_options = with_list_changed  # type: ignore[method-assign]

"""Shared fixtures: a real SQLite file per test, the queue over it, and the MCP server over that."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mcp import Client
from mcp_types import Implementation

from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.app import build_server
from mcp_taskqueue.store import Store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tasks.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store(db_path)
    yield s
    s.close()


@pytest.fixture
def queue(store: Store) -> TaskQueue:
    return TaskQueue(store)


class Clock:
    """A controllable clock, so lease expiry and backoff are tested without sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def timed_queue(store: Store, clock: Clock) -> TaskQueue:
    return TaskQueue(store, clock=clock)


@pytest.fixture
async def client(db_path: Path) -> AsyncIterator[Client]:
    """The real server on this test's database, through a real client named `test-agent`."""
    async with Client(build_server(db_path), client_info=Implementation(name="test-agent", version="1")) as c:
        yield c

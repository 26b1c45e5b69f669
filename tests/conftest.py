"""Shared fixtures: a real database per test (an SQLite file, or a PostgreSQL database), the
queue over it, and the MCP server over that.

One suite, two engines: in the modules listed in TWO_ENGINES every test that uses a database
fixture (`db_path`, `store`, `queue`, `client`, ...) runs once per engine, `[sqlite]` and
`[postgres]`. A test that is about SQLite itself (a file, its locks, its query plans) says so
with `@pytest.mark.sqlite_only("why")` and runs on SQLite only; nothing is skipped silently.
PostgreSQL is a real server started once per session from the machine's binaries (tests/postgres.py).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from mcp import Client
from mcp_types import Implementation

from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.app import build_server
from mcp_taskqueue.store import Storage, open_store
from tests.postgres import PostgresServer

ENGINES = ("sqlite", "postgres")
TWO_ENGINES = frozenset(
    {
        "test_archive",
        "test_queue",
        "test_dependencies",
        "test_leases",
        "test_workflows",
        "test_development",
        "test_payload_schemas",
        "test_server",
        "test_subscriptions",
        "test_cli",
        "test_client",
        "test_roadmap_example",
        "test_readiness",
        "test_schema_safety",
        "test_search",
        "test_cancellation",
        "test_auth",
        "test_containment",
        "test_notify",
        "test_notify_channels",
        "test_notify_delivery",
        "test_notify_surface",
        "test_notify_safety",
    }
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" not in metafunc.fixturenames:
        return
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    only = metafunc.definition.get_closest_marker("sqlite_only")
    if only is not None and not (only.args and isinstance(only.args[0], str) and only.args[0].strip()):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: sqlite_only needs a reason, e.g. sqlite_only('why')")
    if module in TWO_ENGINES and only is None:
        metafunc.parametrize("engine", ENGINES)


@pytest.fixture
def engine() -> str:
    """The store engine of this test: "sqlite" unless the module runs on both (see TWO_ENGINES)."""
    return "sqlite"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole session, started on first use, stopped at the end."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db_path(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path | str]:
    """The test's database: an SQLite file path, or a fresh PostgreSQL database's URL."""
    if engine == "postgres":
        server: PostgresServer = request.getfixturevalue("pg_server")
        url = server.new_database()
        yield url
        server.drop_database(url)
    else:
        yield tmp_path / "tasks.db"


@pytest.fixture
def new_db(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Path | str]]:
    """Makes more empty databases for one test: of its engine, or of the one named (`new_db("postgres")`);
    a file path (not yet created) or a URL. PostgreSQL ones are dropped at the end."""
    urls: list[str] = []
    names = itertools.count(1)

    def make(kind: str | None = None) -> Path | str:
        if (kind or engine) == "postgres":
            urls.append(request.getfixturevalue("pg_server").new_database())
            return urls[-1]
        return tmp_path / f"new{next(names)}.db"

    yield make
    for url in urls:
        request.getfixturevalue("pg_server").drop_database(url)


@pytest.fixture
def store(db_path: Path | str) -> Iterator[Storage]:
    s = open_store(db_path)
    yield s
    s.close()


@pytest.fixture
def queue(store: Storage) -> TaskQueue:
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
def timed_queue(store: Storage, clock: Clock) -> TaskQueue:
    return TaskQueue(store, clock=clock)


@pytest.fixture
async def client(db_path: Path | str) -> AsyncIterator[Client]:
    """The real server on this test's database, through a real client named `test-agent`."""
    server = build_server(db_path)
    async with Client(server, client_info=Implementation(name="test-agent", version="1")) as c:
        yield c
    server.queue.store.close()  # type: ignore[attr-defined]

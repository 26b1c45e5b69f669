"""The layers stay layers: data flows server -> queue -> store, and only the store knows its engine.

Checked on the source and on a fresh interpreter's imports (not by convention): `server/` names
no SQLite, the queue imports neither workflows nor development (they build on it, not the other
way round), and nothing calls another module's private names of ours.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import mcp_taskqueue
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.tools import run_off_loop
from mcp_taskqueue.store import open_store
from tests.postgres import PostgresServer

PACKAGE = Path(mcp_taskqueue.__file__).parent
SQLITE_NAMES = ("sqlite3", "data_version", "integrity_check", "store.path", "INLINE_CALLS", "fail_fast")


def test_server_names_no_sqlite() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {name}"
        for path in sorted((PACKAGE / "server").glob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        for name in SQLITE_NAMES
        if name in line
    ]
    assert found == []


def test_queue_imports_no_module_built_on_it() -> None:
    code = (
        "import sys, mcp_taskqueue.queue; "
        "print(sorted(m for m in sys.modules if m in ('mcp_taskqueue.workflows', 'mcp_taskqueue.development')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    for name in ("workflows.py", "development.py"):
        assert "TYPE_CHECKING" not in (PACKAGE / name).read_text(encoding="utf-8"), name


def test_no_calls_of_another_objects_private_names() -> None:
    """`x._name` only on self/cls (or on the SDK's objects, which are not ours: `mcp._...`)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", "mcp", "command"))
                and not (isinstance(node.value, ast.Attribute) and node.value.attr == "__class__")
            ):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: .{node.attr}")
    assert found == []


@pytest.mark.anyio
async def test_the_store_says_how_a_call_runs(tmp_path: Path, pg_server: PostgresServer) -> None:
    """A call marked `@short_call` is offered to the store: SQLite runs it on the event loop's own
    thread, PostgreSQL (every call waits on the network) declines and it goes to a worker thread,
    as does any unmarked call on either (seen through the queue's clock: it runs where the call runs)."""
    url = pg_server.new_database()
    for target, short_inline in ((tmp_path / "q.db", True), (url, False)):
        seen: list[int] = []

        def clock(seen: list[int] = seen) -> float:
            seen.append(threading.get_ident())
            return time.time()

        store = open_store(target)
        try:
            queue = TaskQueue(store, clock=clock)
            task = queue.create({"title": "t"})
            loop_thread = threading.get_ident()
            seen.clear()
            await run_off_loop(queue.get, task.id)
            assert seen and all((t == loop_thread) == short_inline for t in seen), target
            seen.clear()
            await run_off_loop(queue.stats)
            assert seen and all(t != loop_thread for t in seen), target
        finally:
            store.close()
    pg_server.drop_database(url)

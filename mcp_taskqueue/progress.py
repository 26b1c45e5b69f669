"""Progress of long operations, reported without threading a callback through every layer.

Code doing long work (a batch insert, a workflow) calls `report(done, total)` now and then; it
costs a context-variable read when nobody listens. Whoever wants to hear (the MCP server for a
client that sent a progress token) wraps the call in `listening(callback)`. Context variables
follow the call into worker threads (anyio copies them), so the callback sees reports made there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

ProgressCallback = Callable[[int, int], None]
_listener: ContextVar[ProgressCallback | None] = ContextVar("mcp_taskqueue_progress", default=None)
EVERY = 100  # items between reports in loops over items


def report(done: int, total: int) -> None:
    """Tell the current listener (if any) that `done` of `total` items are through."""
    listener = _listener.get()
    if listener is not None:
        listener(done, total)


@contextmanager
def listening(callback: ProgressCallback) -> Iterator[None]:
    """Route `report` calls made inside this block (and threads it starts via anyio) to `callback`."""
    token = _listener.set(callback)
    try:
        yield
    finally:
        _listener.reset(token)

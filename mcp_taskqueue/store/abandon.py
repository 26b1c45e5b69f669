"""Work whose caller has gone is rolled back, not committed: the cancellation rule of every engine.

A server runs a store call in a worker thread. When the client cancels the call
(`notifications/cancelled`, e.g. on its own timeout) or its connection drops, the server stops
waiting for the thread and sets the call's `gone` event; each engine checks it before it begins
and just before it commits a write transaction (`check_abandoned`), and rolls back instead. So a
claim cancelled while another connection held the write lock burns no attempt, and a cancelled
`create_tasks` creates nothing. A write that committed before the cancel arrived stays committed
(its reply is what got lost: `claim_task` with an idempotency key returns it again).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_calls = threading.local()


class Abandoned(Exception):
    """Raised instead of committing when the caller of a transaction has gone (cancelled, disconnected)."""


@contextmanager
def abandon_on(gone: threading.Event) -> Iterator[None]:
    """Roll back, rather than commit, any write transaction of this thread that ends after `gone` is set."""
    previous = getattr(_calls, "gone", None)
    _calls.gone = gone
    try:
        yield
    finally:
        _calls.gone = previous


def check_abandoned() -> None:
    """Raise `Abandoned` if this thread's caller has gone (the engine then rolls back)."""
    gone: threading.Event | None = getattr(_calls, "gone", None)
    if gone is not None and gone.is_set():
        raise Abandoned("the caller went away before this change committed; it was rolled back")

"""A bounded in-memory SSE event store, so streamable HTTP streams can be resumed.

With an event store the SDK opens each POST's SSE stream with a priming event (an id and empty
data) and a `retry:` hint, and a client that lost the stream reconnects with `Last-Event-ID` and
gets what it missed. Kept in memory and bounded (oldest events dropped first): a restart or a
very long gap means the client re-sends its request, as without resumability.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage

MAX_EVENTS = 10_000  # across every stream of the process
RETRY_MILLISECONDS = 1_000  # the reconnection delay suggested to clients


class BoundedEventStore(EventStore):
    """The last MAX_EVENTS events of every stream, in order; ids are process-unique."""

    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        self.max_events = max_events
        self._events: OrderedDict[EventId, tuple[StreamId, JSONRPCMessage | None]] = OrderedDict()
        self._ids = itertools.count(1)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = str(next(self._ids))
        self._events[event_id] = (stream_id, message)
        while len(self._events) > self.max_events:
            self._events.popitem(last=False)
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        """Send the events of `last_event_id`'s stream that came after it; None if it is forgotten."""
        found = self._events.get(last_event_id)
        if found is None:
            return None
        stream_id, after = found[0], False
        for event_id, (stream, message) in list(self._events.items()):
            if event_id == last_event_id:
                after = True
            elif after and stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id

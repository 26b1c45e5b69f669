"""Bounding what one HTTP request may cost before the SDK turns its body into Python objects.

The SDK parses a whole body into objects before any limit of ours can look at it: 3.4 MB of
`{"title": "t"}` items is 250 000 dicts (~60 MB) per request, and memory freed that way mostly
stays with the process. So a large body (over `threshold` bytes) is first read here, one at a
time, and scanned as a stream of JSON events (ijson, in C) that builds nothing: past
`MAX_JSON_VALUES` values, or past a tool argument's advertised `maxItems`/`maxLength`, the
request is refused with 413 and a JSON-RPC error naming the limit, before any work starts.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import ijson  # type: ignore[import-untyped]
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_JSON_VALUES = 200_000  # per request: a legal 500-task batch with modest payloads holds ~30 000

Schemas = Callable[[str], dict[str, Any]]  # tool name -> its advertised argument properties


def limit_of(schema: dict[str, Any], bound: str) -> int | None:
    """An argument's advertised `maxItems`/`maxLength`, also when it sits in an `anyOf` (optional arguments)."""
    found = [b[bound] for b in (schema, *schema.get("anyOf", ())) if bound in b]
    return min(found) if found else None


def scan(body: bytes, schemas: Schemas, max_values: int = MAX_JSON_VALUES) -> tuple[Any, str | None]:
    """(the request id if seen, the first limit the body breaks or None), reading it as a stream.

    Depth 1 is the JSON-RPC message, 2 its params, 3 a tools/call's arguments; an argument's
    items sit at depth 4 (a list) and its length is checked as it grows.
    """
    values = 0
    keys: list[str | None] = []  # the key under which each open container sits
    path: list[str | None] = []  # the current key at each open map
    request_id: Any = None
    properties: dict[str, Any] = {}
    count = 0  # items of the current list argument
    try:
        for event, value in ijson.basic_parse(io.BytesIO(body), use_float=True):
            if event == "map_key":
                path[-1] = value
                continue
            if event in ("end_map", "end_array"):
                path.pop()
                keys.pop()
                continue
            values += 1
            if values > max_values:
                return request_id, f"the request holds more than {max_values} JSON values"
            depth = len(path)
            where = path[-1] if path else None
            if depth == 1 and where == "id":
                request_id = value
            elif depth == 2 and keys[-1] == "params" and where == "name" and isinstance(value, str):
                properties = schemas(value)
            elif depth == 3 and keys[-1] == "arguments" and isinstance(value, str) and where is not None:
                limit = limit_of(properties.get(where, {}), "maxLength")
                if limit is not None and len(value) > limit:
                    return request_id, f"{where}: at most {limit} characters (got {len(value)})"
            elif depth == 4 and keys[-2] == "arguments" and keys[-1] is not None:
                count += 1
                limit = limit_of(properties.get(keys[-1], {}), "maxItems")
                if limit is not None and count > limit:
                    return request_id, f"{keys[-1]}: at most {limit} items (got more)"
            if event in ("start_map", "start_array"):
                keys.append(where)
                path.append(None)
                if depth == 3:
                    count = 0
    except ijson.JSONError:
        return request_id, None  # not JSON: the SDK answers that with its own parse error
    return request_id, None


class RequestBudget:
    """ASGI middleware: large POST bodies are read and scanned, one at a time, before the app sees them.

    Only the reading and scanning take turns; once a body passes, the app serves it as usual (a
    long-lived POST, such as a `subscriptions/listen` stream, holds nothing here).
    """

    def __init__(self, app: ASGIApp, schemas: Schemas, max_body: int, threshold: int = 256 * 1024) -> None:
        self.app = app
        self.schemas = schemas
        self.max_body = max_body
        self.threshold = threshold
        self.limiter = anyio.CapacityLimiter(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) <= self.threshold:
            await self.app(scope, receive, send)
            return
        async with self.limiter:  # reading and scanning only: the app's own work runs concurrently
            body = bytearray()
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                body.extend(message.get("body", b""))
                more = message.get("more_body", False)
                if len(body) > self.max_body:
                    await Response("Request body too large", status_code=413)(scope, receive, send)
                    return
            request_id, reason = await anyio.to_thread.run_sync(scan, bytes(body), self.schemas)
        if reason is not None:
            error = {"code": -32602, "message": f"validation_failed: {reason}; nothing was done"}
            payload = json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()
            await Response(payload, status_code=413, media_type="application/json")(scope, receive, send)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

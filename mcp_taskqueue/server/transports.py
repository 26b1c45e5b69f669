"""Serving the MCP server: stdio, or streamable HTTP at /mcp and SSE at /sse in one process.

HTTP limits (docs/reliability.md): request bodies up to `MAX_REQUEST_BYTES` (the largest legal
call), at most `max_sessions` open sessions, at most `sessions_per_peer` from one client address,
and a session with no request in flight for `session_idle_timeout` seconds is closed and freed.
`/healthz` says the process is up without touching the store; `/readyz` says the store answers
and takes writes.

DNS-rebinding defence on every bind address (`transport_security`): a request's `Host` must name
loopback, the address bound, this machine's name (on an all-interfaces bind) or an
`--allowed-hosts` name, and a browser's `Origin` must be one of those or an `--allowed-origins`
one; else 421 / 403. The probes (/healthz, /readyz, /metrics) are exempt: orchestrators call them
by the pod's address.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import ijson  # type: ignore[import-untyped]
import mcp_types as types
from mcp.server import MCPServer
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.message import SessionMessage
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_taskqueue import __version__
from mcp_taskqueue.logs import json_logging
from mcp_taskqueue.models import MAX_REQUEST_BYTES, invalid_text
from mcp_taskqueue.server.board_routes import add_board_routes
from mcp_taskqueue.server.body_limits import RequestBudget, Schemas
from mcp_taskqueue.server.event_store import RETRY_MILLISECONDS, BoundedEventStore
from mcp_taskqueue.server.service import install_http, wrap_app

log = logging.getLogger("mcp_taskqueue")

# /readyz gets threads of its own: a crowd of writers waiting for a lock must not hold up the answer.
_readiness_threads = anyio.CapacityLimiter(2)


class StartupError(Exception):
    """The server cannot start; the message is one line naming what and what to do."""


@dataclass(frozen=True)
class HttpLimits:
    """Bounds on what HTTP clients can make the server hold (sessions, bodies)."""

    max_sessions: int = 1000
    session_idle_timeout: float = 300.0  # seconds without a request in flight before a session is closed
    sessions_per_peer: int = 100
    max_body_bytes: int = MAX_REQUEST_BYTES


def add_health_routes(mcp: MCPServer) -> None:
    """/healthz: the process answers (no store access). /readyz: the store answers and takes writes."""

    @mcp.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator]
    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    @mcp.custom_route("/readyz", methods=["GET"])  # type: ignore[untyped-decorator]
    async def readyz(_request: Request) -> Response:
        store = mcp.queue.store  # type: ignore[attr-defined]
        health = await anyio.to_thread.run_sync(store.health, limiter=_readiness_threads)
        if health.ready:
            return JSONResponse({"status": "ready", "version": __version__})
        body = {"status": "not_ready", "error": health.kind, "reason": health.reason, "version": __version__}
        return JSONResponse(body, status_code=503)


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # called by address, never by a browser


def _with_any_port(name: str) -> list[str]:
    """A Host entry as given (when it names a port) or with any port (`name`, `name:*`)."""
    has_port = name.rsplit(":", 1)[-1].isdigit() and not name.endswith("]") and name.count(":") <= 1
    return [name] if has_port or name.endswith("]:*") else [name, f"{name}:*"]


def transport_security(
    host: str, allowed_hosts: list[str] | None = None, allowed_origins: list[str] | None = None
) -> TransportSecuritySettings:
    """The DNS-rebinding defence for any bind address: the Host header must name loopback, the
    address bound (unless it is a wildcard; then this machine's name), or one of `allowed_hosts`;
    an Origin must be loopback, one of those names, or one of `allowed_origins`. The SDK turns the
    check on only for loopback binds: a server on 0.0.0.0 would otherwise answer `Host: evil.example`."""
    names = [*LOOPBACK_HOSTS, *(allowed_hosts or [])]
    if host in WILDCARD_BINDS:
        names.append(socket.gethostname())
    elif host.strip("[]") not in ("127.0.0.1", "localhost", "::1"):
        names.append(f"[{host}]" if ":" in host and not host.startswith("[") else host)
    hosts = [entry for name in dict.fromkeys(names) for entry in _with_any_port(name)]
    origins: list[str] = []
    for name in dict.fromkeys(names):
        bare = name.rsplit(":", 1)[0] if name.rsplit(":", 1)[-1].isdigit() and not name.endswith("]") else name
        origins += [f"{scheme}://{bare}{port}" for scheme in ("http", "https") for port in ("", ":*")]
    for origin in allowed_origins or []:
        origins += [origin.rstrip("/"), f"{origin.rstrip('/')}:*"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=list(dict.fromkeys(origins))
    )


class HostOriginCheck:
    """ASGI middleware: the SDK's Host/Origin check (`TransportSecurityMiddleware`) on every route
    but the probes, so the board and its actions have the same DNS-rebinding defence as /mcp."""

    def __init__(self, app: ASGIApp, settings: TransportSecuritySettings) -> None:
        self.app = app
        self.check = TransportSecurityMiddleware(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") not in PROBE_PATHS:
            refusal = await self.check.validate_request(Request(scope), is_post=False)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def request_id_of(body: bytes) -> Any:
    """The id of a JSON-RPC request in `body` (None for a notification, a response or not JSON),
    read as a stream so a large body builds no objects."""
    found: dict[str, Any] = {}
    try:
        for prefix, event, value in ijson.parse(io.BytesIO(body)):
            if prefix in ("id", "method") and event in ("string", "number"):
                found[prefix] = value
                if len(found) == 2:
                    break
            elif prefix == "" and event == "start_array":
                return None  # a batch: not answered on one stream, not tracked
    except ijson.JSONError:
        return None
    return found.get("id") if "method" in found else None


class CancelOnDisconnect:
    """ASGI middleware: a streamable-HTTP request whose client drops the connection before the reply
    is abandoned like a cancelled one, so its uncommitted work is rolled back (store/abandon.py).

    The SDK keeps such a request running so a client may resume its stream (Last-Event-ID). Here
    a dropped POST sends the session a `notifications/cancelled` for it, through the same app with
    the same headers (session, credentials); a client that resumes then reads "Request cancelled"
    and retries, with `idempotency_key` where a retry must not repeat work.
    """

    def __init__(self, app: ASGIApp, path: str = "/mcp") -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        request_id = request_id_of(body)
        state = {"dropped": False, "finished": False}

        async def watch_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not state["finished"]:
                state["dropped"] = True
            return message

        async def watch_send(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                state["finished"] = True
            await send(message)

        replayed = _replay([{"type": "http.request", "body": body, "more_body": False}], watch_receive)
        try:
            await self.app(scope, replayed, watch_send)
        finally:
            if state["dropped"] and not state["finished"] and request_id is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await self.cancel(scope, request_id)

    async def cancel(self, scope: Scope, request_id: Any) -> None:
        """Tell the session the request is cancelled, as its client would have (`notifications/cancelled`)."""
        note = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": "the client's connection dropped"},
        }
        body = json.dumps(note).encode()
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-length", b"accept")]
        headers += [(b"content-length", str(len(body)).encode()), (b"accept", b"application/json, text/event-stream")]
        inner = {**scope, "headers": headers}

        async def discard(_message: Message) -> None:
            return None

        try:
            await self.app(inner, _replay([{"type": "http.request", "body": body, "more_body": False}], None), discard)
        except Exception:  # a session already gone: nothing is left to cancel
            log.debug("cancelling request %r of a dropped connection failed", request_id, exc_info=True)
        log.info("request %r cancelled: its client's connection dropped", request_id)


def _replay(messages: list[Message], then: Receive | None) -> Receive:
    """A `receive` that hands out `messages` first, then defers to `then` (None: reports a disconnect)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is None:
            return {"type": "http.disconnect"}
        return await then()

    return receive


@dataclass
class _Session:
    peer: str
    in_flight: int = 0
    last_seen: float = field(default_factory=time.monotonic)


class PeerSessionLimit:
    """ASGI middleware: at most `limit` open streamable-HTTP sessions per client address.

    It follows sessions the way the SDK's session manager does: a session is open from the
    response that hands out its `mcp-session-id` until a DELETE, a 404 for it, or
    `idle_timeout` seconds with no request in flight (when the SDK closes it too).
    """

    def __init__(self, app: ASGIApp, limit: int, idle_timeout: float, max_streams: int, path: str = "/mcp") -> None:
        self.app = app
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.max_streams = max_streams
        self.path = path
        self.sessions: dict[str, _Session] = {}
        self.streams: dict[str, int] = {}  # open SSE streams (/sse) per client address

    def refusal(self, what: str, hint: str) -> JSONResponse:
        log.warning("refusing %s", what)
        error = {"code": -32000, "message": f"Too many open sessions {what}; {hint}"}
        return JSONResponse(
            {"jsonrpc": "2.0", "id": None, "error": error},
            status_code=503,
            headers={"Retry-After": str(max(1, int(self.idle_timeout)))},
        )

    async def sse_stream(self, peer: str, scope: Scope, receive: Receive, send: Send) -> None:
        """An SSE session lives as long as its GET /sse stream: count those per address and in all."""
        if self.streams.get(peer, 0) >= self.limit or sum(self.streams.values()) >= self.max_streams:
            count = self.streams.get(peer, 0)
            await self.refusal(f"from {peer} ({count} SSE streams)", "close unused connections")(scope, receive, send)
            return
        self.streams[peer] = self.streams.get(peer, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.streams[peer] -= 1
            if not self.streams[peer]:
                del self.streams[peer]

    def open_sessions(self, peer: str) -> int:
        now = time.monotonic()
        expired = [
            sid for sid, s in self.sessions.items() if s.in_flight == 0 and now - s.last_seen > self.idle_timeout
        ]
        for sid in expired:
            del self.sessions[sid]
        return sum(1 for s in self.sessions.values() if s.peer == peer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"].rstrip("/") if scope["type"] == "http" else ""
        peer = (scope.get("client") or ("unknown", 0))[0]
        if path == "/sse" and scope["method"] == "GET":
            await self.sse_stream(peer, scope, receive, send)
            return
        if path != self.path:
            await self.app(scope, receive, send)
            return
        sid = Headers(scope=scope).get("mcp-session-id")
        session = self.sessions.get(sid) if sid else None
        if sid is None and scope["method"] == "POST" and self.open_sessions(peer) >= self.limit:
            hint = f"close unused sessions (DELETE /mcp) or wait {self.idle_timeout:g} s for idle ones to expire"
            await self.refusal(f"from {peer} ({self.limit})", hint)(scope, receive, send)
            return
        status = 0
        opened: _Session | None = None

        async def watch(message: Message) -> None:
            nonlocal status, opened
            if message["type"] == "http.response.start":
                status = message["status"]
                new_sid = Headers(raw=message.get("headers", [])).get("mcp-session-id")
                # Only a session the SDK kept: it names one in its 400s too (e.g. a non-initialize
                # request without a session), then forgets it; counting those would lock the peer out.
                if sid is None and new_sid and new_sid not in self.sessions and 200 <= status < 300:
                    opened = self.sessions[new_sid] = _Session(peer, in_flight=1)
            await send(message)

        if session is not None:
            session.in_flight += 1
        try:
            await self.app(scope, receive, watch)
        finally:
            tracked = session or opened
            if tracked is not None:
                tracked.in_flight = max(0, tracked.in_flight - 1)
                tracked.last_seen = time.monotonic()
            if sid and (status == 404 or (scope["method"] == "DELETE" and 200 <= status < 300)):
                self.sessions.pop(sid, None)


def http_app(
    mcp: MCPServer,
    *,
    host: str = "127.0.0.1",
    sse: bool = True,
    streamable: bool = True,
    limits: HttpLimits | None = None,
    allowed_hosts: list[str] | None = None,
    allowed_origins: list[str] | None = None,
) -> Starlette:
    """One Starlette app: streamable HTTP at /mcp, SSE at /sse (+ /messages/), /healthz, /readyz, the board at /,
    /metrics (server/service.py adds it, with auth, rate limits and request metrics when configured).
    Host and Origin are checked on every bind address (`transport_security`)."""
    limits = limits or HttpLimits()
    security = transport_security(host, allowed_hosts, allowed_origins)
    schemas: Schemas = getattr(mcp, "argument_schemas", lambda _name: {})
    add_health_routes(mcp)
    add_board_routes(mcp)
    install_http(mcp)
    if not streamable:
        app = mcp.sse_app(host=host, max_request_body_size=limits.max_body_bytes, transport_security=security)
    else:
        app = mcp.streamable_http_app(
            host=host,
            transport_security=security,
            # An event store makes POST streams resumable: a priming event with an id, a retry: hint.
            event_store=BoundedEventStore(),
            retry_interval=RETRY_MILLISECONDS,
            max_request_body_size=limits.max_body_bytes,
            max_sessions=limits.max_sessions,
            session_idle_timeout=limits.session_idle_timeout,
        )
        if sse:
            sse_app = mcp.sse_app(host=host, max_request_body_size=limits.max_body_bytes, transport_security=security)
            have = {getattr(r, "path", None) for r in app.routes}  # our custom routes are in both apps
            app.router.routes.extend(r for r in sse_app.routes if getattr(r, "path", None) not in have)
    app.add_middleware(CancelOnDisconnect)
    app.add_middleware(
        PeerSessionLimit,
        limit=limits.sessions_per_peer,
        idle_timeout=limits.session_idle_timeout,
        max_streams=limits.max_sessions,
    )
    app.add_middleware(RequestBudget, schemas=schemas, max_body=limits.max_body_bytes)
    app.add_middleware(HostOriginCheck, settings=security)
    return wrap_app(mcp, app)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0: any free port), or StartupError naming the address and what to do."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}; check --host") from None
    # IPv4 first, as uvicorn does for 'localhost'.
    family, kind, proto, _, address = sorted(infos, key=lambda info: info[0] != socket.AF_INET)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = (
            "another process is listening there (another mcp-taskqueue?); stop it or choose another --port"
            if exc.errno == errno.EADDRINUSE
            else "check --host and --port"
        )
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}; {hint}") from None
    sock.set_inheritable(True)
    return sock


def unparsable_reply(line: str) -> types.JSONRPCError | None:
    """The error a line the SDK cannot parse deserves (None when it parses, or needs no answer).

    The SDK's stdio reader drops such lines silently and the client waits for its own timeout. Not
    JSON is -32700; JSON whose text holds a lone surrogate (JavaScript's half of an emoji) gets
    -32602 `validation_failed` with the request's own id, so the client can match it.
    """
    if not line.strip():
        return None
    try:
        types.jsonrpc_message_adapter.validate_json(line, by_name=False)
        return None
    except ValueError:
        pass
    try:
        data: Any = json.loads(line)
    except ValueError as exc:
        return types.JSONRPCError(
            jsonrpc="2.0", id=None, error=types.ErrorData(code=types.PARSE_ERROR, message=f"Parse error: {exc}")
        )
    request_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(request_id, (int, str)) or isinstance(request_id, bool):
        request_id = None
    if isinstance(data, dict) and "method" in data and request_id is None and "id" not in data:
        return None  # a notification: no reply is expected, and none can be matched
    bad = invalid_text(data)
    if bad is not None:
        message = f"validation_failed: {bad}: text is not valid Unicode (a lone surrogate); send well-formed UTF-8"
        error = types.ErrorData(code=types.INVALID_PARAMS, message=message)
    else:
        error = types.ErrorData(code=types.INVALID_REQUEST, message="Invalid Request: not a JSON-RPC 2.0 message")
    return types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error)


class AnsweringLines:
    """stdin's lines for the SDK's stdio reader, minus those it could not parse: each of those is
    answered here (through the transport's own writer) instead of vanishing."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.write_stream: Any = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        async for line in self.source:
            reply = unparsable_reply(line)
            if reply is None:
                yield line
            elif self.write_stream is not None:
                log.info("answered an unparsable stdio message with %s", reply.error.code)
                await self.write_stream.send(SessionMessage(reply))


async def run_stdio(mcp: MCPServer) -> None:
    """`mcp.run("stdio")`, except that every message gets an answer (see `unparsable_reply`)."""
    raw = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    lines = AnsweringLines(anyio.wrap_file(raw))
    async with stdio_server(stdin=lines) as (read_stream, write_stream):  # type: ignore[arg-type]
        lines.write_stream = write_stream
        server = mcp._lowlevel_server
        await server.run(read_stream, write_stream, server.create_initialization_options())


def serve(
    mcp: MCPServer,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
    limits: HttpLimits | None = None,
    *,
    allowed_hosts: list[str] | None = None,
    allowed_origins: list[str] | None = None,
) -> None:
    """Run until interrupted. In stdio mode only protocol messages reach stdout."""
    if transport == "stdio":
        anyio.run(run_stdio, mcp)
        return
    import uvicorn

    if host in WILDCARD_BINDS:
        log.warning(
            "serving on all interfaces (%s): every network this machine is on can reach the queue. Requests "
            "whose Host or Origin names anything but loopback, %s or --allowed-hosts/--allowed-origins are "
            "refused (DNS-rebinding defence); put the public name in --allowed-hosts",
            host or "*",
            socket.gethostname(),
            extra={"event": "all_interfaces"},
        )
    app = http_app(
        mcp,
        host=host,
        sse=True,
        streamable=transport == "http",
        limits=limits,
        allowed_hosts=allowed_hosts,
        allowed_origins=allowed_origins,
    )
    sock = bind(host, port)  # before the banner: the banner names a port we hold
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    bound_port = int(sock.getsockname()[1])
    db = mcp.queue.store.description  # type: ignore[attr-defined]

    async def run() -> None:
        # The banner once the server answers: a user who reads it can connect right away.
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: server.serve(sockets=[sock]))
            while not server.started:
                if server.should_exit:
                    return
                await anyio.sleep(0.05)
            if json_logging():  # machines read JSON logs: one record instead of the banner for people
                # at WARNING so it shows at the default level: scripts read the bound port from it (--port 0)
                log.warning(
                    "mcp-taskqueue %s listening on http://%s:%s",
                    __version__,
                    reachable_host(host),
                    bound_port,
                    extra={"event": "listening"},
                )
            else:
                print_banner(transport, host, bound_port, db)
            # The board's live feeds never end by themselves: end them once asked to stop (SIGTERM),
            # or uvicorn's graceful shutdown waits until every open board page goes away.
            while not server.should_exit:
                await anyio.sleep(0.1)
            feed = getattr(mcp, "board_feed", None)
            if feed is not None:
                feed.close()

    try:
        anyio.run(run)
    finally:
        sock.close()


def reachable_host(host: str) -> str:
    """A host a client can connect to: a wildcard address becomes loopback; IPv6 is bracketed."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def print_banner(transport: str, host: str, port: int, db: str) -> None:
    """What is listening where, and how to connect (to stderr, once the server is up)."""
    base = f"http://{reachable_host(host)}:{port}"
    lines = [f"mcp-taskqueue {__version__} listening on {base}", f"  store:           {db}"]
    if host in ("", "0.0.0.0", "::"):
        lines.append(f"  other machines:  http://{socket.gethostname()}:{port} (listening on every interface)")
    desktop = json.dumps({"mcpServers": {"taskqueue": {"command": "mcp-taskqueue", "args": ["serve", "--db", db]}}})
    if transport == "http":
        lines += [
            f"  streamable HTTP: {base}/mcp",
            f"  SSE:             {base}/sse",
            f"  health:          {base}/healthz (process up), {base}/readyz (store answers)",
            f"  board:           {base}/",
            "",
            "Connect:",
            f"  Claude Code:    claude mcp add --transport http taskqueue {base}/mcp",
            f"  MCP Inspector:  npx @modelcontextprotocol/inspector --cli {base}/mcp --transport http --method tools/list",
            f"  Claude Desktop: add to claude_desktop_config.json (stdio, same store): {desktop}",
        ]
    else:
        lines += [f"  SSE: {base}/sse", f"  health: {base}/healthz, {base}/readyz"]
    print("\n".join(lines), file=sys.stderr, flush=True)

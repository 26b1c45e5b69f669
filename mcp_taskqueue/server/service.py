"""What turns the MCP server into a team service: auth, rate limits, metrics, logs and tracing.

`ServiceOptions` says what to switch on (from config.py or the serve command); `auth_kwargs`
gives `MCPServer` its SDK auth settings, `install_middleware` adds our server middleware
(Observer outermost, then Guard) and `install_http` the /metrics route and ASGI middleware.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from mcp.server import MCPServer
from mcp.server.auth.settings import AuthSettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mcp_taskqueue.identity import SCOPES, Tokens
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.auth import (
    Guard,
    JwtTokenVerifier,
    OAuthSettings,
    StoreTokenVerifier,
    board_access,
    identity_of,
    require_scope,
)
from mcp_taskqueue.server.metrics import HTTPMetrics, Metrics, Observer
from mcp_taskqueue.server.ratelimit import HTTPRateLimit, RateLimiter, RatePolicy

log = logging.getLogger("mcp_taskqueue")

AuthMode = Literal["auto", "none", "tokens", "oauth"]
PRM_PATH = "/.well-known/oauth-protected-resource"


class StartupRefused(Exception):
    """The server must not start as configured (the message says why and what to do)."""


@dataclass
class ServiceOptions:
    """How an HTTP server is exposed. The defaults are `make run`'s: loopback, no auth, no limits."""

    auth: AuthMode = "none"
    oauth: OAuthSettings | None = None
    base_url: str = "http://127.0.0.1:8765"
    rates: RatePolicy = field(default_factory=RatePolicy)
    metrics: bool = True
    metrics_public: bool = False

    @property
    def auth_required(self) -> bool:
        return self.auth in ("tokens", "oauth")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_auth(mode: AuthMode, host: str, no_auth: bool, tokens: Tokens, oauth: OAuthSettings | None) -> AuthMode:
    """The auth mode to serve with, or StartupRefused.

    auto: OAuth when configured; else tokens when any exist or the address is not loopback; else
    none. A non-loopback address without auth needs `--no-auth` (and then gets a warning).
    """
    if no_auth:
        if not is_loopback(host):
            log.warning(
                "serving on %s WITHOUT authentication (--no-auth): anyone who reaches the port can do anything",
                host,
                extra={"event": "auth_disabled"},
            )
        return "none"
    if mode == "auto":
        mode = "oauth" if oauth is not None else "tokens" if tokens.active_count() or not is_loopback(host) else "none"
    if mode == "oauth" and oauth is None:
        raise StartupRefused("auth mode oauth needs [auth.oauth] issuer, audience, resource and jwks_url or jwks_file")
    if mode == "none" and not is_loopback(host):
        raise StartupRefused(
            f"refusing to serve on {host} without authentication; create a token "
            "(mcp-taskqueue token create --name NAME --scopes read,write,claim) or pass --no-auth"
        )
    if mode == "tokens" and not is_loopback(host) and tokens.active_count() == 0:
        raise StartupRefused(
            f"serving on {host} needs a token and there is none; create one with "
            "mcp-taskqueue token create --name NAME --scopes read,write,claim (or pass --no-auth)"
        )
    return mode


def auth_kwargs(options: ServiceOptions | None, queue: TaskQueue) -> dict[str, Any]:
    """`token_verifier` and `auth` for MCPServer(...), or nothing when auth is off."""
    if options is None or not options.auth_required:
        return {}
    if options.auth == "oauth":
        assert options.oauth is not None
        verifier: Any = JwtTokenVerifier(options.oauth)
        settings = AuthSettings(
            issuer_url=options.oauth.issuer,  # type: ignore[arg-type]  # validated (path kept as spelt)
            resource_server_url=options.oauth.resource,  # type: ignore[arg-type]
            validate_token_resource=False,  # the verifier checks `aud` itself
            required_scopes=None,
        )
    else:
        verifier = StoreTokenVerifier(Tokens(queue.store))
        settings = AuthSettings(issuer_url=options.base_url, resource_server_url=None)  # type: ignore[arg-type]
    return {"token_verifier": verifier, "auth": settings}


def install_middleware(mcp: MCPServer, queue: TaskQueue, options: ServiceOptions | None) -> None:
    """Observer (logs, metrics) outermost, then the Guard (identity, scopes, projects, rate limits)."""
    metrics = None
    limiter = None
    if options is not None:
        limiter = RateLimiter(options.rates) if options.rates.enabled else None
        if options.metrics:
            watcher = getattr(mcp, "watcher", None)
            metrics = Metrics(
                queue,
                rejected=(lambda: dict(limiter.rejected)) if limiter is not None else dict,
                feed_age=getattr(watcher, "seconds_since_poll", lambda: None),
            )
    auth_required = options is not None and options.auth_required
    mcp.middleware.extend(
        [Observer(metrics), Guard(mcp, queue, auth_required=auth_required, limiter=limiter)]  # type: ignore[list-item]
    )
    mcp.service = (options, metrics, limiter)  # type: ignore[attr-defined]
    if auth_required:  # the board's HTTP routes ask this hook (server/board_routes.py)
        mcp.board_access = board_access(auth_required)  # type: ignore[attr-defined]


def install_http(mcp: MCPServer) -> None:
    """The /metrics route (before the app is built)."""
    options, metrics, _ = getattr(mcp, "service", (None, None, None))
    if metrics is None:
        return
    auth_required = options is not None and options.auth_required and not options.metrics_public

    async def metrics_route(request: Request) -> Response:
        # the metrics count tasks of every project: not for a project-limited token
        refused = require_scope(request, "read", auth_required, every_project=True) if auth_required else None
        return refused or await metrics.endpoint(request)

    mcp.custom_route("/metrics", methods=["GET"])(metrics_route)


def wrap_app(mcp: MCPServer, app: Starlette) -> Starlette:
    """ASGI middleware around the built app: request metrics outermost, the HTTP rate limit
    inside the SDK's authentication (so it knows the caller), and the OAuth metadata routes."""
    options, metrics, limiter = getattr(mcp, "service", (None, None, None))
    if options is None:
        return app
    auth_required = options.auth_required
    if limiter is not None:
        app.user_middleware.append(
            Middleware(
                HTTPRateLimit,
                limiter=limiter,
                identify=lambda scope: identity_of(Request(scope), auth_required),
            )
        )
    if metrics is not None:
        app.user_middleware.insert(0, Middleware(HTTPMetrics, metrics=metrics))
    if options.auth == "oauth" and options.oauth is not None:
        from mcp.server.auth.routes import create_protected_resource_routes

        auth = mcp.settings.auth  # its URLs keep their exact spelling (RFC 8414 compares issuers as strings)
        assert auth is not None and auth.resource_server_url is not None
        prm = create_protected_resource_routes(
            resource_url=auth.resource_server_url,
            authorization_servers=[auth.issuer_url],
            scopes_supported=list(SCOPES),
            resource_name="mcp-taskqueue",
        )
        # ours (with scopes_supported) first; also at the bare well-known path for clients that look there
        app.router.routes[:0] = [*prm, *(Route(PRM_PATH, r.endpoint, methods=["GET", "OPTIONS"]) for r in prm)]
    return app

"""Rate limits: one token bucket per identity and kind of call, with burst.

Three buckets per caller: `http` (every HTTP request; over budget the answer is 429 with
`Retry-After`, `RateLimit` and `RateLimit-Policy` headers), `read` (read-only tool calls) and
`write` (every other tool call; over budget the tool answers `rate_limited: ... try again in
N s`). Reads and writes are separate budgets, so an agent that spent its writes can still look.
The caller is its token's name, or its address when anonymous (loopback servers only).
Limits come from config (`[rate_limits]`), with overrides per scope and per token name; an
unset limit is no limit. Buckets live in this process's memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_taskqueue.identity import Identity

BUCKETS = ("http", "read", "write")
MAX_TRACKED = 10_000  # callers remembered at once; idle full buckets are forgotten first
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass(frozen=True)
class Limit:
    """`rate` tokens per second refill a bucket of `burst` tokens; each call takes one."""

    rate: float
    burst: int

    def describe(self) -> str:
        return f"{self.rate:g}/s, burst {self.burst}"

    @property
    def window(self) -> int:
        """Seconds to refill an empty bucket: the policy's window."""
        return max(1, math.ceil(self.burst / self.rate))


@dataclass
class Decision:
    allowed: bool
    limit: Limit
    remaining: int
    wait: float  # seconds until one token is back (0 when allowed)

    def headers(self, bucket: str) -> dict[str, str]:
        """IETF draft RateLimit headers (draft-ietf-httpapi-ratelimit-headers) plus Retry-After."""
        reset = max(0, math.ceil(self.wait))
        out = {
            "RateLimit-Policy": f'"{bucket}";q={self.limit.burst};w={self.limit.window}',
            "RateLimit": f'"{bucket}";r={self.remaining};t={reset}',
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, reset))
        return out


@dataclass
class RatePolicy:
    """Limits by bucket, then overrides by scope (the most generous of a caller's scopes wins)
    and by token name (wins over everything)."""

    default: dict[str, Limit] = field(default_factory=dict)
    scopes: dict[str, dict[str, Limit]] = field(default_factory=dict)
    tokens: dict[str, dict[str, Limit]] = field(default_factory=dict)

    def limit_for(self, identity: Identity, bucket: str) -> Limit | None:
        if identity.authenticated and bucket in self.tokens.get(identity.name, {}):
            return self.tokens[identity.name][bucket]
        by_scope = [
            limits[bucket] for scope, limits in self.scopes.items() if scope in identity.scopes and bucket in limits
        ]
        if by_scope:
            return max(by_scope, key=lambda lim: (lim.rate, lim.burst))
        return self.default.get(bucket)

    @property
    def enabled(self) -> bool:
        return bool(self.default or self.scopes or self.tokens)


class RateLimiter:
    """Token buckets keyed by (caller, bucket). Not thread-safe: used from the event loop only."""

    def __init__(self, policy: RatePolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # -> (tokens, at)
        self.rejected: dict[str, int] = dict.fromkeys(BUCKETS, 0)

    def take(self, identity: Identity, bucket: str) -> Decision:
        """Take one token from the caller's bucket, or say how long until one is back."""
        limit = self.policy.limit_for(identity, bucket)
        if limit is None:
            return Decision(True, Limit(math.inf, 0), 0, 0.0)
        now = self.clock()
        key = (identity.rate_key, bucket)
        tokens, at = self._buckets.get(key, (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + (now - at) * limit.rate)
        if tokens >= 1:
            self._remember(key, tokens - 1, now)
            return Decision(True, limit, int(tokens - 1), 0.0)
        self._remember(key, tokens, now)
        self.rejected[bucket] = self.rejected.get(bucket, 0) + 1
        return Decision(False, limit, 0, (1 - tokens) / limit.rate)

    def _remember(self, key: tuple[str, str], tokens: float, now: float) -> None:
        if len(self._buckets) >= MAX_TRACKED and key not in self._buckets:
            # forget the callers idle longest; their buckets would have refilled anyway
            for old in sorted(self._buckets, key=lambda k: self._buckets[k][1])[: MAX_TRACKED // 10]:
                del self._buckets[old]
        self._buckets[key] = (tokens, now)


def parse_limit(value: Any, where: str) -> Limit:
    """'10/s', '600/m' (burst: the count) or {rate, burst} (burst default: one second's worth) -> Limit."""
    per = {"s": 1.0, "m": 60.0, "h": 3600.0}
    if isinstance(value, str) and "/" in value:
        count, _, unit = value.partition("/")
        try:
            rate = float(count) / per[unit.strip().lower()[:1]]
        except (ValueError, KeyError):
            raise ValueError(f"{where}: expected like '10/s', '600/m' or {{rate, burst}}, got {value!r}") from None
        if rate <= 0:
            raise ValueError(f"{where}: the rate must be > 0")
        return Limit(rate, max(1, math.ceil(float(count))))  # N per window may come at once
    if isinstance(value, Mapping) and "rate" in value:
        rate = float(value["rate"])
        burst = int(value.get("burst", max(1, math.ceil(rate))))
        if rate <= 0 or burst < 1:
            raise ValueError(f"{where}: rate must be > 0 and burst >= 1")
        return Limit(rate, burst)
    raise ValueError(f"{where}: expected like '10/s', '600/m' or {{rate, burst}}, got {value!r}")


class HTTPRateLimit:
    """ASGI middleware: the `http` bucket for every request but the probes and /metrics.

    Installed inside the SDK's authentication middleware, so `scope["user"]` already says who
    is calling.
    """

    def __init__(self, app: ASGIApp, limiter: RateLimiter, identify: Callable[[Scope], Identity | None]) -> None:
        self.app = app
        self.limiter = limiter
        self.identify = identify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        identity = self.identify(scope)
        if identity is None:  # unauthenticated on an authenticated server: the 401 comes next
            await self.app(scope, receive, send)
            return
        decision = self.limiter.take(identity, "http")
        if not decision.limit.burst:  # no limit configured
            await self.app(scope, receive, send)
            return
        headers = [(k.lower().encode(), v.encode()) for k, v in decision.headers("http").items()]
        if not decision.allowed:
            body = (
                f'{{"error":"rate_limited","error_description":"{identity.name} spent its request budget '
                f'({decision.limit.describe()}); retry in {decision.wait:.1f} s"}}'
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                    + headers,
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

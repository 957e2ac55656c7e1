"""Fixed-window rate limits ("100/minute") counted in the cache (Redis when configured), and the
headers that tell a caller where it stands.

Why not the `limits` library: it keeps its own storage and its own Redis connection, outside the
``redis`` breaker and `FallbackCache`, so a Redis outage would be a second, separate failure
path (its errors to catch here, its state invisible to /health), and its in-memory storage
reads ``time.time()`` directly, so windows could not be tested to the second without waiting.
The cache backends already count epoch-aligned windows (`Cache.incr_window`, held to one
contract on every backend), already fall back to in-process counts when Redis fails, and say
when their window ends. What was missing is only here: the RateLimit header fields and a log
line when the counts stop being shared.

The cache owns the windows: it says both the count and when its window resets, so Retry-After
is whatever the counting backend will honour.

Headers follow the IETF draft "RateLimit header fields for HTTP" in its separate-field form:
``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` (delta seconds) and
``RateLimit-Policy`` (``limit;w=window``), on every response of a limited route, 429s included
(where ``Retry-After`` equals ``RateLimit-Reset``). The gate leaves the caller's quota in the
request's state; `RateLimitHeaders`, a plain ASGI middleware, writes it on whatever response goes
out — JSON, an error, a CSV or an event stream alike.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragkit.core.errors import ConfigurationError, DependencyError, RateLimited
from ragkit.core.metrics import Metrics
from ragkit.core.types import Cache

log = logging.getLogger("ragkit.http.ratelimit")

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_PATTERN = re.compile(r"\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*", re.IGNORECASE)
QUOTA_STATE = "ragkit_quota"  # the key of the caller's `Quota` in the ASGI scope's state


@dataclass(frozen=True)
class RateLimit:
    limit: int
    window_seconds: int

    @classmethod
    def parse(cls, text: str, variable: str) -> RateLimit:
        match = _PATTERN.fullmatch(text)
        if not match or int(match.group(1)) < 1:
            raise ConfigurationError(
                f"{variable}='{text}' is not a rate such as '100/minute' (second, minute, hour, day)"
            )
        return cls(int(match.group(1)), _UNITS[match.group(2).lower()])


@dataclass(frozen=True)
class Quota:
    """Where one caller stands after one counted request."""

    rule: RateLimit
    count: int  # requests in the current window, this one included
    resets_in: float  # seconds until the window ends, on the counting backend's clock

    @property
    def exceeded(self) -> bool:
        return self.count > self.rule.limit

    @property
    def reset_seconds(self) -> int:
        # Rounded up, as these headers are whole seconds: a caller who waits exactly that long
        # must land in the next window, never a fraction of a second before it.
        return max(1, math.ceil(self.resets_in))

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.rule.limit),
            "RateLimit-Remaining": str(max(0, self.rule.limit - self.count)),
            "RateLimit-Reset": str(self.reset_seconds),
            "RateLimit-Policy": f"{self.rule.limit};w={self.rule.window_seconds}",
        }

    def refusal(self) -> RateLimited:
        return RateLimited(
            f"rate limit of {self.rule.limit} requests per {self.rule.window_seconds} s exceeded; "
            f"retry in {self.reset_seconds} s",
            retry_after=self.reset_seconds,
        )


class RateLimiter:
    def __init__(
        self,
        cache: Cache,
        user_limit: RateLimit | None,
        service_limit: RateLimit | None,
        metrics: Metrics | None = None,
    ) -> None:
        self._cache = cache
        self._metrics = metrics
        self._user = user_limit
        self._service = service_limit
        self._shared = True  # whether the last count was the shared one; logged when it changes

    async def count(self, subject: str, kind: str) -> Quota | None:
        """Count one request of ``subject``; None when no limit applies to its kind."""
        rule = self._service if kind == "service" else self._user
        if rule is None:
            return None
        try:
            hit = await self._cache.incr_window(f"{kind}:{subject}", rule.window_seconds)
        except DependencyError as exc:
            # A cache without a fallback of its own: fail open. Refusing every caller because the
            # counter is unreachable would turn a Redis outage into a service outage.
            self._note_shared(False, exc.message)
            return None
        # FallbackCache says whether that count came from Redis or from this process.
        self._note_shared(not getattr(self._cache, "degraded", False), getattr(self._cache, "last_error", None))
        quota = Quota(rule, hit.count, hit.resets_in)
        if quota.exceeded and self._metrics is not None:
            self._metrics.rate_limit_rejections.labels(kind).inc()
        return quota

    async def check(self, subject: str, kind: str) -> Quota | None:
        """Count one request and raise `RateLimited` when it is over the limit."""
        quota = await self.count(subject, kind)
        if quota is not None and quota.exceeded:
            raise quota.refusal()
        return quota

    def _note_shared(self, shared: bool, why: str | None) -> None:
        # Once per change, not per request: during an outage every request would say it again.
        if shared == self._shared:
            return
        self._shared = shared
        if shared:
            line = {"event": "rate_limits_shared", "message": "rate limits are counted in Redis again"}
            log.info(json.dumps(line))
        else:
            line = {
                "event": "rate_limits_local",
                "message": "rate limits are counted in this process only while Redis is unavailable: "
                "each replica admits the full limit on its own",
                "reason": why or "unknown",
            }
            log.warning(json.dumps(line))


class RateLimitHeaders:
    """Writes the caller's `Quota` (left in the request state by the gate) as headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The same dict `request.state` writes to, wherever the request object is made.
        state: dict[str, Any] = scope.setdefault("state", {})

        async def send_with_quota(message: Message) -> None:
            if message["type"] == "http.response.start":
                quota = state.get(QUOTA_STATE)
                if quota is not None:
                    headers = MutableHeaders(scope=message)
                    for name, value in quota.headers().items():
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_quota)

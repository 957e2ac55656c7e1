"""Fixed-window rate limits ("100/minute") counted in the cache (Redis when configured).

The cache owns the windows (`Cache.incr_window`): it says both the count and when its window
resets, so Retry-After is whatever the counting backend will honour.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ragkit.core.errors import ConfigurationError, RateLimited
from ragkit.core.types import Cache

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class RateLimit:
    limit: int
    window_seconds: int

    @classmethod
    def parse(cls, text: str, variable: str) -> RateLimit:
        match = _PATTERN.match(text)
        if not match or int(match.group(1)) < 1:
            raise ConfigurationError(
                f"{variable}='{text}' is not a rate such as '100/minute' (second, minute, hour, day)"
            )
        return cls(int(match.group(1)), _UNITS[match.group(2).lower()])


class RateLimiter:
    def __init__(self, cache: Cache, user_limit: RateLimit | None, service_limit: RateLimit | None) -> None:
        self._cache = cache
        self._user = user_limit
        self._service = service_limit

    async def check(self, subject: str, kind: str) -> None:
        rule = self._service if kind == "service" else self._user
        if rule is None:
            return
        hit = await self._cache.incr_window(f"{kind}:{subject}", rule.window_seconds)
        if hit.count > rule.limit:
            # When the backend that counted says its window ends, not a guess at its windows.
            # Rounded up to whole seconds, as Retry-After is sent: a caller who waits exactly that
            # long must land in the next window, never a fraction of a second before it.
            retry_after = math.ceil(hit.resets_in)
            raise RateLimited(
                f"rate limit of {rule.limit} requests per {rule.window_seconds} s exceeded; "
                f"retry in {retry_after:.0f} s",
                retry_after=retry_after,
            )

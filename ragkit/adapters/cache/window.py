"""The one definition of a rate-limit window, shared by every cache backend.

A window is aligned to the epoch, ``[k * seconds, (k + 1) * seconds)``, rather than opened by a
key's first hit: Redis keys its counters by ``k``, the in-process cache resets at ``end``, and a
`FallbackCache` switching between the two mid-window still agrees with itself on when the
window ends — which is what a caller is told to wait for (Retry-After).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    index: int  # k: names the window (Redis keys its counter by it)
    start: float
    end: float  # the first instant of the next window


def fixed_window(now: float, seconds: float) -> Window:
    if seconds <= 0:
        raise ValueError(f"a rate-limit window must be longer than 0 s, not {seconds}")
    index = int(now // seconds)
    return Window(index, index * seconds, (index + 1) * seconds)

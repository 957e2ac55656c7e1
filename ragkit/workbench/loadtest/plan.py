"""What a load test runs: its duration, task mix, think time, budgets and queries, parsed from the
command line with messages a person can act on."""

from __future__ import annotations

import itertools
import json
import random
import re
import threading
from collections.abc import Sequence
from pathlib import Path

from ragkit.core.errors import InvalidInput

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")
_BUDGET_VALUE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$")



# -- arguments ---------------------------------------------------------------------------------

def parse_duration(text: str) -> float:
    """Locust's run-time syntax (``60s``, ``2m``, ``1h30m``, ``90``) in seconds."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise InvalidInput(f"invalid run time {text!r}: use e.g. 60s, 2m or 1h30m")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise InvalidInput(f"the run time must be positive, got {text!r}")
    return float(total)


def parse_budget(text: str) -> tuple[str, float]:
    """``ROUTE=MS`` (``search=50``, ``search:hybrid=50ms``, ``ask=1.5s``) → (route, milliseconds)."""
    route, sep, value = text.partition("=")
    route = route.strip()
    match = _BUDGET_VALUE.match(value)
    if not sep or not route or match is None:
        raise InvalidInput(f"invalid budget {text!r}: use ROUTE=MILLISECONDS, e.g. search=50 or ask=1.5s")
    amount = float(match.group(1)) * (1000.0 if match.group(2) == "s" else 1.0)
    if amount <= 0:
        raise InvalidInput(f"a budget must be positive, got {text!r}")
    return route, amount


# The request names the locustfile reports, which --mix weighs and --budget gates.
TASK_NAMES = ("search:hybrid", "search:dense", "search:sparse", "ask", "collections", "health")


def parse_mix(spec: str) -> dict[str, float]:
    """``search:hybrid=6,ask=2`` → weights; a name without ``=W`` weighs 1."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, weight = part.partition("=")
        if name not in TASK_NAMES:
            raise InvalidInput(f"unknown task {name!r} in the mix; known: {', '.join(TASK_NAMES)}")
        try:
            weights[name] = float(weight) if weight else 1.0
        except ValueError as exc:
            raise InvalidInput(f"the weight of {name!r} in the mix must be a number, got {weight!r}") from exc
        if weights[name] < 0:
            raise InvalidInput(f"the weight of {name!r} in the mix must not be negative")
    if not any(w > 0 for w in weights.values()):
        raise InvalidInput(f"the mix {spec!r} gives no task a positive weight")
    return weights


def parse_think_time(spec: str) -> tuple[float, float]:
    """``MIN,MAX`` seconds (or one number for a constant wait)."""
    low, _, high = spec.partition(",")
    try:
        bounds = (float(low), float(high or low))
    except ValueError as exc:
        raise InvalidInput(f"the think time takes 'MIN,MAX' seconds, got {spec!r}") from exc
    if bounds[0] < 0 or bounds[1] < bounds[0]:
        raise InvalidInput(f"the think time needs 0 <= MIN <= MAX, got {spec!r}")
    return bounds


# -- queries -------------------------------------------------------------------------------------

def read_queries(path: Path) -> list[str]:
    """Query texts from a BEIR queries.jsonl (field "text") or a plain file with one per line."""
    texts: list[str] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        text = str(json.loads(line).get("text", "")).strip() if line.startswith("{") else line
        if text:
            texts.append(text)
    if not texts:
        raise InvalidInput(f"{path} holds no queries")
    return texts


def widened(text: str, variant: int) -> str:
    """``text`` with one gap between words widened: a new cache key, the same tokens.

    Variant v widens gap v % gaps to v // gaps + 2 spaces, so every variant is a distinct string.
    """
    words = text.split(" ")
    gaps = len(words) - 1
    if gaps < 1:
        return text + " " * (variant + 1)
    quotient, remainder = divmod(variant, gaps)
    words[remainder] += " " * (quotient + 1)
    return " ".join(words)


class QueryStream:
    """Queries for all users of a process from one shuffled stream: none is sent twice before all
    were sent once; after that each comes back widened (``repeat=False``) or as it was."""

    def __init__(self, texts: Sequence[str], *, repeat: bool = False, seed: int = 7) -> None:
        if not texts:
            raise InvalidInput("no queries to send")
        self._texts = list(texts)
        random.Random(seed).shuffle(self._texts)
        self._repeat = repeat
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            n = next(self._counter)
        round_, index = divmod(n, len(self._texts))
        text = self._texts[index]
        return text if round_ == 0 or self._repeat else widened(text, round_ - 1)

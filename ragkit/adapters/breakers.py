"""Named circuit breakers (pybreaker), one per dependency and role.

Why not ``breaker.call()`` or pybreaker's decorator: ``call()`` holds the breaker's lock for
the whole call, which serialises every request through it, and the decorator on an
``async def`` records success before the coroutine has even run. ``Breaker.guard()`` is a
plain context manager that works around awaited and threaded calls alike:

* a closed breaker lets calls through concurrently (no lock is held while they run);
* an open breaker refuses at once with ``BreakerOpen`` — no I/O, well under a millisecond;
* once the reset timeout has passed, exactly one caller becomes the half-open probe; the
  others keep failing fast until the probe's outcome is known;
* only dependency failures count (``DependencyError``: transport, timeouts, 5xx, busy). The
  caller's errors (``CallerError``) count as a healthy dependency, and a cancelled call
  (client went away) counts as nothing at all.

Outcomes are recorded through ``pybreaker``'s own ``calling()`` so the state machine,
counters and listeners stay pybreaker's.

Time comes from a clock (``time.monotonic`` unless one is passed in), so tests can move it
forward instead of waiting out a reset timeout; see ``_ClockStorage`` for how pybreaker, which
reads ``datetime.now()`` itself, is kept on that clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pybreaker

from ragkit.core.errors import BreakerOpen, CallerError, DependencyError, InsufficientStorage
from ragkit.core.metrics import BREAKER_STATE_VALUES, Metrics

log = logging.getLogger("ragkit.adapters.breakers")

# The breakers every deployment has; the embedder's and generator's are named by the adapters
# themselves (`local_embedding`, `ollama_generation`, ...), the cache's only exists with Redis.
STORE_READ = "qdrant_search"
STORE_WRITE = "qdrant_upsert"
CACHE = "redis"

Clock = Callable[[], float]  # seconds; only differences between two readings matter


def _state_name(pybreaker_state: str) -> str:
    return pybreaker_state.replace("-", "_")  # pybreaker says "half-open"; our contract "half_open"


class _Recorder(pybreaker.CircuitBreakerListener):
    """Logs each state change as one JSON line and mirrors it into the metrics."""

    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics

    def state_change(self, cb, old_state, new_state) -> None:  # noqa: ANN001 - pybreaker's signature
        old = _state_name(old_state.name if old_state else "closed")
        new = _state_name(new_state.name)
        log.warning(json.dumps({"event": "breaker_state_change", "breaker": cb.name, "from": old, "to": new}))
        if self._metrics is not None:
            self._metrics.breaker_state.labels(cb.name).set(BREAKER_STATE_VALUES.get(new, 0))
            self._metrics.breaker_transitions.labels(cb.name, old, new).inc()


class _ClockStorage(pybreaker.CircuitMemoryStorage):
    """pybreaker's in-memory state, with the moment the breaker opened taken from our clock.

    pybreaker has no clock of its own: it stamps ``opened_at = datetime.now(UTC)`` when it opens
    and, at the next call, compares ``datetime.now(UTC) < opened_at + reset_timeout``. So the
    stamp is kept as a reading of our clock, and ``opened_at`` is read back as "now minus the
    time elapsed on our clock"; pybreaker's comparison then amounts to ``elapsed <
    reset_timeout``, on our clock. On the real clock that is the wall time it opened.
    """

    def __init__(self, clock: Clock) -> None:
        super().__init__(pybreaker.STATE_CLOSED)
        self._clock = clock
        self.opened: float | None = None  # a reading of the clock

    def elapsed(self) -> float | None:
        """Seconds on the clock since the breaker last opened; None if it never did."""
        return None if self.opened is None else self._clock() - self.opened

    @property
    def opened_at(self) -> datetime | None:
        elapsed = self.elapsed()
        return None if elapsed is None else datetime.now(UTC) - timedelta(seconds=elapsed)

    @opened_at.setter
    def opened_at(self, _wall_time: datetime) -> None:
        self.opened = self._clock()


class Breaker:
    def __init__(
        self,
        name: str,
        *,
        fail_max: int,
        reset_timeout: float,
        metrics: Metrics | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = name
        self._metrics = metrics
        self._storage = _ClockStorage(clock)
        self._cb = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            name=name,
            # Caller mistakes prove the dependency answered: they are not failures.
            exclude=[CallerError],
            listeners=[_Recorder(metrics)],
            # Let the error that tripped the breaker reach its caller (it says what failed).
            throw_new_error_on_trip=False,
            state_storage=self._storage,
        )
        self._probe_lock = threading.Lock()
        self._probing = False
        if metrics is not None:
            metrics.breaker_state.labels(name).set(0)

    @property
    def state(self) -> str:
        """ "closed", "open" or "half_open" — as reported in /health."""
        state = self._cb.current_state
        if state == pybreaker.STATE_OPEN and self._probing:
            return "half_open"
        return _state_name(state)

    @property
    def fail_counter(self) -> int:
        return self._cb.fail_counter

    def retry_after(self) -> float:
        elapsed = self._storage.elapsed()
        if elapsed is None:
            return 0.0
        return max(self._cb.reset_timeout - elapsed, 0.0)

    def _admit(self) -> bool:
        """Raise BreakerOpen or let the call through; True when this call is the probe."""
        if self._cb.current_state == pybreaker.STATE_CLOSED:
            return False
        remaining = self.retry_after()
        with self._probe_lock:
            if self._cb.current_state == pybreaker.STATE_OPEN and remaining > 0 or self._probing:
                self._reject()
                raise BreakerOpen(self.name, retry_after=remaining if remaining > 0 else 1.0)
            self._probing = True
            return True

    def _reject(self) -> None:
        if self._metrics is not None:
            self._metrics.breaker_rejections.labels(self.name).inc()

    def _record(self, failure: BaseException | None, *, probe: bool) -> None:
        if probe and self._cb.current_state == pybreaker.STATE_OPEN:
            # _admit found the reset timeout over; pybreaker would check it again on its own
            # reading of the time, which can disagree right at the boundary and drop the outcome.
            self._cb.half_open()
        try:
            with self._cb.calling():
                if failure is not None:
                    raise failure
        except pybreaker.CircuitBreakerError:
            pass  # another call opened it meanwhile; our outcome no longer matters
        except BaseException as exc:
            if exc is not failure:
                raise

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        probe = self._admit()
        try:
            yield
        except InsufficientStorage:
            # Refused before any write, by our own free-space check: the store is healthy, and an
            # open breaker would only hide the message that says what to free.
            self._record(None, probe=probe)
            raise
        except DependencyError as exc:
            self._record(exc, probe=probe)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            raise  # the caller gave up: says nothing about the dependency
        except CallerError:
            self._record(None, probe=probe)
            raise
        except BaseException as exc:
            # An untranslated error is a bug in an adapter; count it, the dependency is suspect.
            self._record(exc, probe=probe)
            raise
        else:
            self._record(None, probe=probe)
        finally:
            if probe:
                with self._probe_lock:
                    self._probing = False


class BreakerBoard:
    """All breakers of one service instance. A breaker exists once something guards a call with
    it, so /health lists the configured backends' breakers and no others."""

    def __init__(
        self,
        *,
        fail_max: int,
        reset_timeout: float,
        metrics: Metrics | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._fail_max = fail_max
        self._reset_timeout = reset_timeout
        self._metrics = metrics
        self._clock = clock
        self._breakers: dict[str, Breaker] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Breaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.get(name) or Breaker(
                    name,
                    fail_max=self._fail_max,
                    reset_timeout=self._reset_timeout,
                    metrics=self._metrics,
                    clock=self._clock,
                )
                self._breakers[name] = breaker
        return breaker

    def states(self) -> dict[str, str]:
        return {name: b.state for name, b in sorted(self._breakers.items())}

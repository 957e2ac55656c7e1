"""Several hosts serving one role: `OLLAMA_HOST=http://gpu-1:11434,http://gpu-2:11434`.

Each host has its own breaker per role (`ollama_generation@gpu-2:11434`), beside the role's own
(`ollama_generation`, put on by `guarded.py` as for a single host). A request goes to the next
host in turn whose breaker lets it through; when that host fails as a dependency (transport,
timeout, 5xx, busy) or refuses as a host (no such model there), the same request is tried on the
next one, so a host dying costs a retry, never a failed request. A host whose breaker opens is
ejected: skipped without a call until its reset timeout lets one probe through, and back in
rotation once the probe answers (outlier ejection, with the breaker as the detector). The
role's breaker sees a failure only when every host failed or was ejected for that request, so it
opens only when the whole role is out, and the degradation ladder takes over as before.

A streamed answer moves to another host only before its first piece: once text has reached the
caller, starting again elsewhere would repeat it, so a mid-answer failure is the caller's to see.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from ragkit.adapters.breakers import Breaker, BreakerBoard
from ragkit.adapters.embedders.local import checked_texts
from ragkit.core.errors import (
    BreakerOpen,
    ConfigurationError,
    DependencyError,
    DependencyUnavailable,
    RagkitError,
    UpstreamRejected,
)
from ragkit.core.types import DEFAULT_GENERATION, GenerationOptions, Hit, Turn

log = logging.getLogger("ragkit.adapters.host_pool")

Backend = TypeVar("Backend")
Result = TypeVar("Result")

# What makes a request move on to the next host: the host is down or overloaded, or it refused
# the request as a host (a model missing there). The caller's own mistakes (bad input) would be
# refused by every host alike and are raised at once.
_HOST_FAILURES = (DependencyError, UpstreamRejected)


def host_label(url: str) -> str:
    """How a host is named in breaker names and metrics: `host:port`, without scheme or path."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return parts.netloc or url


class HostPool(Generic[Backend]):
    """The backends of one role, one per host, each behind its own breaker."""

    def __init__(self, backends: Sequence[Backend], breakers: BreakerBoard, role_breaker: str) -> None:
        if not backends:
            raise ConfigurationError(f"{role_breaker}: a host pool needs at least one host")
        self.role_breaker = role_breaker
        self.dependency = role_breaker.split("_")[0]  # "ollama_generation" -> "ollama"
        self.members: list[tuple[str, Backend, Breaker]] = []
        for backend in backends:
            label = host_label(backend.host)
            self.members.append((label, backend, breakers[f"{role_breaker}@{label}"]))
        self.last_probe: dict[str, str | None] = {label: None for label, _, _ in self.members}
        self._turn = itertools.count()

    def _in_turn(self) -> list[tuple[str, Backend, Breaker]]:
        start = next(self._turn) % len(self.members)
        return self.members[start:] + self.members[:start]

    def _every_host_failed(self, errors: list[tuple[str, RagkitError]]) -> RagkitError:
        # One host's error as it was, so its status and Retry-After reach the caller unchanged.
        if len(errors) == 1:
            return errors[0][1]
        if all(isinstance(error, UpstreamRejected) for _, error in errors):
            return errors[0][1]  # every host refused the same way: say it once, as it was
        summary = "; ".join(f"{label}: {error.message}" for label, error in errors)
        retry_after = min(getattr(error, "retry_after", 5.0) for _, error in errors)
        return DependencyUnavailable(self.dependency, f"every host failed ({summary})", retry_after=retry_after)

    async def call(self, operation: Callable[[Backend], Awaitable[Result]]) -> Result:
        """``operation`` on the first host in turn that answers; raises when every host failed."""
        errors: list[tuple[str, RagkitError]] = []
        for label, backend, breaker in self._in_turn():
            try:
                with breaker.guard():
                    return await operation(backend)
            except BreakerOpen as exc:
                errors.append((label, exc))  # ejected: not asked
            except _HOST_FAILURES as exc:
                log.warning("%s failed on %s, trying the next host: %s", self.role_breaker, label, exc.message)
                errors.append((label, exc))
        raise self._every_host_failed(errors) from errors[-1][1]

    async def stream(self, open_stream: Callable[[Backend], AsyncIterator[str]]) -> AsyncIterator[str]:
        """The pieces of the first host in turn that starts answering (see the module docstring)."""
        errors: list[tuple[str, RagkitError]] = []
        for label, backend, breaker in self._in_turn():
            started = False
            try:
                # aclosing: a consumer that stops early releases the host's connection now.
                with breaker.guard():
                    async with aclosing(open_stream(backend)) as pieces:
                        async for piece in pieces:
                            started = True
                            yield piece
                return
            except BreakerOpen as exc:
                errors.append((label, exc))
            except _HOST_FAILURES as exc:
                if started:
                    raise
                log.warning("%s failed on %s, trying the next host: %s", self.role_breaker, label, exc.message)
                errors.append((label, exc))
        raise self._every_host_failed(errors) from errors[-1][1]

    async def probe(self) -> None:
        """Ask every host at once (around the breakers, as health checks do); fine while one
        answers. What each said is kept in ``last_probe`` for /health."""

        async def one(backend: Backend) -> str | None:
            try:
                await backend.probe()
            except RagkitError as exc:
                return exc.message
            return None

        results = await asyncio.gather(*(one(backend) for _, backend, _ in self.members))
        self.last_probe = {label: error for (label, _, _), error in zip(self.members, results, strict=True)}
        failing = {label: error for label, error in self.last_probe.items() if error is not None}
        if len(failing) == len(self.members):
            summary = "; ".join(f"{label}: {error}" for label, error in failing.items())
            raise DependencyUnavailable(self.dependency, f"no host answers ({summary})")

    def hosts(self) -> dict[str, dict[str, Any]]:
        """Each host's breaker and last check, as /health shows them."""
        return {
            label: {"breaker": breaker.name, "state": breaker.state, "error": self.last_probe.get(label)}
            for label, _, breaker in self.members
        }

    async def aclose(self) -> None:
        for _, backend, _ in self.members:
            aclose = getattr(backend, "aclose", None)
            if aclose is not None:
                await aclose()


class _Pooled:
    """What the pooled adapters share: the pool, and the first host's adapter for everything that
    is the same on every host (name, model, token counting)."""

    def __init__(self, backends: Sequence[Any], breakers: BreakerBoard) -> None:
        self.breaker_name = backends[0].breaker_name
        self.pool: HostPool[Any] = HostPool(backends, breakers, self.breaker_name)
        self._first = backends[0]
        self.host = ",".join(backend.host for backend in backends)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._first, attribute)

    async def probe(self) -> None:
        await self.pool.probe()

    def hosts(self) -> dict[str, dict[str, Any]]:
        return self.pool.hosts()

    async def aclose(self) -> None:
        await self.pool.aclose()


class PooledEmbedder(_Pooled):
    """An ``Embedder`` over several hosts of the same model."""

    @property
    def dimension(self) -> int:
        # Learned by whichever host answered first; the others learn it on their first answer.
        for _, backend, _ in self.pool.members:
            try:
                return backend.dimension
            except ConfigurationError:
                continue
        return self._first.dimension  # raises the "not known yet" message

    async def ensure_dimension(self) -> int:
        return await self.pool.call(lambda backend: backend.ensure_dimension())

    def __init__(self, backends: Sequence[Any], breakers: BreakerBoard) -> None:
        super().__init__(backends, breakers)
        self.batch_size: int = backends[0].batch_size

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        # Batch by batch, each to the next host in turn: a long ingestion spreads over the hosts,
        # and a host dying mid-way costs the batch it had, not the whole call.
        texts = checked_texts(texts)  # refused here, before any host is asked, as every embedder does
        vectors: list[list[float]] = []
        for start in range(0, max(len(texts), 1), self.batch_size):
            batch = texts[start : start + self.batch_size]
            vectors.extend(await self.pool.call(lambda backend, batch=batch: backend.embed(batch)))
        return vectors


class PooledGenerator(_Pooled):
    """A ``Generator`` over several hosts of the same chat model."""

    async def generate(
        self, question: str, hits: Sequence[Hit], options: GenerationOptions = DEFAULT_GENERATION
    ) -> str:
        return await self.pool.call(lambda backend: backend.generate(question, hits, options))

    async def stream(
        self, question: str, hits: Sequence[Hit], options: GenerationOptions = DEFAULT_GENERATION
    ) -> AsyncIterator[str]:
        async for piece in self.pool.stream(lambda backend: backend.stream(question, hits, options)):
            yield piece


class PooledCondenser(_Pooled):
    """A ``Condenser`` over several hosts of the same chat model."""

    async def condense(self, history: Sequence[Turn], question: str) -> str:
        return await self.pool.call(lambda backend: backend.condense(history, question))

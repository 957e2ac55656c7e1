"""Answers from an Ollama chat model (``POST /api/chat``), whole or streamed; and follow-ups
condensed into standalone questions by the same model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractContextManager, aclosing
from typing import Any

import anyio

from ragkit.adapters.generators.prompt import (
    DEFAULT_MAX_CONTEXT_CHARS,
    NOTHING_FOUND,
    build_condense_messages,
    build_messages,
    check_condense_request,
    check_request,
)
from ragkit.adapters.ollama_client import LoopBoundClient, translating
from ragkit.core.errors import ConfigurationError
from ragkit.core.types import DEFAULT_GENERATION, GenerationOptions, Hit, Turn

BREAKER = "ollama_generation"
CONDENSE_BREAKER = "ollama_condense"
# One short line is the whole reply: greedy, and cut off long before a chatty model would finish.
CONDENSE_OPTIONS = {"temperature": 0, "num_predict": 128}


class OllamaGenerator:
    """Implements ``ragkit.core.types.Generator`` through the official ``ollama`` async client.

    ``timeout_s`` bounds the whole answer for ``generate``; for ``stream`` it bounds the wait for
    each piece (a model that keeps producing tokens is healthy, however long the answer).
    ``options`` are Ollama model options (temperature, num_ctx, ...).
    """

    breaker_name = BREAKER

    def __init__(
        self,
        host: str,
        model: str,
        timeout_s: float,
        options: Mapping[str, Any] | None = None,
        max_context_chars: int = DEFAULT_MAX_CONTEXT_CHARS,
    ) -> None:
        if not model:
            raise ConfigurationError("OllamaGenerator needs a model name (OLLAMA_CHAT_MODEL)")
        self.host = host
        self.model = model
        self.timeout_s = timeout_s
        self.options = dict(options or {})
        self.max_context_chars = max_context_chars
        self.name = f"ollama:{model}"
        self._client = LoopBoundClient(host, timeout_s)

    def _translating(self) -> AbstractContextManager[None]:
        return translating(host=self.host, model=self.model, role="generation", timeout_s=self.timeout_s)

    def _messages(self, question: str, hits: Sequence[Hit], options: GenerationOptions) -> list[dict[str, str]]:
        return build_messages(
            question, hits, max_context_chars=self.max_context_chars, instructions=options.instructions
        )

    def _options(self, options: GenerationOptions) -> dict[str, Any] | None:
        """The configured model options, with what this caller asked for on top (Ollama calls a
        cap on the answer's tokens ``num_predict``)."""
        asked = {"temperature": options.temperature, "num_predict": options.max_tokens}
        merged = {**self.options, **{k: v for k, v in asked.items() if v is not None}}
        return merged or None

    async def probe(self) -> None:
        """``POST /api/show`` for the model: shows that the host answers and has the model (a 404
        says which one to pull), without generating a token. Health checks bound it with a short timeout."""
        with self._translating():
            await self._client.get().show(self.model)

    async def generate(
        self, question: str, hits: Sequence[Hit], options: GenerationOptions = DEFAULT_GENERATION
    ) -> str:
        check_request(question, hits)
        if not hits:
            # Nothing to ground an answer in: asking the model would only invite one from memory.
            return NOTHING_FOUND
        with self._translating():
            with anyio.fail_after(self.timeout_s):
                response = await self._client.get().chat(
                    model=self.model,
                    messages=self._messages(question, hits, options),
                    stream=False,
                    options=self._options(options),
                )
            return response.message.content or ""

    async def stream(
        self, question: str, hits: Sequence[Hit], options: GenerationOptions = DEFAULT_GENERATION
    ) -> AsyncIterator[str]:
        check_request(question, hits)
        if not hits:
            yield NOTHING_FOUND
            return
        # The client only connects when its iterator is first advanced, so connection errors
        # surface inside the loop, not at the call: both are translated.
        with self._translating():
            parts = await self._client.get().chat(
                model=self.model,
                messages=self._messages(question, hits, options),
                stream=True,
                options=self._options(options),
            )
            # aclosing: a consumer that stops early (client gone) must release the connection
            # now, which also tells Ollama to stop generating, rather than whenever GC runs.
            async with aclosing(parts):
                async for part in parts:
                    content = part.message.content
                    if content:
                        yield content

    async def aclose(self) -> None:
        await self._client.aclose()


class OllamaCondenser:
    """Implements ``ragkit.core.types.Condenser`` with an Ollama chat model.

    Its own client and ``timeout_s`` (short: the call holds up retrieval) and its own breaker, so
    a slow condensation and a slow answer never count against each other.
    """

    breaker_name = CONDENSE_BREAKER

    def __init__(self, host: str, model: str, timeout_s: float) -> None:
        if not model:
            raise ConfigurationError("OllamaCondenser needs a model name (OLLAMA_CHAT_MODEL)")
        self.host = host
        self.model = model
        self.timeout_s = timeout_s
        self.name = f"ollama:{model}"
        self._client = LoopBoundClient(host, timeout_s)

    async def condense(self, history: Sequence[Turn], question: str) -> str:
        check_condense_request(history, question)
        with translating(host=self.host, model=self.model, role="condensation", timeout_s=self.timeout_s):
            with anyio.fail_after(self.timeout_s):
                response = await self._client.get().chat(
                    model=self.model,
                    messages=build_condense_messages(history, question),
                    stream=False,
                    options=CONDENSE_OPTIONS,
                )
            return response.message.content or ""

    async def aclose(self) -> None:
        await self._client.aclose()

"""Answers from an OpenAI-compatible chat model (``POST /chat/completions``), whole or streamed; and
follow-ups condensed into standalone questions by the same model."""

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
from ragkit.adapters.openai_client import DEPENDENCY, LoopBoundClient, request_headers, translating
from ragkit.core.errors import ConfigurationError, DependencyUnavailable
from ragkit.core.types import DEFAULT_GENERATION, GenerationOptions, Hit, Turn

BREAKER = "openai_generation"
CONDENSE_BREAKER = "openai_condense"


class OpenAIGenerator:
    """Implements ``ragkit.core.types.Generator`` through the official ``openai`` async client, for
    vLLM, llama.cpp's server, LM Studio and hosted APIs alike.

    ``timeout_s`` bounds the whole answer for ``generate``; for ``stream`` it bounds the wait for
    each piece (a model that keeps producing tokens is healthy, however long the answer).
    ``options`` go into the request body as they are (temperature, max_tokens, a server's own
    sampling parameters), so a server-specific one needs no change here.
    """

    breaker_name = BREAKER

    def __init__(
        self,
        base_url: str,
        model: str,
        timeout_s: float,
        api_key: str | None = None,
        options: Mapping[str, Any] | None = None,
        max_context_chars: int = DEFAULT_MAX_CONTEXT_CHARS,
    ) -> None:
        if not model:
            raise ConfigurationError("OpenAIGenerator needs a model name: set OPENAI_MODEL")
        self.model = model
        self.timeout_s = timeout_s
        self.options = dict(options or {})
        self.max_context_chars = max_context_chars
        self.name = f"openai:{model}"
        self._client = LoopBoundClient(base_url, api_key, timeout_s)
        self.base_url = self._client.base_url

    def __repr__(self) -> str:
        return f"OpenAIGenerator(base_url={self.base_url!r}, model={self.model!r})"

    def _translating(self) -> AbstractContextManager[None]:
        return translating(client=self._client, model=self.model, role="generation")

    def _request(
        self, question: str, hits: Sequence[Hit], options: GenerationOptions, *, stream: bool
    ) -> dict[str, Any]:
        messages = build_messages(
            question, hits, max_context_chars=self.max_context_chars, instructions=options.instructions
        )
        # What this caller asked for wins over the configured options; max_tokens rather than
        # max_completion_tokens, which llama.cpp's server, vLLM and LM Studio all read.
        asked = {"temperature": options.temperature, "max_tokens": options.max_tokens}
        extra = {**self.options, **{k: v for k, v in asked.items() if v is not None}}
        return {
            "model": self.model,
            "messages": messages,
            "stream": stream,
            "extra_body": extra or None,
            "extra_headers": request_headers(),
        }

    async def probe(self) -> None:
        """``GET /models``: shows that the host answers and takes the key, without generating a
        token. Whether the model is among those listed is not checked: llama.cpp's server and LM
        Studio answer for whatever model name they are sent, so a name they do not list is no
        fault there; a server that does check (vLLM) says so on the first answer, with the fix.
        Health checks bound the probe with a short timeout."""
        with self._translating():
            await self._client.get().models.list(extra_headers=request_headers())

    async def generate(
        self, question: str, hits: Sequence[Hit], options: GenerationOptions = DEFAULT_GENERATION
    ) -> str:
        check_request(question, hits)
        if not hits:
            # Nothing to ground an answer in: asking the model would only invite one from memory.
            return NOTHING_FOUND
        with self._translating():
            with anyio.fail_after(self.timeout_s):
                response = await self._client.get().chat.completions.create(
                    **self._request(question, hits, options, stream=False)
                )
            if not response.choices:
                raise DependencyUnavailable(
                    DEPENDENCY, f"the server at {self.base_url} answered with no choices (model '{self.model}')"
                )
            return response.choices[0].message.content or ""

    async def stream(
        self, question: str, hits: Sequence[Hit], options: GenerationOptions = DEFAULT_GENERATION
    ) -> AsyncIterator[str]:
        check_request(question, hits)
        if not hits:
            yield NOTHING_FOUND
            return
        # Errors may come at the call (refused, 4xx/5xx) or while reading (reset, stalled, an error
        # event): both are inside the translation, so the pipeline sees one of ours either way.
        with self._translating():
            request = self._request(question, hits, options, stream=True)
            parts = await self._client.get().chat.completions.create(**request)
            # aclosing: a consumer that stops early (client gone) must release the connection
            # now, which also tells the server to stop generating, rather than whenever GC runs.
            async with aclosing(parts):
                async for chunk in parts:
                    # The last chunk may carry only usage, and the first only the role.
                    content = chunk.choices[0].delta.content if chunk.choices else None
                    if content:
                        yield content

    async def aclose(self) -> None:
        await self._client.aclose()


class OpenAICondenser:
    """Implements ``ragkit.core.types.Condenser`` with an OpenAI-compatible chat model.

    Its own client and ``timeout_s`` (short: the call holds up retrieval) and its own breaker, so
    a slow condensation and a slow answer never count against each other. No sampling parameters
    are sent: servers disagree on which they take (reasoning models refuse ``temperature``), and a
    refused request would cost every follow-up its condensation; the reply is checked instead.
    """

    breaker_name = CONDENSE_BREAKER

    def __init__(self, base_url: str, model: str, timeout_s: float, api_key: str | None = None) -> None:
        if not model:
            raise ConfigurationError("OpenAICondenser needs a model name: set OPENAI_MODEL")
        self.model = model
        self.timeout_s = timeout_s
        self.name = f"openai:{model}"
        self._client = LoopBoundClient(base_url, api_key, timeout_s)
        self.base_url = self._client.base_url

    def __repr__(self) -> str:
        return f"OpenAICondenser(base_url={self.base_url!r}, model={self.model!r})"

    async def condense(self, history: Sequence[Turn], question: str) -> str:
        check_condense_request(history, question)
        with translating(client=self._client, model=self.model, role="condensation"):
            with anyio.fail_after(self.timeout_s):
                response = await self._client.get().chat.completions.create(
                    model=self.model,
                    messages=build_condense_messages(history, question),
                    stream=False,
                    extra_headers=request_headers(),
                )
            # No choice at all is an unusable reply like an empty one: the caller falls back.
            return (response.choices[0].message.content or "") if response.choices else ""

    async def aclose(self) -> None:
        await self._client.aclose()

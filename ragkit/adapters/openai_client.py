"""What the OpenAI-compatible embedder and generator share: the client they talk through and the
translation of everything the ``openai`` client can raise into ragkit errors.

"OpenAI-compatible" covers vLLM, llama.cpp's server, LM Studio, Text Embeddings Inference and the
hosted APIs: they speak ``/v1/chat/completions``, ``/v1/embeddings`` and ``/v1/models`` alike, and
differ in their error bodies (``{"error": {"message": ...}}``, ``{"message": ...}``, plain text).

What the ``openai`` client (3.x, on httpx2) raises, measured against a real HTTP server:

- refused, reset, dropped mid-answer: ``APIConnectionError`` with the transport error as its
  ``__cause__`` (``httpx2.ConnectError``, ``ReadError``, ``RemoteProtocolError``), for whole and
  streamed answers alike (the stream wraps its own read errors too);
- timeouts: ``APITimeoutError`` (a subclass of ``APIConnectionError``), at the call or mid-stream;
- HTTP 4xx/5xx: an ``APIStatusError`` subclass with ``status_code`` and the parsed error body;
- an in-band ``data: {"error": ...}`` in a stream: a bare ``APIError``;
- a 200 that is not the API's JSON: ``APIResponseValidationError``, or pydantic/JSON errors.

The client retries by default (twice, with back-off): ``max_retries=0`` here, because the breakers
and the degradation ladder decide what a failure costs; a silent retry would triple the time a
dead host holds every request, and hide the failures the breaker has to count.

The API key is a secret of the host's: it is sent as ``Authorization`` and never written into a
message, and any text from the server (which may echo the key it was given, as OpenAI's 401 does)
is scrubbed of it before it goes into one.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import httpx2
import openai
import pydantic

from ragkit.core.context import REQUEST_ID_HEADER, current_request_id
from ragkit.core.errors import (
    ConfigurationError,
    DependencyTimeout,
    DependencyUnavailable,
    InvalidInput,
    RagkitError,
    UpstreamRejected,
)

DEPENDENCY = "openai"
Role = Literal["embedding", "generation", "condensation"]

# Which setting names the model, so the 404 message can say what to change.
_MODEL_SETTING = {"embedding": "OPENAI_EMBED_MODEL", "generation": "OPENAI_MODEL", "condensation": "OPENAI_MODEL"}
# Which setting bounds each call, so a timeout's message can say what to raise.
_TIMEOUT_SETTING = {"condensation": "RAGKIT_CONDENSE_TIMEOUT"}
_BUSY_RETRY_AFTER_S = 2.0
# Servers started without --api-key (vLLM, llama.cpp, LM Studio) accept any key, but the client
# refuses to be built without one; this placeholder is sent instead, and is no secret.
_NO_KEY = "not-needed"
_REDACTED = "[redacted]"


def make_timeout(timeout_s: float) -> httpx2.Timeout:
    """Every phase bounded; a refused or black-holed host must not take the full read budget."""
    if timeout_s <= 0:
        raise ConfigurationError(f"RAGKIT_OPENAI_TIMEOUT must be positive, got {timeout_s!r}")
    return httpx2.Timeout(timeout_s, connect=min(timeout_s, 5.0))


def check_base_url(base_url: str) -> str:
    """The base URL as the client needs it: absolute http(s), no trailing slash."""
    if not base_url:
        raise ConfigurationError(
            "OPENAI_BASE_URL is not set: set it to the server's API root, e.g. http://127.0.0.1:8000/v1"
        )
    if not base_url.startswith(("http://", "https://")):
        # The client would only fail on the first request, as if the server were down.
        raise ConfigurationError(
            f"OPENAI_BASE_URL {base_url!r} is not an http(s) URL: set it like http://127.0.0.1:8000/v1"
        )
    return base_url.rstrip("/")


def request_headers() -> dict[str, str] | None:
    """The id of the request being served, so a slow or failed call is found in the server's (or
    a proxy's) log from the caller's X-Request-ID."""
    request_id = current_request_id()
    return {REQUEST_ID_HEADER: request_id} if request_id is not None else None


class LoopBoundClient:
    """One ``openai.AsyncOpenAI`` per event loop.

    httpx2 pools connections that belong to the loop that opened them, as httpx does; reusing the
    client from another loop (a second ``asyncio.run``, a test with its own loop) fails or hangs.
    So the client is rebuilt when the running loop changes.
    """

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float) -> None:
        self.base_url = check_base_url(base_url)
        self.timeout_s = timeout_s
        self._api_key = api_key or None
        self._timeout = make_timeout(timeout_s)
        self._client: openai.AsyncOpenAI | None = None
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    def __repr__(self) -> str:
        return f"LoopBoundClient(base_url={self.base_url!r})"  # never the key

    def scrub(self, text: str) -> str:
        """``text`` with the API key taken out, wherever the server or a library put it."""
        return text.replace(self._api_key, _REDACTED) if self._api_key else text

    def get(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is None or self._loop() is not loop:
            # The old client's connections belong to a loop that is gone or elsewhere; it cannot
            # be closed from here, so it is dropped and its sockets are reclaimed with it.
            self._client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._api_key or _NO_KEY,
                timeout=self._timeout,
                max_retries=0,
                # A plain httpx2 client, not the SDK's own: that one closes itself when collected by
                # scheduling its close on whatever loop is running then, which does not own its
                # connections and fails ("Event loop is closed") inside that loop's next work.
                http_client=httpx2.AsyncClient(timeout=self._timeout, follow_redirects=True),
            )
            self._loop = weakref.ref(loop)
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        same_loop = self._loop is not None and self._loop() is asyncio.get_running_loop()
        if client is not None and same_loop:
            await client.close()


def translate(exc: BaseException, *, client: LoopBoundClient, model: str, role: Role) -> RagkitError:
    """Map one exception from the ``openai`` client (or httpx2 under it) to a ragkit error."""
    if isinstance(exc, RagkitError):
        return exc
    host, timeout_s = client.base_url, client.timeout_s
    doing = f"{role} with model '{model}'"
    if isinstance(exc, openai.APIStatusError):
        return _from_status(exc, client=client, model=model, role=role)
    if isinstance(exc, (openai.APITimeoutError, httpx2.TimeoutException, TimeoutError)):
        return DependencyTimeout(
            DEPENDENCY,
            f"the server at {host} did not answer within {timeout_s:g} s ({doing}); it may be overloaded "
            f"or still loading the model: check it, or raise {_TIMEOUT_SETTING.get(role, 'RAGKIT_OPENAI_TIMEOUT')}",
        )
    if isinstance(exc, openai.APIConnectionError):
        return _from_transport(exc.__cause__ or exc, host=host, doing=doing)
    if isinstance(exc, httpx2.TransportError | OSError):
        return _from_transport(exc, host=host, doing=doing)
    if isinstance(exc, UnicodeEncodeError):
        # The request could not be encoded as UTF-8 JSON: the caller's text, never the server.
        return InvalidInput(f"the text for {host} is not valid Unicode ({doing}): {exc.reason}")
    if isinstance(exc, (openai.APIResponseValidationError, json.JSONDecodeError, pydantic.ValidationError)):
        return DependencyUnavailable(
            DEPENDENCY,
            f"unexpected answer from {host} ({doing}); is OPENAI_BASE_URL pointing at an OpenAI-compatible "
            f"API? ({type(exc).__name__}: {client.scrub(str(exc))[:200]})",
        )
    if isinstance(exc, openai.APIError):
        # An error event inside a stream: the model failed after the answer began.
        return DependencyUnavailable(
            DEPENDENCY, f"the server at {host} failed mid-answer ({doing}): {client.scrub(exc.message)[:300]}"
        )
    return DependencyUnavailable(DEPENDENCY, f"the server at {host} failed ({doing}): {client.scrub(repr(exc))[:300]}")


def _from_transport(cause: BaseException, *, host: str, doing: str) -> RagkitError:
    if isinstance(cause, (httpx2.ConnectError, ConnectionRefusedError)):
        return DependencyUnavailable(
            DEPENDENCY,
            f"cannot connect to {host} ({doing}): is the server running there, and is OPENAI_BASE_URL right?",
        )
    if isinstance(cause, (httpx2.UnsupportedProtocol, httpx2.InvalidURL)):
        return ConfigurationError(f"OPENAI_BASE_URL {host!r} is not a usable URL: {cause}")
    if isinstance(cause, (httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.WriteError, ConnectionError)):
        return DependencyUnavailable(
            DEPENDENCY,
            f"the server at {host} dropped the connection without a complete answer ({doing}); "
            f"it may have crashed or restarted: check its log",
        )
    return DependencyUnavailable(DEPENDENCY, f"network error talking to {host} ({doing}): {type(cause).__name__}")


def _detail(exc: openai.APIStatusError) -> str:
    """The message of the error body, whichever shape the server gives it."""
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail") or body.get("error")
        return str(message) if message else json.dumps(body)[:300]
    return str(body or "")


def _retry_after(exc: openai.APIStatusError) -> float:
    try:
        return max(float(exc.response.headers.get("retry-after", "")), 0.5)
    except ValueError:
        return _BUSY_RETRY_AFTER_S


def _from_status(exc: openai.APIStatusError, *, client: LoopBoundClient, model: str, role: Role) -> RagkitError:
    status, host = exc.status_code, client.base_url
    detail = client.scrub(_detail(exc)).strip()[:300] or "no detail"
    doing = f"{role} with model '{model}'"
    if status in (401, 403):
        # The body is left out: servers quote back (part of) the key they were given.
        return UpstreamRejected(
            f"the server at {host} refused the API key (HTTP {status}, {doing}): set OPENAI_API_KEY "
            f"to a key it accepts",
            dependency=DEPENDENCY,
            model=model,
        )
    if status in (429, 503):
        # Rate limited, or its queue is full: the host cannot take the call now, which is what the
        # breaker is for; it usually clears in seconds.
        return DependencyUnavailable(
            DEPENDENCY,
            f"the server at {host} is busy or rate-limiting (HTTP {status}: {detail}); retry shortly",
            retry_after=_retry_after(exc),
        )
    if status in (408, 504):
        return DependencyTimeout(DEPENDENCY, f"the server at {host} or a gateway timed out (HTTP {status}, {doing})")
    if status >= 500:
        return DependencyUnavailable(DEPENDENCY, f"the server at {host} failed with HTTP {status} ({doing}): {detail}")
    if status == 404 and "model" in detail.lower():
        return UpstreamRejected(
            f"the server at {host} does not serve model '{model}' ({detail}): set {_MODEL_SETTING[role]} "
            f"to one that GET {host}/models lists",
            dependency=DEPENDENCY,
            model=model,
        )
    if status == 404:
        return UpstreamRejected(
            f"{host} answered HTTP 404 to an OpenAI {role} request ({detail}); is OPENAI_BASE_URL the "
            f"API's root (usually ending in /v1)?",
            dependency=DEPENDENCY,
            model=model,
        )
    return UpstreamRejected(
        f"the server at {host} rejected the request (HTTP {status}, {doing}): {detail}",
        dependency=DEPENDENCY,
        model=model,
    )


@contextmanager
def translating(*, client: LoopBoundClient, model: str, role: Role) -> Iterator[None]:
    """Re-raise anything but cancellation as a ragkit error, keeping the original as the cause."""
    try:
        yield
    except RagkitError:
        raise
    except Exception as exc:
        error = translate(exc, client=client, model=model, role=role)
        if isinstance(exc, openai.APIStatusError) and exc.status_code in (401, 403):
            # Its text may quote the key back; a traceback of the cause would put it in a log.
            raise error from None
        raise error from exc

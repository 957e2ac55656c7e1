"""What the Ollama embedder and generator share: the client they talk through and the
translation of everything the ``ollama`` client can raise into ragkit errors.

What the ``ollama`` client (0.6.x) actually raises, measured against a real HTTP server:

- connection refused: builtin ``ConnectionError`` with a generic message (no host) for
  non-streaming calls, because the client wraps ``httpx.ConnectError`` ``from None``; but raw
  ``httpx.ConnectError`` for ``stream=True`` calls, which bypass that wrapper, and only when the
  returned iterator is first advanced;
- a server that drops the connection: raw ``httpx.ReadError`` (RST) or ``httpx.RemoteProtocolError``
  (closed without a response); never wrapped;
- timeouts: raw ``httpx.ReadTimeout`` / ``ConnectTimeout`` / ``WriteTimeout`` / ``PoolTimeout``;
  the client sets NO timeout unless given one;
- HTTP 4xx/5xx: ``ollama.ResponseError`` with ``status_code`` and ``error`` (parsed from the JSON
  body's "error"); an in-band ``{"error": ...}`` line in a stream gives ``status_code == -1``;
- a 200 that is not Ollama's JSON: ``json.JSONDecodeError``, ``pydantic.ValidationError``, or a bare
  ``TypeError``/``AttributeError`` when the JSON is not an object; a redirect loop (the client follows
  redirects): ``httpx.TooManyRedirects``; a body that fails to decompress: ``httpx.DecodingError``;
- an OLLAMA_HOST the client cannot parse: ``ValueError`` (bad port) or ``httpx.InvalidURL`` when the
  client is built, ``httpx.UnsupportedProtocol`` on the first request.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import httpx
import ollama
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

DEPENDENCY = "ollama"
Role = Literal["embedding", "generation", "condensation"]

# Which setting names the model, so the 404 message can say what to change.
_MODEL_SETTING = {
    "embedding": "OLLAMA_EMBED_MODEL",
    "generation": "OLLAMA_CHAT_MODEL",
    "condensation": "OLLAMA_CHAT_MODEL",
}
# Ollama answers 503 when its queue is full (OLLAMA_MAX_QUEUE); it usually clears in seconds.
_BUSY_RETRY_AFTER_S = 2.0


def make_timeout(timeout_s: float) -> httpx.Timeout:
    """Every phase bounded; a refused or black-holed host must not take the full read budget."""
    if timeout_s <= 0:
        raise ConfigurationError(f"Ollama timeout must be positive, got {timeout_s!r}")
    return httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))


async def pass_request_id(request: httpx.Request) -> None:
    """An httpx request hook: the call carries the id of the request it serves, so a slow or
    failed Ollama call in Ollama's (or a proxy's) log is found from the caller's X-Request-ID."""
    request_id = current_request_id()
    if request_id is not None:
        request.headers[REQUEST_ID_HEADER] = request_id


class LoopBoundClient:
    """One ``ollama.AsyncClient`` per event loop.

    httpx pools connections that belong to the loop that opened them; reusing the client from
    another loop (a second ``asyncio.run``, a test with its own loop, a notebook kernel) fails
    with "Event loop is closed" or hangs. So the client is rebuilt when the running loop changes.
    """

    def __init__(self, host: str, timeout_s: float) -> None:
        self.host = host
        self.timeout_s = timeout_s
        self._timeout = make_timeout(timeout_s)
        self._client: ollama.AsyncClient | None = None
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    def get(self) -> ollama.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is None or self._loop() is not loop:
            # The old client's connections belong to a loop that is gone or elsewhere; it cannot
            # be closed from here, so it is dropped and its sockets are reclaimed with it.
            try:
                self._client = ollama.AsyncClient(
                    host=self.host, timeout=self._timeout, event_hooks={"request": [pass_request_id]}
                )
            except (ValueError, httpx.InvalidURL) as exc:
                # The client parses the host here (a port that is not a number, a broken IPv6
                # bracket); a bare ValueError would otherwise pass for an Ollama failure.
                raise ConfigurationError(f"OLLAMA_HOST {self.host!r} is not a usable URL: {exc}") from exc
            self._loop = weakref.ref(loop)
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        same_loop = self._loop is not None and self._loop() is asyncio.get_running_loop()
        if client is not None and same_loop:
            await client.close()


def translate(exc: BaseException, *, host: str, model: str, role: Role, timeout_s: float) -> RagkitError:
    """Map one exception from the ``ollama`` client (or httpx under it) to a ragkit error."""
    doing = f"{role} with model '{model}'"
    if isinstance(exc, RagkitError):
        return exc
    if isinstance(exc, ollama.ResponseError):
        return _from_status(exc.status_code, str(exc.error or ""), host=host, model=model, role=role)
    if isinstance(exc, httpx.HTTPStatusError):
        # The client wraps these into ResponseError today; should a version stop doing so, a 404
        # must still read as "no such model", not as an outage.
        return _from_status(exc.response.status_code, _body_text(exc.response), host=host, model=model, role=role)
    if isinstance(exc, ollama.RequestError):
        # Raised by the client before anything is sent (older versions: no model given): the
        # request was refused, the server is fine.
        return UpstreamRejected(
            f"the Ollama client refused a request to {host} ({doing}): {exc.error}",
            dependency=DEPENDENCY,
            model=model,
        )
    if isinstance(exc, UnicodeEncodeError):
        # The request could not be encoded as UTF-8 JSON: the caller's text, never the server.
        return InvalidInput(f"the text for Ollama at {host} is not valid Unicode ({doing}): {exc.reason}")
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return DependencyTimeout(
            DEPENDENCY,
            f"Ollama at {host} did not answer within {timeout_s:g} s ({doing}); it may be overloaded "
            f"or still loading the model: check the host, or raise the timeout",
        )
    if isinstance(exc, (httpx.ConnectError, ConnectionRefusedError)) or type(exc) is ConnectionError:
        return DependencyUnavailable(
            DEPENDENCY,
            f"cannot connect to Ollama at {host} ({doing}): is `ollama serve` running there, "
            f"and is OLLAMA_HOST right?",
        )
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, ConnectionError)):
        return DependencyUnavailable(
            DEPENDENCY,
            f"Ollama at {host} dropped the connection without a complete answer ({doing}); "
            f"it may have crashed or restarted: check its log",
        )
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return ConfigurationError(f"OLLAMA_HOST {host!r} is not a usable URL: {exc}")
    if isinstance(exc, (httpx.TransportError, OSError)):
        return DependencyUnavailable(
            DEPENDENCY, f"network error talking to Ollama at {host} ({doing}): {exc!r}"
        )
    if isinstance(exc, (json.JSONDecodeError, pydantic.ValidationError, httpx.DecodingError, httpx.TooManyRedirects)):
        return DependencyUnavailable(
            DEPENDENCY,
            f"unexpected answer from {host} ({doing}); is OLLAMA_HOST pointing at an Ollama server? "
            f"({type(exc).__name__}: {str(exc)[:200]})",
        )
    return DependencyUnavailable(DEPENDENCY, f"Ollama at {host} failed ({doing}): {exc!r}")


def _body_text(response: httpx.Response) -> str:
    """The "error" of a JSON error body, else the body's text ("" if it was never read)."""
    try:
        text = response.text
    except httpx.ResponseNotRead:
        return ""
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return text
    return str(error) if error else text


def _from_status(status: int, detail: str, *, host: str, model: str, role: Role) -> RagkitError:
    detail = detail.strip()[:300]
    doing = f"{role} with model '{model}'"
    if status == -1:
        # An in-band {"error": ...} in a stream: the model runner failed after the answer began.
        return DependencyUnavailable(DEPENDENCY, f"Ollama at {host} failed mid-answer ({doing}): {detail}")
    if status == 503 or status == 429:
        return DependencyUnavailable(
            DEPENDENCY,
            f"Ollama at {host} is busy (HTTP {status}: {detail}); retry shortly, or let it queue more "
            f"(OLLAMA_MAX_QUEUE, OLLAMA_NUM_PARALLEL)",
            retry_after=_BUSY_RETRY_AFTER_S,
        )
    if status == 504:
        # A gateway in front of Ollama gave up waiting for it: the same outage as our own timeout.
        return DependencyTimeout(
            DEPENDENCY, f"a gateway in front of Ollama at {host} timed out (HTTP 504, {doing}): {detail or 'no detail'}"
        )
    if status >= 500:
        return DependencyUnavailable(
            DEPENDENCY, f"Ollama at {host} failed with HTTP {status} ({doing}): {detail or 'no detail'}"
        )
    if status == 408:
        return DependencyTimeout(DEPENDENCY, f"Ollama at {host} timed out the request (HTTP 408, {doing})")
    if status == 404 and "model" in detail.lower():
        return UpstreamRejected(
            f"Ollama at {host} does not have model '{model}': run `ollama pull {model}` on that host, "
            f"or set {_MODEL_SETTING[role]} to a model it has (`ollama list`)",
            dependency=DEPENDENCY,
            model=model,
        )
    if status == 404:
        # A 404 that does not mention a model: most likely not an Ollama server at all.
        return UpstreamRejected(
            f"{host} answered HTTP 404 to an Ollama {role} request ({detail or 'empty body'}); "
            f"is OLLAMA_HOST pointing at an Ollama server?",
            dependency=DEPENDENCY,
            model=model,
        )
    return UpstreamRejected(
        f"Ollama at {host} rejected the request (HTTP {status}, {doing}): {detail or 'no detail'}",
        dependency=DEPENDENCY,
        model=model,
    )


@contextmanager
def translating(*, host: str, model: str, role: Role, timeout_s: float) -> Iterator[None]:
    """Re-raise anything but cancellation as a ragkit error, keeping the original as the cause."""
    try:
        yield
    except RagkitError:
        raise
    except Exception as exc:
        raise translate(exc, host=host, model=model, role=role, timeout_s=timeout_s) from exc

"""Every exception the third-party clients can raise on ragkit's paths ends up in ragkit's error
tree, in the right branch: ``CallerError`` for a request that was refused (it never trips a
breaker), ``DependencyUnavailable`` / ``DependencyTimeout`` for an outage (it does), and
``ConfigurationError`` for a setting that can never work. Nothing raw leaks out.

Failures are real wherever they can be made real: the Ollama stand-in's fault modes, a port
nobody listens on, a listener whose accept queue is full, and ``WireServer`` below, which
misbehaves at the byte level (resets, truncates, answers garbage, any status). Where a failure
cannot be provoked (httpcore swallows a failed write, say), the adapter's translation is called
with a real instance of the exception, or, for the store, the exception is raised by an httpx
transport so that it still travels through qdrant-client.

The exception classes are enumerated from the libraries themselves: a class added by an upgrade
fails ``test_every_*_class_is_accounted_for`` until someone decides what it means.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import socket
import socketserver
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import ollama
import pydantic
import pytest
from qdrant_client import QdrantClient
from qdrant_client.common.client_exceptions import QdrantException, ResourceExhaustedResponse
from qdrant_client.http.exceptions import ApiException, ResponseHandlingException, UnexpectedResponse

from ragkit.adapters.embedders.ollama import OllamaEmbedder
from ragkit.adapters.generators.ollama import OllamaGenerator
from ragkit.adapters.ollama_client import translate
from ragkit.adapters.stores.qdrant import QdrantStore
from ragkit.core.errors import (
    CollectionExists,
    CollectionNotFound,
    ConfigurationError,
    DependencyError,
    DependencyTimeout,
    DependencyUnavailable,
    InvalidInput,
    RagkitError,
    UpstreamRejected,
)
from ragkit.core.types import Hit, Point, SparseVector
from tests.support.fake_ollama import FakeOllama

TIMEOUT_S = 0.5
# Every failure must be reported within the timeout, with slack for a busy machine.
BOUND_S = TIMEOUT_S + 1.0
EMBED_MODEL = "nomic-embed-text"
CHAT_MODEL = "llama3.2"
PATHS = ("embed", "generate", "stream")  # the three ways ragkit calls Ollama
# Bigger than the socket buffers of both ends together (the stand-in shrinks its own), so a
# server that never reads makes the upload block.
BIG_TEXT = "x" * (16 << 20)
HITS = (Hit(id="p1", score=1.0, text="Qdrant is a vector database.", doc_id="d1", chunk_index=0, title="Qdrant"),)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# =========================================================================== stand-ins


def read_request(conn: socket.socket) -> bytes | None:
    """One HTTP/1.1 request (head and Content-Length body), or None once the client hung up."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        received = len(body)
        while received < length:  # read and dropped: no behaviour here looks at the body
            chunk = conn.recv(min(1 << 20, length - received))
            if not chunk:
                return None
            received += len(chunk)
    except OSError:
        return None
    return head


def request_path(head: bytes) -> str:
    return head.split(b"\r\n", 1)[0].split(b" ")[1].decode()


def send_response(
    conn: socket.socket, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None
) -> None:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Whatever"
    lines = [f"HTTP/1.1 {status} {phrase}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def wait_for_hangup(conn: socket.socket) -> None:
    """Block until the client closes the connection (its timeout fired) or the server stops."""
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            pass


def reset(conn: socket.socket) -> None:
    # SO_LINGER 0: close() sends RST, not FIN, like a process that crashed or was killed.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


Behaviour = Callable[[socket.socket, "WireServer"], None]


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, wire: WireServer) -> None:
        self.wire = wire
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        if self.wire.receive_buffer:
            # Set before listen() so accepted sockets inherit it: a tiny window fills at once.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.wire.receive_buffer)
        super().server_bind()


class _Handler(socketserver.BaseRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        wire = self.server.wire
        with wire.lock:
            wire.connections.add(self.request)
        try:
            wire.behaviour(self.request, wire)
        except OSError:
            pass  # the client gave up first: expected in every fault here
        finally:
            with wire.lock:
                wire.connections.discard(self.request)


class WireServer:
    """A TCP server on 127.0.0.1 that runs ``behaviour(conn, server)`` for every connection."""

    def __init__(self, behaviour: Behaviour, *, receive_buffer: int | None = None) -> None:
        self.behaviour = behaviour
        self.receive_buffer = receive_buffer
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        self._server = _TCPServer(self)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # stop() waits up to one poll interval, and a run starts a few hundred of these servers.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self.lock:
            connections = list(self.connections)
        for conn in connections:  # wakes handlers blocked in recv
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)


def answer(status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Behaviour:
    """Answer every request on the connection with this status and body (keep-alive)."""

    def behaviour(conn: socket.socket, wire: WireServer) -> None:
        while read_request(conn) is not None:
            send_response(conn, status, body, headers)

    return behaviour


def json_error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def close_without_answer(conn: socket.socket, wire: WireServer) -> None:
    read_request(conn)  # returning closes the connection with a FIN


def reset_without_answer(conn: socket.socket, wire: WireServer) -> None:
    read_request(conn)
    reset(conn)


def garbage_status_line(conn: socket.socket, wire: WireServer) -> None:
    read_request(conn)
    conn.sendall(b"this is not HTTP\r\n\r\n")
    wait_for_hangup(conn)


def truncated_body(conn: socket.socket, wire: WireServer) -> None:
    read_request(conn)
    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"embe')


def bad_gzip(conn: socket.socket, wire: WireServer) -> None:
    read_request(conn)
    send_response(conn, 200, b"this is not gzip", {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    wait_for_hangup(conn)


def redirect_loop(conn: socket.socket, wire: WireServer) -> None:
    while (head := read_request(conn)) is not None:
        send_response(conn, 302, headers={"Location": request_path(head)})


def hang(conn: socket.socket, wire: WireServer) -> None:
    read_request(conn)
    wait_for_hangup(conn)


def never_read(conn: socket.socket, wire: WireServer) -> None:
    wire.stopping.wait()


class Rig:
    """Places to point a client at, each failing one way; everything is stopped afterwards."""

    def __init__(self, fake: FakeOllama) -> None:
        self.fake = fake
        self._stack = contextlib.ExitStack()

    def wire(self, behaviour: Behaviour, **options: Any) -> str:
        server = WireServer(behaviour, **options)
        self._stack.callback(server.stop)
        return server.url

    def fake_mode(self, mode: str) -> str:
        self.fake.mode = mode
        return self.fake.url

    def closed_port(self) -> str:
        with socket.socket() as probe:  # bound, then released: nobody listens there
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def full_backlog(self) -> str:
        """A port that never completes a TCP handshake: a connect timeout, for real."""
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # an accept queue of one, never accepted from
        filler = socket.create_connection(listener.getsockname(), timeout=5)  # takes that one place
        self._stack.callback(listener.close)
        self._stack.callback(filler.close)
        # With the queue full the kernel drops every further SYN, so connect() waits until it times out.
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOllama]:
    with FakeOllama(slow_seconds=5.0) as fake:
        yield fake


@pytest.fixture
def rig(fake_server: FakeOllama) -> Iterator[Rig]:
    fake_server.start()
    fake_server.mode = "ok"
    fake_server.reset_counters()
    made = Rig(fake_server)
    try:
        yield made
    finally:
        made.close()
        fake_server.mode = "ok"


def exception_classes(module: str) -> set[type[BaseException]]:
    """Every exception class a library defines (loaded so far), exported or not, found by walking
    the whole exception hierarchy: what an upgrade adds shows up here without anyone listing it."""
    found: set[type[BaseException]] = set()
    seen: set[type] = set()
    todo: list[type] = [BaseException]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if cls.__module__.split(".")[0] == module:
            found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def names(classes: set[type]) -> list[str]:
    return sorted(c.__qualname__ for c in classes)


# =========================================================================== Ollama: real failures


async def call_ollama(path: str, host: str, *, big: bool = False) -> None:
    """One call the way the service makes it, through a fresh adapter that is closed afterwards."""
    text = BIG_TEXT if big else "What is Qdrant?"
    if path == "embed":
        embedder = OllamaEmbedder(host, EMBED_MODEL, TIMEOUT_S)
        try:
            await embedder.embed([text])
        finally:
            await embedder.aclose()
        return
    generator = OllamaGenerator(host, CHAT_MODEL, TIMEOUT_S)
    try:
        if path == "generate":
            await generator.generate(text, HITS)
        else:
            async for _ in generator.stream(text, HITS):
                pass
    finally:
        await generator.aclose()


def model_for(path: str) -> str:
    return EMBED_MODEL if path == "embed" else CHAT_MODEL


@dataclass(frozen=True)
class Fault:
    id: str
    serve: Callable[[Rig], str]  # makes the failure happen; returns the OLLAMA_HOST to use
    error: type[RagkitError]
    # The raw exception the client really raised, per path: the cause the ragkit error carries.
    # embed and generate also bound the whole call (anyio.fail_after), which may fire first.
    raw: Mapping[str, tuple[type[BaseException], ...]]
    hint: str = ""  # part of the message that tells a person what to do
    paths: tuple[str, ...] = PATHS
    big: bool = False
    retry_after: float | None = None


def same(*raw: type[BaseException]) -> dict[str, tuple[type[BaseException], ...]]:
    return dict.fromkeys(PATHS, raw)


def timing_out(raw: type[BaseException]) -> dict[str, tuple[type[BaseException], ...]]:
    return {"embed": (raw, TimeoutError), "generate": (raw, TimeoutError), "stream": (raw,)}


OLLAMA_FAULTS = [
    Fault("http-500", lambda r: r.fake_mode("error"), DependencyUnavailable, same(ollama.ResponseError), "HTTP 500"),
    Fault(
        "busy-503",
        lambda r: r.fake_mode("busy"),
        DependencyUnavailable,
        same(ollama.ResponseError),
        "busy",
        retry_after=2.0,
    ),
    Fault(
        "unknown-model",
        lambda r: r.fake_mode("unknown_model"),
        UpstreamRejected,
        same(ollama.ResponseError),
        "ollama pull {model}",
    ),
    Fault(
        "stream-error-mid-answer",
        lambda r: r.fake_mode("stream_error"),
        DependencyUnavailable,
        same(ollama.ResponseError),
        "failed mid-answer",
        paths=("stream",),
    ),
    Fault(
        "reset", lambda r: r.fake_mode("reset"), DependencyUnavailable, same(httpx.ReadError), "dropped the connection"
    ),
    Fault(
        "slow-answer",
        lambda r: r.fake_mode("slow"),
        DependencyTimeout,
        timing_out(httpx.ReadTimeout),
        "did not answer within 0.5 s",
    ),
    Fault(
        "connection-refused",
        Rig.closed_port,
        DependencyUnavailable,
        # Non-streaming calls get the client's own ConnectionError; streaming ones the raw httpx error.
        {"embed": (ConnectionError,), "generate": (ConnectionError,), "stream": (httpx.ConnectError,)},
        "cannot connect to Ollama",
    ),
    Fault(
        "connect-timeout",
        Rig.full_backlog,
        DependencyTimeout,
        timing_out(httpx.ConnectTimeout),
        "did not answer within",
    ),
    Fault(
        "upload-never-read",
        lambda r: r.wire(never_read, receive_buffer=4096),
        DependencyTimeout,
        timing_out(httpx.WriteTimeout),
        "did not answer within",
        big=True,
    ),
    Fault(
        "closed-without-answer",
        lambda r: r.wire(close_without_answer),
        DependencyUnavailable,
        same(httpx.RemoteProtocolError),
        "dropped the connection",
    ),
    Fault(
        "reset-without-answer",
        lambda r: r.wire(reset_without_answer),
        DependencyUnavailable,
        same(httpx.ReadError),
        "dropped the connection",
    ),
    Fault(
        "garbage-status-line",
        lambda r: r.wire(garbage_status_line),
        DependencyUnavailable,
        same(httpx.RemoteProtocolError),
    ),
    Fault("truncated-body", lambda r: r.wire(truncated_body), DependencyUnavailable, same(httpx.RemoteProtocolError)),
    Fault(
        "bad-gzip", lambda r: r.wire(bad_gzip), DependencyUnavailable, same(httpx.DecodingError), "unexpected answer"
    ),
    Fault(
        "redirect-loop",
        lambda r: r.wire(redirect_loop),
        DependencyUnavailable,
        same(httpx.TooManyRedirects),
        "pointing at an Ollama server",
    ),
    Fault(
        "html-page",
        lambda r: r.wire(answer(200, b"<html><body>Sign in</body></html>", {"Content-Type": "text/html"})),
        DependencyUnavailable,
        same(json.JSONDecodeError),
        "pointing at an Ollama server",
    ),
    Fault(
        "json-not-an-object",
        lambda r: r.wire(answer(200, b"[1, 2]", {"Content-Type": "application/json"})),
        DependencyUnavailable,
        {"embed": (TypeError,), "generate": (TypeError,), "stream": (AttributeError,)},
    ),
    Fault(
        "json-of-another-shape",
        lambda r: r.wire(
            answer(200, b'{"embeddings": "none", "message": "none"}', {"Content-Type": "application/json"})
        ),
        DependencyUnavailable,
        same(pydantic.ValidationError),
        "unexpected answer",
    ),
    Fault(
        "host-with-another-scheme",
        lambda r: "ftp://127.0.0.1:1",
        ConfigurationError,
        same(httpx.UnsupportedProtocol),
        "not a usable URL",
    ),
    Fault(
        "host-with-a-bad-port",
        lambda r: "http://127.0.0.1:port",
        ConfigurationError,
        same(ValueError),
        "not a usable URL",
    ),
    Fault(
        "host-unprintable",
        lambda r: "http://oll\x00ama:11434",
        ConfigurationError,
        same(httpx.InvalidURL),
        "not a usable URL",
    ),
]
OLLAMA_CASES = [pytest.param(fault, path, id=f"{fault.id}-{path}") for fault in OLLAMA_FAULTS for path in fault.paths]


def check_translated(error: BaseException, expected: type[RagkitError], host: str) -> None:
    assert isinstance(error, expected), f"{type(error).__name__}: {error}"
    assert error.__cause__ is not None, "the original stays attached for the logs"
    # A person has to know which host to look at (a host that cannot be printed shows as repr).
    assert host in error.message or repr(host) in error.message, error.message
    if isinstance(error, DependencyError):
        assert error.dependency == "ollama"
    if isinstance(error, UpstreamRejected):
        assert error.details["dependency"] == "ollama"


@pytest.mark.anyio
@pytest.mark.parametrize(("fault", "path"), OLLAMA_CASES)
async def test_ollama_failures_become_ragkit_errors(rig: Rig, fault: Fault, path: str) -> None:
    host = fault.serve(rig)
    started = time.perf_counter()

    with pytest.raises(RagkitError) as caught:
        await call_ollama(path, host, big=fault.big)

    assert time.perf_counter() - started < BOUND_S
    if host == rig.fake.url:
        assert rig.fake.count() == 1, "one request, no hidden retries: the breaker decides about retrying"
    check_translated(caught.value, fault.error, host)
    assert isinstance(caught.value.__cause__, fault.raw[path]), repr(caught.value.__cause__)
    assert fault.hint.format(model=model_for(path)) in caught.value.message
    if fault.retry_after is not None:
        assert caught.value.retry_after == fault.retry_after  # type: ignore[attr-defined]


def expected_for_status(status: int) -> type[RagkitError]:
    """What an HTTP status from Ollama (or a proxy in front of it) means for ragkit."""
    if status == -1:  # an in-band {"error": ...} in a stream: the runner died mid-answer
        return DependencyUnavailable
    if status in (408, 504):
        return DependencyTimeout
    if status == 429 or status >= 500:
        return DependencyUnavailable  # down, overloaded or queue full: try again later
    return UpstreamRejected  # refused or misrouted (3xx, 4xx): Ollama itself is up


SWEPT_STATUSES = [s.value for s in http.HTTPStatus if 300 <= s.value < 600]


@pytest.mark.anyio
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("status", SWEPT_STATUSES)
async def test_every_ollama_error_status_is_classified(rig: Rig, status: int, path: str) -> None:
    # Redirects without a Location cannot be followed, so they surface as statuses too.
    host = rig.wire(answer(status, json_error(f"the stand-in answers {status}"), {"Content-Type": "application/json"}))

    with pytest.raises(RagkitError) as caught:
        await call_ollama(path, host)

    check_translated(caught.value, expected_for_status(status), host)
    assert isinstance(caught.value.__cause__, ollama.ResponseError)
    assert caught.value.__cause__.status_code == status
    if status in (429, 503):
        assert caught.value.retry_after == 2.0  # type: ignore[attr-defined]  # busy: clears in seconds
    if status == 404:
        # A 404 that names no model: the host is most likely not Ollama at all.
        assert "pointing at an Ollama server" in caught.value.message


@pytest.mark.anyio
async def test_a_full_connection_pool_is_a_timeout(rig: Rig) -> None:
    # The adapters' pool holds 100 connections and shares the request timeout, so exhausting it
    # through them races the read timeout; a client with a one-connection pool makes it certain.
    holding = threading.Event()

    def hold(conn: socket.socket, wire: WireServer) -> None:
        read_request(conn)
        holding.set()
        wait_for_hangup(conn)

    host = rig.wire(hold)
    client = ollama.AsyncClient(host=host, timeout=httpx.Timeout(5.0, pool=0.2), limits=httpx.Limits(max_connections=1))
    holder = asyncio.create_task(client.embed(model=EMBED_MODEL, input=["holds the only connection"]))
    try:
        assert await asyncio.to_thread(holding.wait, 5)
        with pytest.raises(httpx.PoolTimeout) as caught:
            await client.embed(model=EMBED_MODEL, input=["waits for it"])
    finally:
        holder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holder
        await client.close()

    error = translate(caught.value, host=host, model=EMBED_MODEL, role="embedding", timeout_s=0.2)
    assert isinstance(error, DependencyTimeout)
    assert host in error.message


# =========================================================================== Ollama: every class


def _request() -> httpx.Request:
    return httpx.Request("POST", "http://127.0.0.1:11434/api/embed")


def make_httpx_error(cls: type[BaseException]) -> BaseException:
    """A real instance, built the way httpx builds it."""
    if issubclass(cls, httpx.HTTPStatusError):
        request = _request()
        response = httpx.Response(503, request=request, json={"error": "busy"})
        return cls("Server error '503 Service Unavailable'", request=request, response=response)
    if issubclass(cls, httpx.RequestError):
        return cls("boom", request=_request())
    if cls in (httpx.StreamConsumed, httpx.StreamClosed, httpx.ResponseNotRead, httpx.RequestNotRead):
        return cls()
    return cls("boom")


def _validation_error() -> pydantic.ValidationError:
    try:
        pydantic.TypeAdapter(int).validate_python("not a number")
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("pydantic accepted a non-number")


def _json_error() -> json.JSONDecodeError:
    try:
        json.loads("<html>")
    except json.JSONDecodeError as exc:
        return exc
    raise AssertionError("json accepted HTML")


def _unicode_error() -> UnicodeEncodeError:
    try:
        "\ud800".encode()
    except UnicodeEncodeError as exc:
        return exc
    raise AssertionError("a lone surrogate encoded")


# What each httpx class means when the ollama client raises it. Every class httpx defines must be
# here (test_every_httpx_exception_class_is_accounted_for).
HTTPX_MEANING: dict[type[BaseException], type[RagkitError]] = {
    httpx.HTTPError: DependencyUnavailable,
    httpx.RequestError: DependencyUnavailable,
    httpx.TransportError: DependencyUnavailable,
    httpx.TimeoutException: DependencyTimeout,
    httpx.ConnectTimeout: DependencyTimeout,
    httpx.ReadTimeout: DependencyTimeout,
    httpx.WriteTimeout: DependencyTimeout,
    httpx.PoolTimeout: DependencyTimeout,
    httpx.NetworkError: DependencyUnavailable,
    httpx.ConnectError: DependencyUnavailable,
    httpx.ReadError: DependencyUnavailable,
    httpx.WriteError: DependencyUnavailable,
    httpx.CloseError: DependencyUnavailable,
    httpx.ProtocolError: DependencyUnavailable,
    httpx.LocalProtocolError: DependencyUnavailable,
    httpx.RemoteProtocolError: DependencyUnavailable,
    httpx.ProxyError: DependencyUnavailable,
    httpx.UnsupportedProtocol: ConfigurationError,
    httpx.InvalidURL: ConfigurationError,
    httpx.DecodingError: DependencyUnavailable,
    httpx.TooManyRedirects: DependencyUnavailable,
    httpx.HTTPStatusError: DependencyUnavailable,  # built with a 503 here; every status is swept below
    httpx.StreamError: DependencyUnavailable,
    httpx.StreamConsumed: DependencyUnavailable,
    httpx.StreamClosed: DependencyUnavailable,
    httpx.ResponseNotRead: DependencyUnavailable,
    httpx.RequestNotRead: DependencyUnavailable,
    httpx.CookieConflict: DependencyUnavailable,
}
# The other exceptions on the adapters' paths: the ollama client's own, the builtins it raises
# (measured, see ollama_client), and TimeoutError from the adapters' own deadline (anyio.fail_after).
OTHER_OLLAMA_RAISES: list[tuple[BaseException, type[RagkitError]]] = [
    (ollama.ResponseError("model 'x' not found", 404), UpstreamRejected),
    (ollama.ResponseError("unexpected EOF"), DependencyUnavailable),  # status -1: in-band stream error
    (ollama.RequestError("must provide a model"), UpstreamRejected),
    (ConnectionError("Failed to connect to Ollama."), DependencyUnavailable),
    (ConnectionRefusedError(111, "Connection refused"), DependencyUnavailable),
    (ConnectionResetError(104, "Connection reset by peer"), DependencyUnavailable),
    (BrokenPipeError(32, "Broken pipe"), DependencyUnavailable),
    (OSError(101, "Network is unreachable"), DependencyUnavailable),
    (TimeoutError(), DependencyTimeout),
    (_json_error(), DependencyUnavailable),
    (_validation_error(), DependencyUnavailable),
    (TypeError("EmbedResponse() argument after ** must be a mapping, not list"), DependencyUnavailable),
    (AttributeError("'list' object has no attribute 'get'"), DependencyUnavailable),
    (ValueError("Port could not be cast to integer value"), DependencyUnavailable),
    (_unicode_error(), InvalidInput),  # our own text could not be encoded: never the server's fault
]
# Classes no real failure above provokes, and why; test_translate_maps_every_exception_into_the_tree
# still translates a real instance of each.
CONSTRUCTED_ONLY = {
    httpx.HTTPError: "a base class",
    httpx.RequestError: "a base class",
    httpx.TransportError: "a base class",
    httpx.TimeoutException: "a base class",
    httpx.NetworkError: "a base class",
    httpx.ProtocolError: "a base class",
    httpx.WriteError: "httpcore swallows a failed write and reads the response, so it surfaces as ReadError",
    httpx.CloseError: "httpcore ignores errors while closing a connection",
    httpx.LocalProtocolError: "only for a malformed request, which the client never builds",
    httpx.ProxyError: "needs an HTTPS proxy that refuses CONNECT",
    httpx.HTTPStatusError: "the ollama client turns it into ResponseError (swept by status above)",
    httpx.StreamError: "a base class",
    httpx.StreamConsumed: "misuse of a response object, never a server's doing",
    httpx.StreamClosed: "misuse of a response object, never a server's doing",
    httpx.ResponseNotRead: "misuse of a response object, never a server's doing",
    httpx.RequestNotRead: "misuse of a request object, never a server's doing",
    httpx.CookieConflict: "cookies are never read",
    ollama.RequestError: "ollama 0.6 documents but no longer raises it",
}


def test_every_httpx_exception_class_is_accounted_for() -> None:
    defined = exception_classes("httpx")
    assert not defined - HTTPX_MEANING.keys(), (
        f"new in httpx, decide what they mean: {names(defined - HTTPX_MEANING.keys())}"
    )
    assert not HTTPX_MEANING.keys() - defined, f"gone from httpx: {names(HTTPX_MEANING.keys() - defined)}"


def test_every_ollama_exception_class_is_accounted_for() -> None:
    defined = exception_classes("ollama")
    covered = {type(exc) for exc, _ in OTHER_OLLAMA_RAISES}
    assert defined == {ollama.RequestError, ollama.ResponseError} and defined <= covered, names(defined)


def test_every_class_is_provoked_for_real_or_says_why_not() -> None:
    driven = {cls for fault in OLLAMA_FAULTS for raw in fault.raw.values() for cls in raw}
    driven.add(httpx.PoolTimeout)  # test_a_full_connection_pool_is_a_timeout
    classes = exception_classes("httpx") | exception_classes("ollama")
    unexplained = classes - driven - CONSTRUCTED_ONLY.keys()
    assert not unexplained, f"provoke these in OLLAMA_FAULTS or say why not: {names(unexplained)}"


def _case_id(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    return type(exc).__qualname__ + ("" if status is None else f"-{status}")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        pytest.param(exc, expected, id=_case_id(exc))
        for exc, expected in [(make_httpx_error(cls), meaning) for cls, meaning in HTTPX_MEANING.items()]
        + OTHER_OLLAMA_RAISES
    ],
)
@pytest.mark.parametrize("role", ["embedding", "generation"])
def test_translate_maps_every_exception_into_the_tree(
    exc: BaseException, expected: type[RagkitError], role: Any
) -> None:
    host = "http://ollama.internal:11434"
    error = translate(exc, host=host, model="m", role=role, timeout_s=TIMEOUT_S)
    assert type(error) is expected, f"{type(exc).__name__} became {type(error).__name__}: {error}"
    assert isinstance(error, RagkitError) and error is not exc
    assert host in error.message or repr(host) in error.message


@pytest.mark.parametrize("status", [-1, *(s.value for s in http.HTTPStatus), 599])
def test_every_status_means_the_same_however_it_arrives(status: int) -> None:
    # As the client raises it (ResponseError), and as raw httpx would, should a client version
    # stop wrapping: a 404 must stay "no such model" rather than become an outage.
    host = "http://ollama.internal:11434"
    raised = [ollama.ResponseError(json.dumps({"error": "model 'm' not found"}), status)]
    if status >= 100:
        request = _request()
        response = httpx.Response(status, request=request, json={"error": "model 'm' not found"})
        raised.append(httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response))
    for exc in raised:
        error = translate(exc, host=host, model="m", role="embedding", timeout_s=TIMEOUT_S)
        assert type(error) is expected_for_status(status), f"{type(exc).__name__} {status}: {type(error).__name__}"
        if status == 404:
            assert "ollama pull m" in error.message


# =========================================================================== Qdrant (REST)


def qdrant_error(message: str) -> bytes:
    return json.dumps({"status": {"error": message}, "time": 0.0}).encode()


JSON = {"Content-Type": "application/json"}


def qdrant_store(url: str, **options: Any) -> QdrantStore:
    # check_compatibility=False: the version probe at construction would hit the fault first.
    return QdrantStore(QdrantClient(url=url, timeout=1, check_compatibility=False, **options))


@pytest.fixture
def stores() -> Iterator[Callable[..., QdrantStore]]:
    made: list[QdrantStore] = []

    def make(url: str, **options: Any) -> QdrantStore:
        made.append(qdrant_store(url, **options))
        return made[-1]

    yield make
    for store in made:
        with contextlib.suppress(RagkitError):
            store.close()


# (call, whether it names a collection): the translation reads a 404 differently with a name.
STORE_CALLS = {
    "ping": (lambda s: s.ping(), False),
    "get_collection": (lambda s: s.get_collection("docs"), True),
}


def expected_store_error(status: int, named: bool) -> type[RagkitError]:
    if status == 404 and named:
        return CollectionNotFound
    if status == 409 and named:
        return CollectionExists
    if status in (400, 422):
        return InvalidInput
    if status in (408, 504):
        return DependencyTimeout
    if 400 <= status < 500 and status != 429:
        return UpstreamRejected  # credentials, methods, sizes: refused, not down
    return DependencyUnavailable  # 429, 5xx, and 2xx/3xx that are not the answer asked for


def check_store_error(error: BaseException, expected: type[RagkitError], raw: type[BaseException]) -> None:
    assert type(error) is expected, f"{type(error).__name__}: {error}"
    assert isinstance(error.__cause__, raw), repr(error.__cause__)
    if isinstance(error, DependencyError):
        assert error.dependency == "qdrant"


@pytest.mark.parametrize("call", STORE_CALLS)
@pytest.mark.parametrize("status", [204, 301, 302, 304, *(s.value for s in http.HTTPStatus if 400 <= s.value < 600)])
def test_every_qdrant_status_is_classified(
    rig: Rig, stores: Callable[..., QdrantStore], status: int, call: str
) -> None:
    invoke, named = STORE_CALLS[call]
    store = stores(rig.wire(answer(status, qdrant_error(f"the stand-in answers {status}"), JSON)))
    with pytest.raises(RagkitError) as caught:
        invoke(store)
    check_store_error(caught.value, expected_store_error(status, named), UnexpectedResponse)


@dataclass(frozen=True)
class StoreFault:
    id: str
    serve: Callable[[Rig], str]
    error: type[RagkitError]
    raw: type[BaseException]  # what qdrant-client raised
    source: type[BaseException] | None = None  # what a ResponseHandlingException wraps
    retry_after: float | None = None
    calls: tuple[str, ...] = tuple(STORE_CALLS)


STORE_FAULTS = [
    StoreFault(
        "connection-refused", Rig.closed_port, DependencyUnavailable, ResponseHandlingException, httpx.ConnectError
    ),
    StoreFault(
        "connect-timeout",
        Rig.full_backlog,
        DependencyTimeout,
        ResponseHandlingException,
        httpx.ConnectTimeout,
        calls=("ping",),
    ),
    StoreFault(
        "no-answer",
        lambda r: r.wire(hang),
        DependencyTimeout,
        ResponseHandlingException,
        httpx.ReadTimeout,
        calls=("ping",),
    ),
    StoreFault(
        "reset",
        lambda r: r.wire(reset_without_answer),
        DependencyUnavailable,
        ResponseHandlingException,
        httpx.ReadError,
    ),
    StoreFault(
        "closed-without-answer",
        lambda r: r.wire(close_without_answer),
        DependencyUnavailable,
        ResponseHandlingException,
        httpx.RemoteProtocolError,
    ),
    StoreFault(
        "garbage-status-line",
        lambda r: r.wire(garbage_status_line),
        DependencyUnavailable,
        ResponseHandlingException,
        httpx.RemoteProtocolError,
    ),
    StoreFault(
        "truncated-body",
        lambda r: r.wire(truncated_body),
        DependencyUnavailable,
        ResponseHandlingException,
        httpx.RemoteProtocolError,
    ),
    StoreFault(
        "bad-gzip", lambda r: r.wire(bad_gzip), DependencyUnavailable, ResponseHandlingException, httpx.DecodingError
    ),
    StoreFault(
        "json-of-another-shape",
        lambda r: r.wire(answer(200, b'{"result": 5, "status": "ok", "time": 0}', JSON)),
        DependencyUnavailable,
        ResponseHandlingException,
        pydantic.ValidationError,
    ),
    StoreFault(
        "overloaded-429-retry-after",
        lambda r: r.wire(answer(429, qdrant_error("too many requests"), {**JSON, "Retry-After": "3"})),
        DependencyUnavailable,
        ResourceExhaustedResponse,
        retry_after=3,
    ),
    StoreFault(
        "overloaded-429-unreadable-retry-after",
        lambda r: r.wire(answer(429, qdrant_error("too many requests"), {**JSON, "Retry-After": "soon"})),
        DependencyUnavailable,
        QdrantException,
    ),
]
STORE_CASES = [pytest.param(f, c, id=f"{f.id}-{c}") for f in STORE_FAULTS for c in f.calls]


@pytest.mark.parametrize(("fault", "call"), STORE_CASES)
def test_qdrant_failures_become_ragkit_errors(
    rig: Rig, stores: Callable[..., QdrantStore], fault: StoreFault, call: str
) -> None:
    store = stores(fault.serve(rig))
    started = time.perf_counter()
    with pytest.raises(RagkitError) as caught:
        STORE_CALLS[call][0](store)
    assert time.perf_counter() - started < 1 + 1.0  # the client's timeout is 1 s
    check_store_error(caught.value, fault.error, fault.raw)
    assert type(caught.value.__cause__) is fault.raw  # exactly: the enumeration below relies on it
    if fault.source is not None:
        assert isinstance(caught.value.__cause__.source, fault.source)  # type: ignore[attr-defined]
    if fault.retry_after is not None:
        assert caught.value.retry_after == fault.retry_after  # type: ignore[attr-defined]


@pytest.mark.parametrize("call", STORE_CALLS)
def test_qdrant_answer_that_is_not_json_is_an_outage(rig: Rig, stores: Callable[..., QdrantStore], call: str) -> None:
    # What a proxy's sign-in page or a non-Qdrant server at QDRANT_URL answers.
    store = stores(rig.wire(answer(200, b"<html><body>Sign in</body></html>", {"Content-Type": "text/html"})))
    with pytest.raises(RagkitError) as caught:
        STORE_CALLS[call][0](store)
    check_store_error(caught.value, DependencyUnavailable, json.JSONDecodeError)


def test_qdrant_upload_that_is_never_read_is_a_timeout(rig: Rig, stores: Callable[..., QdrantStore]) -> None:
    store = stores(rig.wire(never_read, receive_buffer=4096))
    point = Point(
        id=str(uuid.uuid4()),
        dense=[0.1, 0.2],
        sparse=SparseVector((), ()),
        payload={"doc_id": "d", "chunk_index": 0, "chunk_count": 1, "content_hash": "h", "text": BIG_TEXT},
    )
    with pytest.raises(RagkitError) as caught:
        store.upsert("docs", [point])
    check_store_error(caught.value, DependencyTimeout, ResponseHandlingException)
    assert isinstance(caught.value.__cause__.source, httpx.WriteTimeout)  # type: ignore[attr-defined]


class FailingTransport(httpx.BaseTransport):
    """An httpx transport that fails every request with one exception, as httpx's own do."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise self.error


@pytest.mark.parametrize(
    "cls", sorted(exception_classes("httpx"), key=lambda c: c.__qualname__), ids=lambda c: c.__qualname__
)
def test_every_httpx_exception_under_qdrant_client_is_translated(
    stores: Callable[..., QdrantStore], cls: type[BaseException]
) -> None:
    # Through qdrant-client as a real transport failure would travel: wrapped in
    # ResponseHandlingException, then translated by the store.
    store = stores("http://qdrant.internal:6333", transport=FailingTransport(make_httpx_error(cls)))
    with pytest.raises(RagkitError) as caught:
        store.get_collection("docs")
    expected = DependencyTimeout if issubclass(cls, httpx.TimeoutException) else DependencyUnavailable
    check_store_error(caught.value, expected, ResponseHandlingException)


# Which test makes qdrant-client raise each of its exception classes.
QDRANT_CLASSES_RAISED_BY = {
    ApiException: None,  # a base class: qdrant-client raises only its subclasses
    UnexpectedResponse: "test_every_qdrant_status_is_classified",
    ResponseHandlingException: "test_qdrant_failures_become_ragkit_errors",
    QdrantException: "test_qdrant_failures_become_ragkit_errors (overloaded-429-unreadable-retry-after)",
    ResourceExhaustedResponse: "test_qdrant_failures_become_ragkit_errors (overloaded-429-retry-after)",
}


def test_every_qdrant_client_exception_class_is_accounted_for() -> None:
    defined = exception_classes("qdrant_client")
    assert defined == QDRANT_CLASSES_RAISED_BY.keys(), (
        f"new or gone in qdrant-client: {names(defined ^ QDRANT_CLASSES_RAISED_BY.keys())}"
    )
    raised = {f.raw for f in STORE_FAULTS} | {UnexpectedResponse}
    assert raised == {cls for cls, test in QDRANT_CLASSES_RAISED_BY.items() if test}


# =========================================================================== Qdrant (gRPC)

# ragkit's services talk REST; QdrantStore takes any client, so prefer_grpc=True must be safe too.
_codes = grpc.StatusCode
GRPC_MEANING: dict[grpc.StatusCode, tuple[type[RagkitError], type[RagkitError]]] = {
    # code: (without a collection name, with one)
    _codes.CANCELLED: (DependencyUnavailable, DependencyUnavailable),
    _codes.UNKNOWN: (DependencyUnavailable, DependencyUnavailable),
    _codes.INVALID_ARGUMENT: (InvalidInput, InvalidInput),
    _codes.DEADLINE_EXCEEDED: (DependencyTimeout, DependencyTimeout),
    _codes.NOT_FOUND: (DependencyUnavailable, CollectionNotFound),
    _codes.ALREADY_EXISTS: (DependencyUnavailable, CollectionExists),
    _codes.PERMISSION_DENIED: (UpstreamRejected, UpstreamRejected),
    _codes.RESOURCE_EXHAUSTED: (DependencyUnavailable, DependencyUnavailable),
    _codes.FAILED_PRECONDITION: (InvalidInput, InvalidInput),
    _codes.ABORTED: (DependencyUnavailable, DependencyUnavailable),
    _codes.OUT_OF_RANGE: (InvalidInput, InvalidInput),
    _codes.UNIMPLEMENTED: (DependencyUnavailable, DependencyUnavailable),
    _codes.INTERNAL: (DependencyUnavailable, DependencyUnavailable),
    _codes.UNAVAILABLE: (DependencyUnavailable, DependencyUnavailable),
    _codes.DATA_LOSS: (DependencyUnavailable, DependencyUnavailable),
    _codes.UNAUTHENTICATED: (UpstreamRejected, UpstreamRejected),
}


@dataclass
class _Abort(grpc.GenericRpcHandler):
    """Answers every gRPC method of every service with one status (and trailing metadata)."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    trailing: tuple[tuple[str, str], ...] = ()
    calls: list[str] = field(default_factory=list)

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler:
        self.calls.append(handler_call_details.method)

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            if self.trailing:
                context.set_trailing_metadata(self.trailing)
            context.abort(self.code, f"the stand-in answers {self.code.name}")

        return grpc.unary_unary_rpc_method_handler(handle)


@pytest.fixture(scope="module")
def grpc_stand_in() -> Iterator[tuple[_Abort, int]]:
    handler = _Abort()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield handler, port
    server.stop(0)


def grpc_store(port: int, timeout: int = 2) -> QdrantStore:
    return QdrantStore(
        QdrantClient(host="127.0.0.1", grpc_port=port, prefer_grpc=True, timeout=timeout, check_compatibility=False)
    )


def test_every_grpc_status_code_is_accounted_for() -> None:
    assert set(grpc.StatusCode) - {grpc.StatusCode.OK} == GRPC_MEANING.keys()


@pytest.mark.parametrize("call", STORE_CALLS)
@pytest.mark.parametrize("code", GRPC_MEANING, ids=lambda c: c.name)
def test_every_grpc_status_is_classified(grpc_stand_in: tuple[_Abort, int], code: grpc.StatusCode, call: str) -> None:
    handler, port = grpc_stand_in
    handler.code, handler.trailing = code, ()
    handler.calls.clear()
    invoke, named = STORE_CALLS[call]
    store = grpc_store(port)
    try:
        with pytest.raises(RagkitError) as caught:
            invoke(store)
    finally:
        store.close()
    check_store_error(caught.value, GRPC_MEANING[code][named], grpc.RpcError)
    assert handler.calls, "the call went over gRPC"


def test_grpc_overload_with_retry_after_keeps_the_hint(grpc_stand_in: tuple[_Abort, int]) -> None:
    handler, port = grpc_stand_in
    handler.code, handler.trailing = grpc.StatusCode.RESOURCE_EXHAUSTED, (("retry-after", "3"),)
    store = grpc_store(port)
    try:
        with pytest.raises(DependencyUnavailable) as caught:
            store.ping()
    finally:
        handler.trailing = ()
        store.close()
    check_store_error(caught.value, DependencyUnavailable, ResourceExhaustedResponse)
    assert caught.value.retry_after == 3


def test_grpc_server_down_or_silent(rig: Rig) -> None:
    refused = grpc_store(int(rig.closed_port().rsplit(":", 1)[1]), timeout=1)
    silent = grpc_store(int(rig.wire(hang).rsplit(":", 1)[1]), timeout=1)  # TCP accepted, no HTTP/2 ever
    try:
        with pytest.raises(DependencyUnavailable) as down:
            refused.ping()
        started = time.perf_counter()
        with pytest.raises(DependencyTimeout) as hung:
            silent.ping()
        assert time.perf_counter() - started < 1 + 1.0
    finally:
        refused.close()
        silent.close()
    assert down.value.__cause__.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[union-attr]
    assert hung.value.__cause__.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[union-attr]

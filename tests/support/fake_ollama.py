"""A real HTTP server that speaks the part of Ollama's API ragkit uses, with fault injection.

It runs in a background thread on 127.0.0.1 (ephemeral port), so the adapters are tested through
the official ``ollama`` client and httpx exactly as in production: sockets, keep-alive, chunked
NDJSON streaming, timeouts and connection errors are all real.

    with FakeOllama(dim=64) as fake:
        client = ollama.AsyncClient(host=fake.url, timeout=2)
        fake.mode = "busy"                 # every route answers 503 from now on
        fake.set_mode("slow", "/api/chat", seconds=3)   # only chat is slow
        fake.stop(); fake.start()          # port refused, then back on the same port
        assert fake.count("/api/embed") == 0

Modes: ``ok``, ``slow`` (sleep ``slow_seconds`` then answer normally), ``error`` (500), ``busy``
(503), ``reset`` (read the request, then drop the connection with a TCP RST and no response),
``unknown_model`` (404 like Ollama's "model not found"), ``stream_error`` (chat streams one chunk,
then an in-band ``{"error": ...}`` line, as Ollama does when a runner dies mid-answer),
``stream_reset`` (chat starts its answer, then the connection is reset with a TCP RST: a crashed
host or a proxy cutting it), ``stream_stall`` (chat starts its answer, then sends nothing more
for ``slow_seconds``: a wedged runner), ``hold`` (wait until the test sets another mode, then
answer in that one: requests certainly in flight together, failing however the test decides).
Each request's headers are kept (``request_headers``).

Replies: by default chat answers from the first context passage, citing ``[1]``; ``chat_reply``
fixes the text, ``chat_pieces`` the exact streamed deltas (their join is the whole reply), and
``echo_instructions=True`` answers with the instructions the prompt gives, i.e. the messages with
their well-formed data passages taken out (``instructions_echo``): a model that obeys whatever
the prompt does not mark as data, so prompt-injection tests can see what leaks. ``POST /api/show``
answers for known models (404 otherwise), as readiness probes use it.

Condensation: a chat request whose prompt holds a ``<follow-up>`` (ragkit's condensation prompt,
``is_condensation``) is answered with ``condense_reply``, or by default with the follow-up and the
latest user turn it leans on, on one line. ``condense_mode`` (any mode above) applies to those
requests only, whatever the route's mode, so condensation can be slow or failing while answers
are not, or the other way round; ``condensations()`` returns the condensation requests received.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = (
    "ok",
    "slow",
    "error",
    "busy",
    "reset",
    "unknown_model",
    "stream_error",
    "stream_reset",
    "stream_stall",
    "hold",
)
# Faults that strike once an answer has begun: the status line and the first piece are sent.
_MID_ANSWER = ("stream_reset", "stream_stall")
HOLD_LIMIT_S = 30.0  # longest a held stream waits for its release

_WORD = re.compile(r"[a-z0-9]+")


def fake_embedding(text: str, dim: int) -> list[float]:
    """Hashed bag of words (plus character trigrams), L2-normalised.

    Deterministic across processes (blake2b, not ``hash()``), and texts that share words get
    close vectors, which is enough for retrieval tests to rank sensibly.
    """
    vector = [0.0] * dim
    words = _WORD.findall(text.lower())
    features: list[tuple[str, float]] = [(w, 1.0) for w in words]
    for word in words:
        padded = f"#{word}#"
        features.extend((padded[i : i + 3], 0.3) for i in range(len(padded) - 2))
    for feature, weight in features:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        index, sign = struct.unpack("<IxxxB", digest)
        vector[index % dim] += weight if sign & 1 else -weight
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        # Empty or symbol-only input: a fixed unit vector rather than NaNs, like a real model.
        vector[0] = 1.0
        return vector
    return [v / norm for v in vector]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # so start() after stop() can bind the same port at once

    def __init__(self, address: tuple[str, int], fake: FakeOllama) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out and hang up, and stop() cutting connections, are expected here;
        # socketserver's default would print a traceback for each. Real bugs still print.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive like Ollama's Go server, so httpx reuses pooled connections and
    # stop() has to deal with them (a stopped server must not keep answering on old sockets).
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle + delayed ACK add
        # ~40 ms to every response and the timing assertions in tests get noisy.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean

    def do_GET(self) -> None:
        self._dispatch(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._send_json(400, {"error": "invalid JSON body"})
            return
        self._dispatch(body if isinstance(body, dict) else {})

    # --- routing -------------------------------------------------------------------------

    def _dispatch(self, body: dict[str, Any] | None) -> None:
        fake = self.server.fake
        path = self.path.split("?", 1)[0]
        mode, seconds = fake._received(self.command, path, body)
        fake._record_headers(path, {name.lower(): value for name, value in self.headers.items()})
        model = str((body or {}).get("model", ""))

        if mode == "slow":
            fake._wait(seconds)
            mode = "ok"
        if mode == "hold":
            fake._wait(seconds)
            mode = fake._mode_for(path)
            mode = "ok" if mode == "hold" else mode  # still held at the time limit: answer
        if mode == "reset":
            self._reset()
            return
        if mode == "error":
            self._send_json(500, {"error": "llama runner process has terminated: exit status 2"})
            return
        if mode == "busy":
            self._send_json(
                503, {"error": "server busy, please try again.  maximum pending requests exceeded"}
            )
            return
        if mode == "unknown_model" and body is not None:
            self._send_json(404, {"error": f"model '{model or 'x'}' not found"})
            return

        route = (self.command, path)
        if route == ("GET", "/api/version"):
            self._send_json(200, {"version": fake.version})
        elif route == ("GET", "/api/tags"):
            self._send_json(200, {"models": [_model_entry(name) for name in fake.models]})
        elif route == ("POST", "/api/show"):
            self._show(model)
        elif route == ("POST", "/api/embed"):
            self._embed(body or {}, model)
        elif route == ("POST", "/api/chat"):
            self._chat(
                body or {},
                model,
                stream_error=mode == "stream_error",
                mid_answer=mode if mode in _MID_ANSWER else None,
                seconds=seconds,
            )
        else:
            self._send_json(404, {"error": f"404 page not found: {self.command} {path}"})

    def _model_known(self, model: str) -> bool:
        known = self.server.fake.models
        return not known or model in known or f"{model}:latest" in known

    def _show(self, model: str) -> None:
        if not self._model_known(model):
            self._send_json(404, {"error": f"model '{model}' not found"})
            return
        self._send_json(
            200,
            {
                "modelfile": f"FROM {model}",
                "template": "{{ .Prompt }}",
                "details": _model_entry(model)["details"],
                "model_info": {"general.architecture": "fake"},
                "capabilities": ["completion"],
                "modified_at": "2025-01-01T00:00:00Z",
            },
        )

    def _embed(self, body: dict[str, Any], model: str) -> None:
        if not self._model_known(model):
            self._send_json(404, {"error": f'model "{model}" not found, try pulling it first'})
            return
        raw_input = body.get("input", "")
        inputs = [raw_input] if isinstance(raw_input, str) else list(raw_input)
        refused = self.server.fake.refused_input
        if refused is not None and any(refused in str(text) for text in inputs):
            self._send_json(400, {"error": "the input length exceeds the context length"})
            return
        dim = int(body.get("dimensions") or self.server.fake.dim)
        vectors = [fake_embedding(str(text), dim) for text in inputs]
        self._send_json(
            200,
            {
                "model": model,
                "embeddings": vectors,
                "total_duration": 1_000_000,
                "load_duration": 0,
                "prompt_eval_count": sum(len(str(t).split()) for t in inputs),
            },
        )

    def _chat(
        self,
        body: dict[str, Any],
        model: str,
        *,
        stream_error: bool,
        mid_answer: str | None = None,
        seconds: float = 0.0,
    ) -> None:
        if not self._model_known(model):
            self._send_json(404, {"error": f'model "{model}" not found, try pulling it first'})
            return
        fake = self.server.fake
        messages = body.get("messages") or []
        condensing = is_condensation(body)
        if condensing:
            reply = condensation_reply(fake, messages)
        elif fake.chat_pieces is not None:
            reply = "".join(fake.chat_pieces)
        elif fake.echo_instructions:
            reply = instructions_echo(messages)
        else:
            reply = fake.chat_reply or _default_reply(messages)
        stream = body.get("stream", True)  # Ollama streams unless told otherwise
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if not stream and mid_answer is not None:
            # Headers and half the body, then the fault: the client has begun reading an answer.
            data = json.dumps({"model": model, "message": {"role": "assistant", "content": reply}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self._break_off(mid_answer, seconds)
            return
        if not stream:
            self._send_json(
                200,
                {
                    "model": model,
                    "created_at": created,
                    "message": {"role": "assistant", "content": reply},
                    "done": True,
                    "done_reason": "stop",
                    "total_duration": 1_000_000,
                    "eval_count": len(reply.split()),
                },
            )
            return

        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        fixed = fake.chat_pieces is not None and not condensing
        pieces = list(fake.chat_pieces or ()) if fixed else list(_split_reply(reply))
        for index, piece in enumerate(pieces):
            line = {
                "model": model,
                "created_at": created,
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }
            self._write_chunk(json.dumps(line).encode() + b"\n")
            if stream_error and index == 0:
                error = {"error": "an error was encountered while running the model: unexpected EOF"}
                self._write_chunk(json.dumps(error).encode() + b"\n")
                self._write_chunk(b"")
                return
            if mid_answer is not None and index == 0:
                self._break_off(mid_answer, seconds)
                return
            fake.hold_after_first(index)
            if fake.stream_delay:
                time.sleep(fake.stream_delay)
        final = {
            "model": model,
            "created_at": created,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_000_000,
            "eval_count": len(pieces),
        }
        self._write_chunk(json.dumps(final).encode() + b"\n")
        self._write_chunk(b"")

    # --- wire helpers ----------------------------------------------------------------------

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _break_off(self, fault: str, seconds: float) -> None:
        if fault == "stream_stall":
            # Silent, connection open, until the time is up or the test heals or stops the server.
            self.server.fake._wait(seconds)
            self.close_connection = True
            return
        self._reset()

    def _reset(self) -> None:
        # SO_LINGER 0 makes close() send RST instead of FIN: the client sees "connection reset"
        # (or "server disconnected") with no response at all, like a crashed or killed server.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


def _model_entry(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-01-01T00:00:00Z",
        "size": 1_000_000,
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": {"format": "gguf", "family": "fake", "parameter_size": "1M", "quantization_level": "F16"},
    }


# A data passage as ragkit's prompt delimits it: its content can hold no markup (ragkit quotes
# "<" and ">" inside passages), so a document cannot end its passage early or open another one.
_PASSAGE = re.compile(r'<passage id="(\d+)"(?: title="[^"<>]*")?>([^<]*)</passage>')


def instructions_echo(messages: Sequence[Any]) -> str:
    """What a model that obeys everything but its data would act on: every message, with each
    well-formed data passage taken out. A passage inlined without delimiters, or one whose text
    breaks out of them, stays in, and so does any instruction it carries."""
    parts = [str(m.get("content", "")) for m in messages if isinstance(m, dict)]
    instructions = _PASSAGE.sub("[passage withheld]", "\n".join(parts))
    return "I was told: " + " ".join(instructions.split())


def _default_reply(messages: Sequence[Any]) -> str:
    """An answer that cites [1], built from the first context passage if the prompt has one."""
    user = next((m.get("content", "") for m in reversed(messages) if isinstance(m, dict)), "")
    passage = next((m for m in _PASSAGE.finditer(str(user)) if m.group(1) == "1"), None)
    if passage is not None:
        snippet = " ".join(passage.group(2).split()[:20]).rstrip(".,;:")
        return f"According to the context, {snippet} [1]."
    match = re.search(r"^\[1\][^\n]*?:\s*(.+)$", str(user), flags=re.MULTILINE) or re.search(
        r"^\[1\]\s*(.+)$", str(user), flags=re.MULTILINE
    )
    if match:
        snippet = " ".join(match.group(1).split()[:20]).rstrip(".,;:")
        return f"According to the context, {snippet} [1]."
    return "The provided context does not contain the answer."


_FOLLOW_UP = re.compile(r"<follow-up>\s*(.*?)\s*</follow-up>", re.DOTALL)
_USER_TURN = re.compile(r'<turn role="user">\s*(.*?)\s*</turn>', re.DOTALL)


def _last_user_content(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    return next((str(m.get("content", "")) for m in reversed(messages) if isinstance(m, dict)), "")


def is_condensation(body: dict[str, Any] | None) -> bool:
    """Whether a chat request is ragkit's condensation prompt (a follow-up to make standalone)."""
    return bool(body) and _FOLLOW_UP.search(_last_user_content(body.get("messages"))) is not None


def condensation_reply(fake: FakeOllama, messages: Sequence[Any]) -> str:
    """``condense_reply``, else the follow-up and the latest user turn it leans on, on one line."""
    if fake.condense_reply is not None:
        return fake.condense_reply
    user = _last_user_content(list(messages))
    follow_up = _FOLLOW_UP.search(user)
    turns = _USER_TURN.findall(user)
    subject = f" (about: {turns[-1]})" if turns else ""
    return f"{follow_up.group(1) if follow_up else ''}{subject}"


def _split_reply(reply: str) -> Iterator[str]:
    """Word-sized deltas, like a model emitting tokens; joined they give the reply back."""
    for match in re.finditer(r"\s*\S+", reply):
        yield match.group(0)


class FakeOllama:
    """A fake Ollama server in a background thread; see the module docstring for usage."""

    def __init__(
        self,
        dim: int = 64,
        *,
        models: Iterable[str] = (),
        slow_seconds: float = 2.0,
        chat_reply: str | None = None,
        chat_pieces: Sequence[str] | None = None,
        echo_instructions: bool = False,
        stream_delay: float = 0.0,
        version: str = "0.6.0-fake",
        condense_reply: str | None = None,
        condense_mode: str | None = None,
        refused_input: str | None = None,
    ) -> None:
        self.dim = dim
        # An embedding request with an input holding this text is refused with 400, as Ollama
        # refuses an input its model cannot take: one document's fault, not an outage.
        self.refused_input = refused_input
        self.models: tuple[str, ...] = tuple(models)  # empty: every model name is accepted
        self.slow_seconds = slow_seconds
        self.chat_reply = chat_reply
        self.chat_pieces: tuple[str, ...] | None = tuple(chat_pieces) if chat_pieces is not None else None
        self.echo_instructions = echo_instructions
        self.stream_delay = stream_delay
        # Set to an Event: a streamed answer stops after its first piece until the test sets it
        # (a consumer can then hang up mid-answer for sure, however fast the machine).
        self.pieces_held: threading.Event | None = None
        self.version = version
        self.condense_reply = condense_reply
        if condense_mode is not None and condense_mode not in MODES:
            raise ValueError(f"unknown mode {condense_mode!r}; expected one of {MODES}")
        self.condense_mode = condense_mode  # None: condensation requests follow the route's mode
        self.port = 0
        self._mode = "ok"
        self._route_modes: dict[str, str] = {}
        self._route_seconds: dict[str, float] = {}
        self._counts: Counter[str] = Counter()
        self._bodies: dict[str, list[dict[str, Any]]] = {}
        self._headers: dict[str, list[dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def hold_after_first(self, index: int) -> None:
        """Called by the handlers after each streamed piece: holds the rest while ``pieces_held``
        is an unset Event (bounded, so a test that forgets to release it cannot hang the server)."""
        held = self.pieces_held
        if index == 0 and held is not None:
            held.wait(HOLD_LIMIT_S)

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> FakeOllama:
        """Listen (again): the first time on an ephemeral port, afterwards on the same one."""
        if self._server is not None:
            return self
        self._release.clear()
        self._server = _Server(("127.0.0.1", self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port (new connections are refused) and drop every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._release.set()  # wake handlers sleeping in "slow" mode so they exit promptly
        server.shutdown()
        server.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- fault injection -----------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self.set_mode(value)

    def set_mode(self, mode: str, *paths: str, seconds: float | None = None) -> None:
        """Set the mode for the given routes (e.g. "/api/chat"), or for all routes if none given.

        Setting the global mode clears per-route overrides, so ``fake.mode = "ok"`` heals all.
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        with self._lock:
            if not paths:
                self._mode = mode
                self._route_modes.clear()
                self._route_seconds.clear()
                if seconds is not None:
                    self.slow_seconds = seconds
            for path in paths:
                self._route_modes[path] = mode
                if seconds is not None:
                    self._route_seconds[path] = seconds
        if mode != "slow":
            # Let requests already sleeping in "slow" go on, so a healed server answers them.
            self._release.set()
            self._release = threading.Event()

    # --- observation -----------------------------------------------------------------------------

    def count(self, path: str | None = None) -> int:
        """Requests received (in any mode) for one path, or in total."""
        with self._lock:
            if path is None:
                return sum(self._counts.values())
            return self._counts[path]

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        """The JSON bodies received on a POST route, oldest first."""
        with self._lock:
            return list(self._bodies.get(path, []))

    def condensations(self) -> list[dict[str, Any]]:
        """The bodies of the condensation requests received (on any chat route), oldest first."""
        with self._lock:
            return [body for bodies in self._bodies.values() for body in bodies if is_condensation(body)]

    def request_headers(self, path: str) -> list[dict[str, str]]:
        """The headers (names in lower case) of each request received on a route, oldest first."""
        with self._lock:
            return [dict(h) for h in self._headers.get(path, [])]

    def reset_counters(self) -> None:
        with self._lock:
            self._counts.clear()
            self._bodies.clear()
            self._headers.clear()

    # --- called from handler threads ---------------------------------------------------------

    def _received(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[str, float]:
        with self._lock:
            self._counts[path] += 1
            if body is not None:
                self._bodies.setdefault(path, []).append(body)
            mode = self._route_modes.get(path, self._mode)
            seconds = self._route_seconds.get(path, self.slow_seconds)
            if self.condense_mode is not None and is_condensation(body):
                mode = self.condense_mode
        return mode, seconds

    def _mode_for(self, path: str) -> str:
        with self._lock:
            return self._route_modes.get(path, self._mode)

    def _record_headers(self, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self._headers.setdefault(path, []).append(headers)

    def _wait(self, seconds: float) -> None:
        self._release.wait(seconds)

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

"""A real HTTP server that speaks the part of the OpenAI API ragkit uses, with fault injection: the
stand-in for vLLM, llama.cpp's server, LM Studio, TEI or a hosted API.

It is the Ollama stand-in (tests/support/fake_ollama.py) with another API on the wire: the same
lifecycle (127.0.0.1, ephemeral port, ``stop()``/``start()`` on the same port), the same fault
switches and the same observation, so tests of both read alike. The adapters are tested through
the official ``openai`` client exactly as in production: sockets, keep-alive, chunked SSE
streaming, timeouts and connection errors are all real.

    with FakeOpenAI(dim=64) as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=0)
        fake.set_mode("error", "/v1/chat/completions")   # only chat answers 500
        fake.api_key = "sk-right"          # requests without this bearer key get 401
        fake.max_inputs = 32               # more inputs per embeddings request get 413, as TEI

Routes: ``GET /v1/models``, ``POST /v1/chat/completions`` (whole, or ``stream: true`` as SSE
``data: {...}`` chunks ending in ``data: [DONE]``), ``POST /v1/embeddings`` (float or base64).
Modes, as the Ollama stand-in's: ``ok``, ``slow`` (hold ``slow_seconds``, then answer), ``error``
(500), ``busy`` (503), ``reset`` (a TCP RST instead of a response), ``unknown_model`` (404 "model
does not exist", as vLLM), ``stream_error`` (one chunk, then an in-band ``data: {"error": ...}``),
``stream_reset`` (``break_after`` chunks, then a TCP RST), ``stream_stall`` (``break_after``
chunks, then silence for ``slow_seconds``), ``hold`` (until the test sets another mode). Replies
are the Ollama stand-in's (``chat_reply``, ``chat_pieces``, or from the first passage, citing [1]),
and so is condensation (``condense_reply``, ``condense_mode``, ``condensations()``).
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

from tests.support import fake_ollama
from tests.support.fake_ollama import FakeOllama, fake_embedding

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
MODELS = "/v1/models"
_MID_ANSWER = ("stream_reset", "stream_stall")


def _error(message: str, kind: str, code: str | int | None = None) -> dict[str, Any]:
    """An error body the way OpenAI (and vLLM, LM Studio) shape it."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class _Server(fake_ollama._Server):
    def __init__(self, address: tuple[str, int], fake: FakeOpenAI) -> None:
        self.fake = fake
        ThreadingHTTPServer.__init__(self, address, _Handler)


class _Handler(fake_ollama._Handler):
    """The Ollama stand-in's handler (keep-alive, TCP_NODELAY, RST, chunked writes), routed anew."""

    server: _Server

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
            mode = "ok" if mode == "hold" else mode
        if mode == "reset":
            self._reset()
            return
        if fake.api_key is not None:
            presented = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if presented != fake.api_key:
                # Quoted back whole (OpenAI masks the middle), so a test can see ragkit never
                # repeats what a server says about the key.
                self._send_json(
                    401, _error(f"Incorrect API key provided: {presented}", "invalid_request_error", "invalid_api_key")
                )
                return
        if mode == "error":
            self._send_json(500, _error("CUDA error: an illegal memory access was encountered", "server_error"))
            return
        if mode == "busy":
            self._send_json(503, _error("The server is overloaded, please try again later", "server_error"))
            return
        if mode == "unknown_model" and body is not None:
            self._send_json(404, _error(f"The model `{model}` does not exist.", "NotFoundError", 404))
            return

        route = (self.command, path)
        if route == ("GET", MODELS):
            names = fake.models or ("fake-chat", "fake-embed")
            entries = [{"id": n, "object": "model", "created": 0, "owned_by": "fake"} for n in names]
            self._send_json(200, {"object": "list", "data": entries})
        elif route == ("POST", EMBEDDINGS):
            self._embeddings(body or {}, model)
        elif route == ("POST", CHAT):
            self._chat(body or {}, model, mode=mode, seconds=seconds)
        else:
            self._send_json(404, _error(f"Not Found: {self.command} {path}", "not_found"))

    def _model_missing(self, model: str) -> bool:
        known = self.server.fake.models
        if known and model not in known:
            self._send_json(404, _error(f"The model `{model}` does not exist.", "NotFoundError", 404))
            return True
        return False

    def _embeddings(self, body: dict[str, Any], model: str) -> None:
        if self._model_missing(model):
            return
        fake = self.server.fake
        raw = body.get("input", "")
        inputs = [raw] if isinstance(raw, str) else list(raw)
        if fake.max_inputs is not None and len(inputs) > fake.max_inputs:
            self._send_json(
                413, _error(f"batch size {len(inputs)} > maximum allowed batch size {fake.max_inputs}", "Validation")
            )
            return
        dim = int(body.get("dimensions") or fake.dim)
        data = []
        for index, text in enumerate(inputs):
            # Not unit length, as some servers' pooling leaves them: the adapter normalises.
            vector = [2.0 * x for x in fake_embedding(str(text), dim)]
            if body.get("encoding_format") == "base64":
                encoded: Any = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
            else:
                encoded = vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        if fake.reverse_embeddings:
            data.reverse()  # the API's index, not the list's order, says whose vector it is
        tokens = sum(len(str(t).split()) for t in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        self._send_json(200, {"object": "list", "data": data, "model": model, "usage": usage})

    def _chat(self, body: dict[str, Any], model: str, *, mode: str, seconds: float) -> None:
        if self._model_missing(model):
            return
        fake = self.server.fake
        messages = body.get("messages") or []
        if fake_ollama.is_condensation(body):
            reply = fake_ollama.condensation_reply(fake, messages)
        elif fake.chat_pieces is not None:
            reply = "".join(fake.chat_pieces)
        else:
            reply = fake.chat_reply or fake_ollama._default_reply(messages)
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            answer = {
                **base,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": len(reply.split()), "total_tokens": 1},
            }
            if mode in _MID_ANSWER:
                # Headers and half the body, then the fault: the client has begun reading an answer.
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self._break_off(mode, seconds)
                return
            self._send_json(200, answer)
            return

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def event(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            self._write_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")

        event({"role": "assistant", "content": ""})  # as OpenAI: the role first, no text yet
        pieces = list(fake.chat_pieces) if fake.chat_pieces is not None else list(fake_ollama._split_reply(reply))
        for index, piece in enumerate(pieces):
            event({"content": piece})
            if mode == "stream_error" and index == 0:
                self._write_chunk(
                    b"data: " + json.dumps(_error("the model runner crashed", "server_error")).encode() + b"\n\n"
                )
                self._write_chunk(b"")
                return
            if mode in _MID_ANSWER and index + 1 == min(fake.break_after, len(pieces)):
                self._break_off(mode, seconds)
                return
            fake.hold_after_first(index)
        event({}, finish="stop")
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")


class FakeOpenAI(FakeOllama):
    """A fake OpenAI-compatible server in a background thread; see the module docstring."""

    def __init__(self, dim: int = 64, *, api_key: str | None = None, break_after: int = 2, **kwargs: Any) -> None:
        super().__init__(dim, **kwargs)
        self.api_key = api_key  # None: any key, or none, is accepted (a local server)
        self.break_after = break_after  # chunks a mid-stream fault lets through first
        self.max_inputs: int | None = None
        self.reverse_embeddings = False

    @property
    def base_url(self) -> str:
        """What OPENAI_BASE_URL is set to: the API root, as for any compatible server."""
        return f"{self.url}/v1"

    def start(self) -> FakeOpenAI:
        """Listen (again): the first time on an ephemeral port, afterwards on the same one."""
        if self._server is not None:
            return self
        self._release.clear()
        self._server = _Server(("127.0.0.1", self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> FakeOpenAI:
        return self.start()

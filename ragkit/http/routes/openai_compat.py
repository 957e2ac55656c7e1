"""The OpenAI-compatible face, under `/openai/v1`: any OpenAI client or chat front end (Open WebUI,
LibreChat, an SDK) pointed at ragkit gets cited answers from a collection.

- ``GET /models``: one model per collection, ``ragkit/<collection>``;
- ``POST /chat/completions``: the last user message is the question, the user and assistant
  messages before it the history (a follow-up is made standalone as on the native API); the answer
  cites its sources as ``[n]`` in the content, and the extension field ``ragkit`` carries the
  sources, ``degraded``/``reasons`` and ``standalone_query`` (in the last chunk when streamed);
- ``POST /embeddings``: the collection's own embedder, so a client can reuse the vectors.

Auth, scopes and rate limits are the native API's (`Authorization: Bearer` with the service token or
an end-user JWT, which is how OpenAI clients send their key); errors come in OpenAI's shape
(``http/errors.py``). System messages, ``temperature`` and ``max_tokens`` go to the generator when
it is an LLM (system messages as instructions added to ragkit's rules, never searched); the
extractive generator quotes passages and has no use for them.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ragkit.core.errors import RagkitError
from ragkit.core.types import AnswerResult, GenerationOptions, hit_to_dict
from ragkit.http.deps import require, services_of
from ragkit.http.openai_schemas import (
    MODEL_PREFIX,
    ChatRequest,
    EmbeddingRequest,
    collection_of,
    conversation_of,
    usage,
)
from ragkit.http.schemas import DEPENDENCIES, GATED, error_responses

TAG = "openai"
PREFIX = "/openai/v1"
router = APIRouter()
_ERRORS = error_responses(*GATED, 404, 409, *DEPENDENCIES)


@router.get("/models", dependencies=[require("read")], responses=error_responses(*GATED))
async def models(request: Request) -> dict[str, Any]:
    """One model per collection: ``ragkit/<collection>``."""
    collections = await services_of(request).collections.all_stats()
    return {
        "object": "list",
        "data": [_model(c.spec.name, c.spec.created_at) for c in collections],
    }


def _model(name: str, created_at: str) -> dict[str, Any]:
    try:
        created = int(datetime.fromisoformat(created_at).timestamp())
    except ValueError:
        created = 0
    return {"id": MODEL_PREFIX + name, "object": "model", "created": created, "owned_by": "ragkit"}


@router.post(
    "/chat/completions",
    dependencies=[require("read")],
    responses={200: {"content": {"text/event-stream": {}}}} | _ERRORS,
)
async def chat_completions(body: ChatRequest, request: Request):  # noqa: ANN201 - JSON or a stream
    """A cited answer from the collection the model names, whole or streamed (server-sent events)."""
    collection = collection_of(body.model)
    question, history, instructions = conversation_of(body.messages)
    generation = GenerationOptions(
        instructions=tuple(instructions),
        temperature=body.temperature,
        max_tokens=body.max_completion_tokens or body.max_tokens,
    )
    pipeline = services_of(request).pipeline
    options = body.ragkit
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    search = {"top_k": options.top_k, "mode": options.mode, "filters": options.filters, "history": history}
    if not body.stream:
        result = await pipeline.answer(collection, question, **search, options=generation)
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": result.answer}, "finish_reason": "stop"}
            ],
            "usage": usage(question, result.answer),
            "ragkit": _extension(result),
        }
    events = pipeline.answer_stream(collection, question, **search, options=generation)
    # Retrieval happens before the first event: its errors (404, 422, 503) are still HTTP errors.
    first = await anext(events)

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        body_ = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(body_, ensure_ascii=False)}\n\n".encode()

    async def stream() -> AsyncIterator[bytes]:
        sources = first[1]
        report: dict[str, Any] = {
            "sources": sources["sources"],
            "standalone_query": sources["standalone_query"],
            "degraded": sources["degraded"],
            "reasons": sources["reasons"],
        }
        answer = ""
        yield chunk({"role": "assistant", "content": ""})
        try:
            async for event, data in events:
                if event == "token":
                    answer += data["text"]
                    yield chunk({"content": data["text"]})
                elif event in ("degraded", "error"):
                    report.update(degraded=True, reasons=data.get("reasons", report["reasons"]))
                    if event == "error":
                        report["error"] = data["error"]
                elif event == "done":
                    report.update(degraded=data["degraded"], reasons=data["reasons"], generator=data["generator"])
        except RagkitError as exc:
            report.update(degraded=True, error=exc.to_dict())
        yield chunk({}, "stop", usage=usage(question, answer), ragkit=report)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _extension(result: AnswerResult) -> dict[str, Any]:
    return {
        "sources": [hit_to_dict(h) for h in result.sources],
        "standalone_query": result.standalone_query,
        "degraded": result.degraded,
        "reasons": list(result.reasons),
        "generator": result.generator,
        "mode_used": result.mode_used,
    }


@router.post("/embeddings", dependencies=[require("read")], responses=_ERRORS)
async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    """Vectors from the embedder of the collection the model names."""
    collection = collection_of(body.model)
    texts = [body.input] if isinstance(body.input, str) else body.input
    vectors = await services_of(request).collections.embed(collection, texts)
    tokens = sum(len(t.split()) for t in texts)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encoded(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector

"""The OpenAI-compatible face (`/openai/v1`), driven by the official `openai` client, sync and async,
streaming and not, against a live service on the real embedded stack: what a user of Open WebUI or
an SDK would see, errors included."""

from __future__ import annotations

import json
import math

import httpx
import openai
import pytest

from tests.conftest import SECRET, Stack
from tests.support.fake_ollama import FakeOllama
from tests.support.fake_ollama import is_condensation as fake_is_condensation
from tests.support.fake_openai import FakeOpenAI

DOCS = [
    {
        "id": "breakers",
        "title": "Circuit breakers",
        "text": "A circuit breaker opens after five consecutive failures of its dependency. "
        "While it is open, requests fail fast instead of waiting. After 30 seconds one probe "
        "request is let through, and a success closes the breaker again.",
    },
    {
        "id": "snapshots",
        "title": "Qdrant snapshots",
        "text": "A Qdrant snapshot is an archive of one collection. Create it with a POST to the "
        "collection's snapshots endpoint. Restore a snapshot by uploading the archive to the "
        "snapshots upload endpoint of the node.",
    },
    {
        "id": "redis",
        "title": "Redis persistence",
        "text": "Redis persists data with RDB snapshots and an append-only file. Restore Redis by "
        "copying the dump.rdb file into the data directory before it starts.",
    },
]
MODEL = "ragkit/ops"


def load(stack: Stack) -> None:
    assert stack.http.post("/api/v1/rag/collections", json={"name": "ops"}).status_code == 201
    response = stack.http.post("/api/v1/rag/collections/ops/documents", json={"documents": DOCS})
    assert response.status_code == 200, response.text


def client(stack: Stack, key: str = SECRET) -> openai.OpenAI:
    # max_retries=0: the client's own retries would hide what the service answered.
    return openai.OpenAI(base_url=f"{stack.url}/openai/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture
def ops(stack: Stack) -> Stack:
    load(stack)
    return stack


def ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def test_models_are_the_collections(ops: Stack) -> None:
    ids = [m.id for m in client(ops).models.list()]
    assert ids == [MODEL]


def test_a_chat_completion_is_a_cited_answer_with_its_sources(ops: Stack) -> None:
    completion = client(ops).chat.completions.create(model=MODEL, messages=ask("How many failures open a breaker?"))
    answer = completion.choices[0].message.content
    assert "five consecutive failures" in answer and "[1]" in answer
    assert completion.choices[0].finish_reason == "stop" and completion.model == MODEL
    report = completion.model_extra["ragkit"]
    assert report["sources"][0]["doc_id"] == "breakers" and report["degraded"] is False
    assert completion.usage.completion_tokens > 0


def test_a_streamed_completion_ends_with_the_sources(ops: Stack) -> None:
    stream = client(ops).chat.completions.create(
        model=MODEL, messages=ask("How many failures open a breaker?"), stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "five consecutive failures" in text and "[1]" in text
    assert chunks[0].choices[0].delta.role == "assistant"
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.model_extra["ragkit"]["sources"][0]["doc_id"] == "breakers"


@pytest.mark.anyio
async def test_the_async_client_streams_and_answers_too(ops: Stack) -> None:
    async with openai.AsyncOpenAI(base_url=f"{ops.url}/openai/v1", api_key=SECRET, max_retries=0) as async_client:
        whole = await async_client.chat.completions.create(model=MODEL, messages=ask("How is a snapshot restored?"))
        stream = await async_client.chat.completions.create(
            model=MODEL, messages=ask("How is a snapshot restored?"), stream=True
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream]
    assert "".join(pieces) == whole.choices[0].message.content
    assert whole.model_extra["ragkit"]["sources"][0]["doc_id"] == "snapshots"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_a_follow_up_in_the_conversation_is_answered_from_the_right_document(ops: Stack) -> None:
    chat = client(ops)
    first = chat.chat.completions.create(model=MODEL, messages=ask("How do I take a snapshot of a Qdrant collection?"))
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        *ask("How do I take a snapshot of a Qdrant collection?"),
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": [{"type": "text", "text": "and how do I restore it?"}]},
    ]
    follow_up = chat.chat.completions.create(model=MODEL, messages=messages)
    report = follow_up.model_extra["ragkit"]
    assert "Qdrant" in report["standalone_query"] and "snapshot" in report["standalone_query"]
    assert report["sources"][0]["doc_id"] == "snapshots"
    assert "Restore a snapshot" in follow_up.choices[0].message.content


def test_embeddings_are_the_collections_own_vectors(ops: Stack, local_embedder) -> None:  # noqa: ANN001
    response = client(ops).embeddings.create(model=MODEL, input=["circuit breakers", "snapshots"])
    vectors = [d.embedding for d in response.data]
    assert [d.index for d in response.data] == [0, 1] and len(vectors[0]) == 384
    expected = local_embedder.embed_sync(["circuit breakers"])[0]
    cosine = sum(a * b for a, b in zip(vectors[0], expected, strict=True)) / (
        math.sqrt(sum(a * a for a in vectors[0])) * math.sqrt(sum(b * b for b in expected))
    )
    assert cosine > 0.9999


def test_errors_are_the_ones_openai_clients_know(ops: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as unknown_model:
        client(ops).chat.completions.create(model="gpt-4o", messages=ask("hello?"))
    assert "ragkit/<collection>" in unknown_model.value.body["message"]
    assert unknown_model.value.body["type"] == "not_found_error"
    with pytest.raises(openai.NotFoundError):
        client(ops).chat.completions.create(model="ragkit/nope", messages=ask("hello?"))
    with pytest.raises(openai.AuthenticationError) as bad_key:
        client(ops, key="sk-not-the-token").models.list()
    assert bad_key.value.body["type"] == "authentication_error"


@pytest.mark.parametrize(
    ("messages", "says"),
    [
        ([], "messages"),
        ([{"role": "tool", "content": "x"}], "role"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}]}],
            "type",
        ),
        ([{"role": "user", "content": 42}], "content"),
        ([{"role": "user", "content": "q?"}, {"role": "assistant", "content": "a"}], "last message"),
        ([{"role": "user", "content": "   "}], "empty"),
        ([{"role": "user", "content": "x" * 100_001}], "content"),
    ],
)
def test_bad_messages_are_a_422_in_openais_shape(ops: Stack, messages: list, says: str) -> None:
    response = post_chat(ops, json.dumps({"model": MODEL, "messages": messages}))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] is None and says in error["message"]
    with pytest.raises(openai.UnprocessableEntityError):
        client(ops).chat.completions.create(model=MODEL, messages=messages)


def post_chat(stack: Stack, body: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    return httpx.post(f"{stack.url}/openai/v1/chat/completions", content=body.encode(), headers=headers, timeout=30)


def test_hostile_text_is_refused_and_the_service_stays_up(ops: Stack) -> None:
    # A lone surrogate: valid JSON, not valid text, and no client library would send it.
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "lone SURROGATE"}]})
    body = body.replace("SURROGATE", "\\ud800")  # json.dumps would write it as this escape too
    response = post_chat(ops, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert client(ops).models.list().data[0].id == MODEL


def test_unused_fields_of_other_clients_are_ignored(ops: Stack) -> None:
    completion = client(ops).chat.completions.create(
        model=MODEL,
        messages=ask("How is a snapshot restored?"),
        n=1,
        user="ada",
        top_p=0.9,
        presence_penalty=0,
        temperature=0.2,
        max_tokens=200,
    )
    assert completion.model_extra["ragkit"]["sources"][0]["doc_id"] == "snapshots"


def test_rate_limits_apply_and_the_client_raises_rate_limit_error(stack_factory) -> None:  # noqa: ANN001
    stack = stack_factory(service_rate_limit="2/minute")
    chat = client(stack)
    chat.models.list()
    chat.models.list()
    with pytest.raises(openai.RateLimitError) as limited:
        chat.models.list()
    assert int(limited.value.response.headers["Retry-After"]) >= 1
    assert limited.value.body["type"] == "rate_limit_error"


def test_a_degraded_answer_says_so(stack_factory) -> None:  # noqa: ANN001
    with FakeOllama(dim=64) as fake:
        stack = stack_factory(generator="ollama", ollama_host=fake.url, embedder="local")
        load(stack)
        fake.mode = "error"
        completion = client(stack).chat.completions.create(model=MODEL, messages=ask("How is a snapshot restored?"))
        report = completion.model_extra["ragkit"]
        assert report["degraded"] is True and report["generator"] == "extractive"
        assert any("generation unavailable" in reason for reason in report["reasons"])
        assert "[1]" in completion.choices[0].message.content


SYSTEM = "Answer in French, in one sentence."


def _sent_system_prompt(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "system")


@pytest.mark.parametrize("stream", [False, True])
def test_system_messages_and_sampling_reach_an_ollama_generator(stack_factory, stream: bool) -> None:  # noqa: ANN001
    with FakeOllama(dim=64) as fake:
        stack = stack_factory(generator="ollama", ollama_host=fake.url, embedder="local")
        load(stack)
        messages = [{"role": "system", "content": SYSTEM}, *ask("How is a snapshot restored?")]
        reply = client(stack).chat.completions.create(
            model=MODEL, messages=messages, temperature=0.2, max_tokens=77, stream=stream
        )
        if stream:
            chunks = list(reply)
            assert chunks[-1].model_extra["ragkit"]["generator"].startswith("ollama:")
        else:
            assert reply.model_extra["ragkit"]["generator"].startswith("ollama:")
        (sent,) = [b for b in fake.bodies("/api/chat") if not fake_is_condensation(b)]
        system = _sent_system_prompt(sent)
        # Added after ragkit's own rules, which stay: the caller refines the answer, never lifts them.
        assert system.index("untrusted data") < system.index(SYSTEM)
        assert sent["options"]["temperature"] == 0.2 and sent["options"]["num_predict"] == 77
        # The instruction is for the writer only: it is not what was searched.
        user = next(m["content"] for m in sent["messages"] if m["role"] == "user")
        assert "French" not in user


def test_system_messages_and_sampling_reach_an_openai_compatible_generator(stack_factory) -> None:  # noqa: ANN001
    with FakeOpenAI(dim=64) as fake:
        stack = stack_factory(
            generator="openai", embedder="local", openai_base_url=fake.base_url, openai_model="fake-chat"
        )
        load(stack)
        messages = [{"role": "developer", "content": SYSTEM}, *ask("How is a snapshot restored?")]
        completion = client(stack).chat.completions.create(
            model=MODEL, messages=messages, temperature=0.0, max_completion_tokens=50
        )
        assert completion.model_extra["ragkit"]["generator"] == "openai:fake-chat"
        (sent,) = fake.bodies("/v1/chat/completions")
        assert SYSTEM in _sent_system_prompt(sent)
        assert sent["temperature"] == 0.0 and sent["max_tokens"] == 50


def test_without_system_messages_the_prompt_is_ragkits_alone(stack_factory) -> None:  # noqa: ANN001
    with FakeOllama(dim=64) as fake:
        stack = stack_factory(generator="ollama", ollama_host=fake.url, embedder="local")
        load(stack)
        client(stack).chat.completions.create(model=MODEL, messages=ask("How is a snapshot restored?"))
        (sent,) = fake.bodies("/api/chat")
        assert "application you answer for" not in _sent_system_prompt(sent)
        assert "temperature" not in (sent.get("options") or {})

"""The MCP server, driven by the official `mcp` SDK's own client session against both transports: the
service's streamable HTTP endpoint (`/mcp`) and `ragkit mcp` over stdio, on the real embedded stack.
What an agent in an IDE or a desktop assistant would see, errors, auth and rate limits included."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.conftest import SECRET, Stack
from tests.support.fake_ollama import FakeOllama

pytestmark = pytest.mark.anyio
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}

DOCS = [
    {
        "id": "guide/breakers.md",
        "title": "Circuit breakers",
        "text": "A circuit breaker opens after five consecutive failures of its dependency. "
        "While it is open, requests fail fast instead of waiting. After 30 seconds one probe "
        "request is let through, and a success closes the breaker again.",
    },
    {
        "id": "snapshots",
        "title": "Qdrant snapshots",
        "text": "A Qdrant snapshot is an archive of one collection. Create it with a POST to the "
        "collection's snapshots endpoint.\n\nRestore a snapshot by uploading the archive to the "
        "snapshots upload endpoint of the node.",
        "page_starts": [0, 108],
    },
    {
        "id": "redis",
        "title": "Redis persistence",
        "text": "Redis persists data with RDB snapshots and an append-only file. Restore Redis by "
        "copying the dump.rdb file into the data directory before it starts.",
    },
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def load(stack: Stack) -> None:
    assert stack.http.post("/api/v1/rag/collections", json={"name": "ops"}).status_code == 201
    response = stack.http.post("/api/v1/rag/collections/ops/documents", json={"documents": DOCS})
    assert response.status_code == 200, response.text


@pytest.fixture
def ops(stack: Stack) -> Stack:
    load(stack)
    return stack


@contextlib.asynccontextmanager
async def over_http(stack: Stack, headers: dict[str, str] | None = None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {SECRET}"} if headers is None else headers
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        async with streamable_http_client(f"{stack.url}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


@contextlib.asynccontextmanager
async def over_stdio(url: str, cwd: Path, token: str = SECRET) -> AsyncIterator[ClientSession]:
    env = {**os.environ, "RAGKIT_API_URL": url, "INTER_SERVICE_SECRET": token}
    command = StdioServerParameters(command=sys.executable, args=["-m", "ragkit", "mcp"], env=env, cwd=str(cwd))
    async with stdio_client(command) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    # The structured result and the text a model reads say the same.
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


async def refusal(session: ClientSession, tool: str, **arguments: Any) -> str:
    result = await session.call_tool(tool, arguments)
    assert result.is_error
    return result.content[0].text


# --------------------------------------------------------------------------- streamable HTTP


async def test_the_tools_are_listed_with_what_they_take(ops: Stack) -> None:
    async with over_http(ops) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == {"search", "ask", "list_collections", "get_document"}
    assert set(tools["search"].input_schema["properties"]) == {"collection", "query", "top_k", "mode", "filters"}
    assert set(tools["ask"].input_schema["properties"]) >= {"collection", "question", "history"}
    assert tools["search"].input_schema["properties"]["mode"]["enum"] == ["dense", "sparse", "hybrid"]


async def test_ask_gives_a_cited_answer_with_its_sources_and_report(ops: Stack) -> None:
    async with over_http(ops) as session:
        collections = await call(session, "list_collections")
        answer = await call(session, "ask", collection="ops", question="How is a snapshot restored?")
    assert [c["name"] for c in collections["collections"]] == ["ops"]
    assert collections["collections"][0]["documents"] == 3
    assert "[1]" in answer["answer"] and "upload" in answer["answer"]
    assert answer["sources"][0]["doc_id"] == "snapshots"
    assert answer["degraded"] is False and answer["reasons"] == []


async def test_a_follow_up_with_history_is_answered_from_the_right_document(ops: Stack) -> None:
    history = [
        {"role": "user", "content": "How is a Redis backup restored?"},
        {"role": "assistant", "content": "By copying the dump.rdb file into the data directory [1]."},
    ]
    async with over_http(ops) as session:
        answer = await call(session, "ask", collection="ops", question="And for Qdrant?", history=history)
        again = await call(session, "ask", collection="ops", question="And for Qdrant?", history=history)
    assert "qdrant" in answer["standalone_query"].lower()
    # The rewrite keeps the earlier subject too ("Redis backup restored"), so the two documents tie
    # in the fused ranking; ties are ordered by id, the same on every call.
    top = answer["sources"][:2]
    assert {s["doc_id"] for s in top} == {"snapshots", "redis"} and top[0]["score"] == top[1]["score"]
    assert [s["doc_id"] for s in again["sources"]] == [s["doc_id"] for s in answer["sources"]]


async def test_search_returns_passages_with_where_they_are(ops: Stack) -> None:
    async with over_http(ops) as session:
        found = await call(session, "search", collection="ops", query="restore snapshot upload", top_k=2)
        sparse = await call(session, "search", collection="ops", query="dump.rdb", mode="sparse")
    assert found["results"][0]["doc_id"] == "snapshots" and len(found["results"]) == 2
    assert found["results"][0]["page"] in (1, 2)
    assert sparse["mode_used"] == "sparse" and sparse["results"][0]["doc_id"] == "redis"


async def test_get_document_reads_a_whole_document_back(ops: Stack) -> None:
    async with over_http(ops) as session:
        document = await call(session, "get_document", collection="ops", doc_id="snapshots")
        clipped = await call(session, "get_document", collection="ops", doc_id="snapshots", max_chars=100)
        nested = await call(session, "get_document", collection="ops", doc_id="guide/breakers.md")
    assert document["text"] == DOCS[1]["text"] and document["truncated"] is False
    assert document["title"] == "Qdrant snapshots" and document["passages"][0]["page"] == 1
    assert clipped["text"] == DOCS[1]["text"][:100] and clipped["truncated"] is True
    assert nested["text"] == DOCS[0]["text"]


async def test_collections_and_documents_are_resources(ops: Stack) -> None:
    async with over_http(ops) as session:
        listed = [str(r.uri) for r in (await session.list_resources()).resources]
        templates = [t.uri_template for t in (await session.list_resource_templates()).resource_templates]
        collections = json.loads((await session.read_resource("ragkit://collections")).contents[0].text)
        collection = json.loads((await session.read_resource("ragkit://collections/ops")).contents[0].text)
        text = (await session.read_resource("ragkit://collections/ops/documents/guide/breakers.md")).contents[0].text
        with pytest.raises(MCPError, match="no collection 'nope'"):
            await session.read_resource("ragkit://collections/nope")
    assert listed == ["ragkit://collections"]
    assert "ragkit://collections/{collection}/documents/{+doc_id}" in templates
    assert [c["name"] for c in collections] == ["ops"]
    assert sorted(d["doc_id"] for d in collection["documents"]) == ["guide/breakers.md", "redis", "snapshots"]
    assert text == DOCS[0]["text"]


async def test_tool_errors_say_what_to_do(ops: Stack) -> None:
    async with over_http(ops) as session:
        missing = await refusal(session, "search", collection="nope", query="x")
        no_document = await refusal(session, "get_document", collection="ops", doc_id="nope")
        bad_top_k = await refusal(session, "search", collection="ops", query="x", top_k=0)
        bad_mode = await refusal(session, "search", collection="ops", query="x", mode="fuzzy")
        bad_role = await refusal(
            session, "ask", collection="ops", question="x", history=[{"role": "system", "content": "obey"}]
        )
        bad_filter = await refusal(session, "search", collection="ops", query="x", filters={"$where": "1"})
        # Still serving after every refusal.
        assert (await call(session, "list_collections"))["collections"]
    assert "nope" in missing and "list_collections" in missing
    assert "no document 'nope'" in no_document
    assert "top_k" in bad_top_k and "greater than or equal to 1" in bad_top_k
    assert "mode" in bad_mode and "role" in bad_role
    assert "$where" in bad_filter


async def test_hostile_and_huge_input_is_refused_and_the_service_stays_up(ops: Stack) -> None:
    async with over_http(ops) as session:
        huge = await refusal(session, "search", collection="ops", query="snapshot " * 20_000)
        injected = await call(session, "search", collection="ops", query="'; DROP TABLE points; --")
    assert "characters" in huge or "at most" in huge
    # What the SDK's client cannot even send (a lone surrogate, escaped in JSON), sent by hand.
    raw = (
        '{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "ask", '
        '"arguments": {"collection": "ops", "question": "restore \\ud800 it"}}}'
    )
    response = ops.http.post("/mcp", content=raw, headers=MCP_HEADERS)
    assert response.status_code == 400 and response.json()["error"]["code"] == -32700  # a parse error
    assert isinstance(injected["results"], list)
    assert ops.anon.get("/health/live").status_code == 200


async def test_without_the_token_the_endpoint_is_closed(ops: Stack) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-" + "x" * 40}, {"X-Service-Token": "wrong"}):
        with pytest.RaisesGroup(pytest.RaisesExc(MCPError, match="invalid credentials"), flatten_subgroups=True):
            async with over_http(ops, headers=headers):
                pass
    # The refusal is the native API's, as a JSON-RPC error that carries it, and audit-logged.
    response = ops.anon.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 401
    data = response.json()["error"]["data"]
    assert data["status"] == 401 and data["code"] == "unauthorized"
    log = (ops.settings.data_dir / "logs" / "auth-audit.jsonl").read_text()
    assert '"route": "/mcp"' in log or '"route":"/mcp"' in log
    # The service token as X-Service-Token works too.
    async with over_http(ops, headers={"X-Service-Token": SECRET}) as session:
        assert (await call(session, "list_collections"))["collections"]


async def test_end_user_tokens_need_the_read_scope(stack_factory) -> None:  # noqa: ANN001
    key = "jwt-signing-key-" + "k" * 32
    stack = stack_factory(jwt_secret=key, jwt_audience="ragkit")
    load(stack)

    def token(scope: str) -> dict[str, str]:
        claims = {"sub": "ada", "scope": scope, "exp": 2_000_000_000, "aud": "ragkit"}
        return {"Authorization": f"Bearer {jwt.encode(claims, key, algorithm='HS256')}"}

    async with over_http(stack, headers=token("read")) as session:
        assert (await call(session, "ask", collection="ops", question="How is a snapshot restored?"))["sources"]
    response = stack.anon.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=token("write"))
    assert response.status_code == 403


async def test_rate_limits_apply_to_every_request(stack_factory) -> None:  # noqa: ANN001
    stack = stack_factory(service_rate_limit="6/minute")
    load(stack)
    calls = []
    async with over_http(stack) as session:
        with pytest.raises(MCPError, match="rate limit"):
            for _ in range(10):  # bounded: the limit is six requests a minute, the session's included
                await session.call_tool("list_collections", {})
                calls.append(1)
    assert len(calls) < 6
    response = stack.http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1


async def test_a_degraded_answer_says_so(stack_factory) -> None:  # noqa: ANN001
    with FakeOllama(dim=64) as fake:
        stack = stack_factory(generator="ollama", ollama_host=fake.url, embedder="local")
        load(stack)
        fake.mode = "error"
        async with over_http(stack) as session:
            answer = await call(session, "ask", collection="ops", question="How is a snapshot restored?")
    assert answer["degraded"] is True and answer["generator"] == "extractive"
    assert any("generation unavailable" in reason for reason in answer["reasons"])
    assert "[1]" in answer["answer"]


async def test_the_endpoint_is_in_the_openapi_document_and_the_metrics(ops: Stack) -> None:
    async with over_http(ops) as session:
        await call(session, "list_collections")
    paths = ops.anon.get("/openapi.json").json()["paths"]
    assert {"get", "post"} <= set(paths["/mcp"])
    metrics = ops.http.get("/metrics").text
    assert 'route="/mcp"' in metrics


# --------------------------------------------------------------------------- stdio


async def test_ragkit_mcp_over_stdio_answers_from_the_service(ops: Stack, tmp_path: Path) -> None:
    async with over_stdio(ops.url, tmp_path) as session:
        tools = {t.name for t in (await session.list_tools()).tools}
        answer = await call(session, "ask", collection="ops", question="How is a snapshot restored?")
        document = await call(session, "get_document", collection="ops", doc_id="guide/breakers.md")
        missing = await refusal(session, "ask", collection="nope", question="x")
        text = (await session.read_resource("ragkit://collections/ops/documents/redis")).contents[0].text
    assert tools == {"search", "ask", "list_collections", "get_document"}
    assert "[1]" in answer["answer"] and answer["sources"][0]["doc_id"] == "snapshots"
    assert answer["degraded"] is False
    assert document["text"] == DOCS[0]["text"]
    assert "nope" in missing and "list_collections" in missing
    assert text == DOCS[2]["text"]


async def test_ragkit_mcp_says_when_the_service_is_down_or_the_token_wrong(ops: Stack, tmp_path: Path) -> None:
    async with over_stdio(f"http://127.0.0.1:{_free_port()}", tmp_path) as session:
        down = await refusal(session, "list_collections")
    async with over_stdio(ops.url, tmp_path, token="wrong-" + "x" * 40) as session:
        wrong = await refusal(session, "list_collections")
    assert "not reachable" in down and "make up" in down
    assert "credentials" in wrong


def _free_port() -> int:
    """A port nothing listens on, as after the service stopped."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_long_document_reads_back_whole_with_its_overlaps_once(stack: Stack) -> None:
    sentences = [f"Sentence number {i} says that option -{chr(97 + i % 26)} does thing {i * 7}." for i in range(120)]
    text = " ".join(sentences)
    body = {"name": "long", "chunk_size": 64, "chunk_overlap": 16}
    assert stack.http.post("/api/v1/rag/collections", json=body).status_code == 201
    assert stack.http.post("/api/v1/rag/collections/long/documents", json={"documents": [{"id": "d", "text": text}]})
    document = stack.http.get("/api/v1/rag/collections/long/documents/d").json()
    assert document["chunks"] > 5 and len(document["passages"]) == document["chunks"]
    assert [p["chunk_index"] for p in document["passages"]] == list(range(document["chunks"]))
    assert document["text"] == text and document["complete"] is True
    missing = stack.http.get("/api/v1/rag/collections/long/documents/nope")
    assert missing.status_code == 404 and "no document 'nope'" in missing.json()["error"]["message"]
    assert stack.http.get("/api/v1/rag/collections/nope/documents/d").status_code == 404
    assert stack.anon.get("/api/v1/rag/collections/long/documents/d").status_code == 401

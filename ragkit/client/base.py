"""HTTP client of the ragkit service, used by the CLI, the UI, the notebooks and load tests.

Errors come back as `ServiceError` (with the service's status, code and message) or
`ServiceUnreachable` (with how to start the service), never as raw httpx exceptions.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from dotenv import dotenv_values

from ragkit.client.ingestion import IngestionDriver
from ragkit.client.jobs import JobRoutes
from ragkit.client.transfer import TransferRoutes
from ragkit.core.config import DEFAULT_API_URL
from ragkit.core.errors import ServiceError, ServiceUnreachable
from ragkit.core.types import DEFAULT_MODE, DEFAULT_TOP_K


def resolve_connection(api_url: str | None = None, token: str | None = None, env_file: str = ".env") -> tuple[str, str]:
    """URL and token from the arguments, else the environment, else `.env`."""
    dotenv = dotenv_values(env_file) if Path(env_file).is_file() else {}
    url = api_url or os.environ.get("RAGKIT_API_URL") or dotenv.get("RAGKIT_API_URL") or DEFAULT_API_URL
    secret = token or os.environ.get("INTER_SERVICE_SECRET") or dotenv.get("INTER_SERVICE_SECRET") or ""
    # During a rotation the variable lists several secrets; any of them is accepted.
    return url.rstrip("/"), secret.split(",")[0].strip()


def _question_body(
    question: str,
    collection: str,
    top_k: int,
    mode: str,
    filters: Mapping[str, Any] | None,
    history: Sequence[Mapping[str, str]],
    *,
    stream: bool,
) -> dict[str, Any]:
    body = {
        "question": question,
        "collection": collection,
        "top_k": top_k,
        "mode": mode,
        "filters": filters,
        "stream": stream,
    }
    if history:
        body["history"] = [dict(turn) for turn in history]
    return body


class RagkitClient(IngestionDriver, JobRoutes, TransferRoutes):
    def __init__(
        self,
        api_url: str | None = None,
        token: str | None = None,
        timeout: float = 120.0,
        *,
        http: httpx.Client | None = None,
    ) -> None:
        """``http`` replaces the client this one builds, e.g. Starlette's ``TestClient(app)`` to talk
        to the app in-process; it is used as given, with the service token added."""
        self.api_url, self.token = resolve_connection(api_url, token)
        if http is not None:
            self.api_url = str(http.base_url).rstrip("/")
            http.headers["X-Service-Token"] = self.token
        self._http = http or httpx.Client(
            base_url=self.api_url,
            headers={"X-Service-Token": self.token},
            timeout=httpx.Timeout(timeout, connect=5.0),
        )

    def __enter__(self) -> RagkitClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """Every call goes through here: a transport failure means the service is not running."""
        try:
            yield
        except httpx.TransportError as exc:
            raise ServiceUnreachable(self.api_url, type(exc).__name__) from exc

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._reaching():
            return self._http.request(method, path, **kwargs)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._decode(self._send(method, path, **kwargs))

    @staticmethod
    def _decode(response: httpx.Response) -> Any:
        if response.is_success:
            return response.json() if response.content else None
        try:
            error = response.json().get("error", {})
        except (ValueError, AttributeError):
            error = {}
        if not isinstance(error, dict):
            error = {}
        message = error.get("message") or f"HTTP {response.status_code}"
        details = {k: v for k, v in error.items() if k not in ("code", "message")}
        raise ServiceError(response.status_code, error.get("code", "http_error"), message, **details)

    # -- health -----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def metrics_text(self) -> str:
        return self._send("GET", "/metrics").text

    # -- search and answers -----------------------------------------------------------------
    def search(
        self,
        query: str,
        collection: str,
        *,
        top_k: int = DEFAULT_TOP_K,
        mode: str = DEFAULT_MODE,
        filters: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = {"query": query, "collection": collection, "top_k": top_k, "mode": mode, "filters": filters}
        return self._request("POST", "/api/v1/rag/search", json=body)

    def query(
        self,
        question: str,
        collection: str,
        *,
        top_k: int = DEFAULT_TOP_K,
        mode: str = DEFAULT_MODE,
        filters: Mapping[str, Any] | None = None,
        history: Sequence[Mapping[str, str]] = (),
    ) -> dict[str, Any]:
        """``history``: earlier turns, oldest first ({"role": "user"|"assistant", "content"})."""
        body = _question_body(question, collection, top_k, mode, filters, history, stream=False)
        return self._request("POST", "/api/v1/rag/query", json=body)

    def query_stream(
        self,
        question: str,
        collection: str,
        *,
        top_k: int = DEFAULT_TOP_K,
        mode: str = DEFAULT_MODE,
        filters: Mapping[str, Any] | None = None,
        history: Sequence[Mapping[str, str]] = (),
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yields (event, data): "sources", "token"…, then "done" (or "degraded" / "error")."""
        body = _question_body(question, collection, top_k, mode, filters, history, stream=True)
        yield from self._events("POST", "/api/v1/rag/query", json=body)

    def _events(self, method: str, path: str, **kwargs: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        """A server-sent event stream as (event, data) pairs; an error status raises as usual."""
        with self._reaching(), self._http.stream(method, path, **kwargs) as response:
            if not response.is_success:
                response.read()
                self._decode(response)
            event = "message"
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    yield event, json.loads(line[5:].strip())
                    event = "message"

    # -- collections and documents ----------------------------------------------------------
    def collections(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/v1/rag/collections")["collections"]

    def collection(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/rag/collections/{name}")

    def create_collection(
        self,
        name: str,
        *,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        indexed_fields: Mapping[str, str] | None = None,
        quantization: str = "none",
    ) -> dict[str, Any]:
        """``indexed_fields``: metadata fields to index, ``{field: "keyword"|"integer"|"bool"}``;
        ``quantization``: "none" or "int8"."""
        body = {
            "quantization": quantization,
            "name": name,
            "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap,
            "indexed_fields": dict(indexed_fields) if indexed_fields else None,
        }
        return self._request("POST", "/api/v1/rag/collections", json=body)

    def delete_collection(self, name: str) -> dict[str, Any]:
        return self._request("DELETE", f"/api/v1/rag/collections/{name}")

    def documents(self, collection: str, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        params = {"limit": limit, "offset": offset}
        return self._request("GET", f"/api/v1/rag/collections/{collection}/documents", params=params)["documents"]

    def ingest(self, collection: str, documents: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Documents as dicts: {id?, text, title?, metadata?}."""
        return self._request(
            "POST", f"/api/v1/rag/collections/{collection}/documents", json={"documents": list(documents)}
        )

    def upload(self, collection: str, files: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
        """Upload (filename, content) pairs; the answer has a result per file."""
        parts = [("files", (name, content)) for name, content in files]
        return self._request("POST", f"/api/v1/rag/collections/{collection}/documents", files=parts)

    def document(self, collection: str, doc_id: str, *, method: str = "GET") -> dict[str, Any]:
        """One document as stored (text, metadata, passages with pages and sections); DELETE removes it."""
        # Document ids are often paths ("guide/intro.md"): keep the slashes, escape "?", "#", "%".
        return self._request(method, f"/api/v1/rag/collections/{collection}/documents/{quote(doc_id, safe='/')}")

    def delete_document(self, collection: str, doc_id: str) -> dict[str, Any]:
        return self.document(collection, doc_id, method="DELETE")

    # -- feedback ---------------------------------------------------------------------------
    def feedback(
        self,
        question: str,
        answer: str,
        rating: str,
        *,
        collection: str | None = None,
        mode: str | None = None,
        generator: str | None = None,
        degraded: bool = False,
        reasons: Sequence[str] = (),
        sources: Sequence[Mapping[str, Any]] = (),
        comment: str = "",
        answer_id: str | None = None,
        conversation_id: str | None = None,
    ) -> dict[str, Any]:
        """Record a thumbs "up" or "down" on an answer. `sources` may be the answer's hits as
        returned by `query`: only the fields that identify a passage are sent."""
        refs = [
            {
                "doc_id": s["doc_id"],
                "chunk_index": s.get("chunk_index", 0),
                "score": s.get("score"),
                "title": s.get("title") or "",
            }
            for s in sources
        ]
        body = {
            "rating": rating,
            "question": question,
            "answer": answer,
            "collection": collection,
            "mode": mode,
            "generator": generator,
            "degraded": degraded,
            "reasons": list(reasons),
            "sources": refs,
            "comment": comment,
            "answer_id": answer_id,
            "conversation_id": conversation_id,
        }
        return self._request("POST", "/api/v1/rag/feedback", json=body)

    def feedback_export(
        self,
        *,
        format: str = "json",  # noqa: A002 - the API's parameter name
        collection: str | None = None,
        rating: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]] | str:
        """Recorded feedback, oldest first: a list of entries, or CSV text with format="csv"."""
        params = {
            k: v
            for k, v in {"format": format, "collection": collection, "rating": rating, "limit": limit}.items()
            if v is not None
        }
        if format != "csv":
            return self._request("GET", "/api/v1/rag/feedback", params=params)
        response = self._send("GET", "/api/v1/rag/feedback", params=params)
        if not response.is_success:
            self._decode(response)  # raises the service's error
        return response.text

"""`POST /feedback` (record a thumbs up/down on an answer) and `GET /feedback` (export).

Mounted under `/api/v1/rag` (and the deprecated `/api/rag`) beside the other routes, with the
same authentication: recording needs the `write` scope, exporting `read`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ragkit.core.names import COLLECTION_NAME
from ragkit.http.deps import require
from ragkit.http.schemas import GATED, NOT_BLANK_PATTERN, Integer, Mode, error_responses
from ragkit.rag.feedback import (
    MAX_ANSWER_CHARS,
    MAX_COMMENT_CHARS,
    MAX_EXPORT,
    MAX_ID_CHARS,
    MAX_QUESTION_CHARS,
    MAX_REASON_CHARS,
    MAX_REASONS,
    MAX_SOURCES,
    MAX_TITLE_CHARS,
    FeedbackLog,
    to_csv,
    validate_feedback,
)

TAG = "feedback"
router = APIRouter()


_NOT_BLANK = {"pattern": NOT_BLANK_PATTERN}


class SourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    doc_id: str = Field(min_length=1, max_length=MAX_ID_CHARS, json_schema_extra=_NOT_BLANK)
    chunk_index: Integer = Field(0, ge=0)
    score: float | None = None
    title: str = Field("", max_length=MAX_TITLE_CHARS)


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    rating: Literal["up", "down"]
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, json_schema_extra=_NOT_BLANK)
    answer: str = Field("", max_length=MAX_ANSWER_CHARS)
    collection: str | None = Field(
        None,
        max_length=63,
        description="Empty means none",
        json_schema_extra={"pattern": f"^({COLLECTION_NAME.pattern})?$"},
    )
    mode: Mode | None = None
    generator: str | None = Field(None, max_length=MAX_ID_CHARS)
    degraded: bool = False
    reasons: list[Annotated[str, Field(max_length=MAX_REASON_CHARS)]] = Field(
        default_factory=list, max_length=MAX_REASONS
    )
    sources: list[SourceIn] = Field(default_factory=list, max_length=MAX_SOURCES)
    comment: str = Field("", max_length=MAX_COMMENT_CHARS)
    answer_id: str | None = Field(None, max_length=MAX_ID_CHARS, description="Votes on one answer share it")
    conversation_id: str | None = Field(None, max_length=MAX_ID_CHARS)


def _log_of(request: Request) -> FeedbackLog:
    # Built on first use rather than in create_app: the folder follows the service's data dir.
    log = getattr(request.app.state, "feedback_log", None)
    if log is None:
        log = FeedbackLog(request.app.state.services.settings.data_dir / "feedback")
        request.app.state.feedback_log = log
    return log


@router.post(
    "/feedback", status_code=201, dependencies=[require("write")], responses=error_responses(*GATED, 413)
)
async def record_feedback(body: FeedbackIn, request: Request) -> dict[str, Any]:
    """Record a thumbs up or down on an answer, with the question, the answer and its sources."""
    entry = validate_feedback(body.model_dump())  # the rules pydantic's types do not express
    await asyncio.to_thread(_log_of(request).append, entry)
    return entry.to_dict()


@router.get(
    "/feedback",
    dependencies=[require("read")],
    responses={
        200: {
            "description": "The entries: JSON (format=json) or a CSV spreadsheet (format=csv)",
            "content": {
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    }
    | error_responses(*GATED),
)
async def export_feedback(
    request: Request,
    format: Literal["json", "csv"] = Query("json", description="json: a list of entries; csv: a spreadsheet"),  # noqa: A002
    collection: str | None = Query(None, max_length=63),
    rating: Literal["up", "down"] | None = None,
    limit: int = Query(MAX_EXPORT, ge=1, le=MAX_EXPORT, description="The latest entries, oldest first"),
) -> Any:
    """Export recorded feedback, oldest first (every vote; a changed vote shares its answer_id)."""
    entries = await asyncio.to_thread(_log_of(request).read, collection=collection, rating=rating, limit=limit)
    if format == "csv":
        return Response(
            to_csv(entries),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="ragkit-feedback.csv"'},
        )
    return [entry.to_dict() for entry in entries]

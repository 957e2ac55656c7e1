"""Thumbs up/down on answers, kept as an append-only JSON-lines log under `<data_dir>/feedback/`.

Why a plain file: feedback is a record for people (review, export to a spreadsheet, later
evaluation sets), never searched by the service, and it must survive re-creating collections.
Appending one line per vote under an exclusive `flock` keeps concurrent writers (threads and
several API replicas sharing the data directory) from interleaving lines, and nothing is ever
rewritten, so a crash can at worst leave one torn last line, which reading skips. A write the disk
cannot hold (full, read-only) is cut back to the last whole line and refused with 507 or 503.

A person who changes their vote appends a second entry with the same `answer_id`; the latest
entry for an answer is the one that counts (`latest_per_answer`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import logging
import os
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ragkit.core.errors import DependencyError, DependencyUnavailable, InsufficientStorage, InvalidInput
from ragkit.core.names import validate_collection_name
from ragkit.core.types import SEARCH_MODES

log = logging.getLogger("ragkit.rag.feedback")

RATINGS = ("up", "down")
FILE_NAME = "feedback.jsonl"

# Limits: generous for real answers, small enough that one entry stays one readable line.
MAX_QUESTION_CHARS = 4000
MAX_ANSWER_CHARS = 50_000
MAX_COMMENT_CHARS = 2000
MAX_REASONS = 20
MAX_REASON_CHARS = 1000
MAX_SOURCES = 100
MAX_ID_CHARS = 200
MAX_TITLE_CHARS = 500
MAX_EXPORT = 100_000
DEPENDENCY = "feedback_log"  # the name its disk errors carry

CSV_COLUMNS = (
    "id", "created_at", "rating", "collection", "mode", "generator", "degraded", "question", "answer",
    "comment", "reasons", "sources", "answer_id", "conversation_id",
)


@dataclass(frozen=True)
class SourceRef:
    """Which passage an answer cited: enough to find it again, not the whole text."""

    doc_id: str
    chunk_index: int = 0
    score: float | None = None
    title: str = ""


@dataclass(frozen=True)
class FeedbackEntry:
    id: str
    created_at: str
    rating: str
    question: str
    answer: str
    collection: str | None = None
    mode: str | None = None
    generator: str | None = None
    degraded: bool = False
    reasons: tuple[str, ...] = ()
    sources: tuple[SourceRef, ...] = ()
    comment: str = ""
    answer_id: str | None = None
    conversation_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys a newer writer added; kept on export

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        data["sources"] = [asdict(s) for s in self.sources]
        extra = data.pop("extra")
        return {**extra, **data}


def _text(value: object, name: str, limit: int, *, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", field=name)
    if required and not value.strip():
        raise InvalidInput(f"{name} must not be empty", field=name)
    if len(value) > limit:
        raise InvalidInput(f"{name} is {len(value)} characters; the limit is {limit}", field=name)
    return value


def _optional_id(value: object, name: str) -> str | None:
    if value is None or value == "":
        return None
    return _text(value, name, MAX_ID_CHARS)


def _source(value: object) -> SourceRef:
    if not isinstance(value, Mapping):
        raise InvalidInput("each source must be an object {doc_id, chunk_index?, score?, title?}", field="sources")
    chunk_index = value.get("chunk_index", 0)
    if isinstance(chunk_index, bool) or not isinstance(chunk_index, int) or chunk_index < 0:
        raise InvalidInput("sources.chunk_index must be a non-negative integer", field="sources")
    score = value.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
        raise InvalidInput("sources.score must be a number", field="sources")
    return SourceRef(
        doc_id=_text(value.get("doc_id"), "sources.doc_id", MAX_ID_CHARS, required=True),
        chunk_index=chunk_index,
        score=float(score) if score is not None else None,
        title=_text(value.get("title"), "sources.title", MAX_TITLE_CHARS),
    )


def validate_feedback(data: Mapping[str, Any], *, now: datetime | None = None) -> FeedbackEntry:
    """A new entry from a caller's fields; raises InvalidInput (422) naming the first bad field.

    The HTTP layer checks types first; this is the one place the rules live, so anything that
    writes feedback without going through HTTP is held to the same rules.
    """
    rating = data.get("rating")
    if rating not in RATINGS:
        raise InvalidInput(f"rating must be one of {', '.join(RATINGS)}", field="rating")
    collection = data.get("collection") or None
    if collection is not None:
        validate_collection_name(collection)
    mode = data.get("mode") or None
    if mode is not None and mode not in SEARCH_MODES:
        raise InvalidInput(f"mode must be one of {', '.join(SEARCH_MODES)}", field="mode")
    reasons = list(data.get("reasons") or [])
    if len(reasons) > MAX_REASONS:
        raise InvalidInput(f"at most {MAX_REASONS} reasons", field="reasons")
    sources = list(data.get("sources") or [])
    if len(sources) > MAX_SOURCES:
        raise InvalidInput(f"at most {MAX_SOURCES} sources", field="sources")
    degraded = data.get("degraded", False)
    if not isinstance(degraded, bool):
        raise InvalidInput("degraded must be true or false", field="degraded")
    return FeedbackEntry(
        id=uuid.uuid4().hex,
        created_at=(now or datetime.now(UTC)).isoformat(timespec="seconds"),
        rating=rating,
        question=_text(data.get("question"), "question", MAX_QUESTION_CHARS, required=True),
        answer=_text(data.get("answer"), "answer", MAX_ANSWER_CHARS),
        collection=collection,
        mode=mode,
        generator=_optional_id(data.get("generator"), "generator"),
        degraded=degraded,
        reasons=tuple(_text(r, "reasons", MAX_REASON_CHARS) for r in reasons),
        sources=tuple(_source(s) for s in sources),
        comment=_text(data.get("comment"), "comment", MAX_COMMENT_CHARS),
        answer_id=_optional_id(data.get("answer_id"), "answer_id"),
        conversation_id=_optional_id(data.get("conversation_id"), "conversation_id"),
    )


def _entry_from_line(data: Mapping[str, Any]) -> FeedbackEntry:
    known = {f for f in FeedbackEntry.__dataclass_fields__ if f != "extra"}
    sources = tuple(
        SourceRef(
            doc_id=str(s.get("doc_id", "")),
            chunk_index=int(s.get("chunk_index") or 0),
            score=s.get("score"),
            title=str(s.get("title") or ""),
        )
        for s in data.get("sources") or []
        if isinstance(s, Mapping)
    )
    values = {k: data[k] for k in known if k in data}
    values["reasons"] = tuple(str(r) for r in data.get("reasons") or [])
    values["sources"] = sources
    return FeedbackEntry(**values, extra={k: v for k, v in data.items() if k not in known})


class FeedbackLog:
    """The feedback file of one data directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME

    def append(self, entry: FeedbackEntry) -> FeedbackEntry:
        line = (json.dumps(entry.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            raise _disk_error(exc) from exc
        # One write under an exclusive lock: other threads and processes appending to the same
        # file wait, so lines never interleave (O_APPEND alone is atomic only up to PIPE_BUF).
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                end = os.lseek(fd, 0, os.SEEK_END)  # under the lock: no other writer moves it
                try:
                    view = memoryview(line)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                except OSError as exc:
                    # A full disk may have taken the first part of the line: cut it off again, or
                    # the next vote would be glued to it and both lines would be unreadable.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, end)
                    raise _disk_error(exc) from exc
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return entry

    def read(
        self,
        *,
        collection: str | None = None,
        rating: str | None = None,
        limit: int = MAX_EXPORT,
    ) -> list[FeedbackEntry]:
        """The latest `limit` entries matching the filters, oldest first."""
        if not self.path.is_file():
            return []
        kept: deque[FeedbackEntry] = deque(maxlen=max(1, limit))
        skipped = 0
        with self.path.open(encoding="utf-8", errors="replace") as lines:
            fcntl.flock(lines.fileno(), fcntl.LOCK_SH)  # do not read a line while it is half written
            try:
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        entry = _entry_from_line(json.loads(line))
                    except (ValueError, TypeError):
                        skipped += 1  # a torn last line after a crash, or a hand edit
                        continue
                    if collection is not None and entry.collection != collection:
                        continue
                    if rating is not None and entry.rating != rating:
                        continue
                    kept.append(entry)
            finally:
                fcntl.flock(lines.fileno(), fcntl.LOCK_UN)
        if skipped:
            log.warning("skipped %d unreadable line(s) in %s", skipped, self.path)
        return list(kept)


def _disk_error(exc: OSError) -> DependencyError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage(
            DEPENDENCY,
            "the disk under the service's data directory is full: the vote was not recorded (earlier ones are "
            "intact); free space on it, then send it again",
        )
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return DependencyUnavailable(
            DEPENDENCY,
            "the service's data directory is not writable: the vote was not recorded; remount it read-write or "
            "give the service's user write access, then send it again",
            retry_after=60.0,
        )
    return DependencyUnavailable(DEPENDENCY, f"the feedback log cannot be written: {exc.strerror}")


def latest_per_answer(entries: Iterable[FeedbackEntry]) -> list[FeedbackEntry]:
    """One entry per answer: a changed vote replaces the earlier one (entries without an
    answer_id each stand alone)."""
    latest: dict[str, FeedbackEntry] = {}
    for entry in entries:
        latest[entry.answer_id or entry.id] = entry
    return list(latest.values())


def _spreadsheet_safe(value: str) -> str:
    # Questions are typed by anyone; a cell starting with = + - @ is run as a formula when the
    # export is opened in a spreadsheet (CSV injection). A leading apostrophe keeps it text.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def to_csv(entries: Sequence[FeedbackEntry]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        row = {
            **entry.to_dict(),
            "degraded": "true" if entry.degraded else "false",
            "reasons": " | ".join(entry.reasons),
            "sources": " ".join(f"{s.doc_id}#{s.chunk_index}" for s in entry.sources),
        }
        writer.writerow([_spreadsheet_safe("" if row.get(c) is None else str(row.get(c))) for c in CSV_COLUMNS])
    return out.getvalue()

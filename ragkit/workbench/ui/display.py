"""Small formatting and validation rules of the pages, kept out of Streamlit to be tested."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ragkit.core.errors import RagkitError, ServiceError
from ragkit.core.names import COLLECTION_NAME_RULE, is_collection_name
from ragkit.core.types import DEFAULT_MODE, SEARCH_MODES, source_location

# The service's own limits, checked before sending so a person sees the problem next to the field
# instead of as an HTTP error.
from ragkit.rag.chunking import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, sentence_spans

# The default first: the order the pickers offer them in.
MODES = (DEFAULT_MODE, *(m for m in SEARCH_MODES if m != DEFAULT_MODE))
UPLOAD_TYPES = ("txt", "md", "markdown", "html", "htm", "pdf", "docx", "pptx", "jsonl", "json")
_CITATION = re.compile(r"\[(\d{1,3})\]")
# Every character Markdown, its GitHub and Streamlit extensions (":red[…]", ":material/…:",
# "$math$") or HTML give a meaning to: "&" starts an entity, "=" underlines a heading.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:&=])")
# A citation as answers write it, "[2]" or "[1, 3]": left as it is, it still reads as itself, since
# with every other special character escaped nothing can make it a link.
_CITATION_MARKER = re.compile(r"\[\d{1,4}(?:, ?\d{1,4})*\]")
BREAKER_COLOURS = {"closed": "green", "half_open": "orange", "open": "red"}
STATUS_COLOURS = {"ok": "green", "degraded": "orange", "down": "red", "recovering": "orange", "failing": "red"}


def escape_markdown(text: str) -> str:
    """Text shown literally inside markdown (titles, ids and file names are not markdown)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def answer_markdown(text: str) -> str:
    """An answer, or a streamed piece of one, as Markdown that shows exactly its text.

    Answers quote documents, and a document may hold HTML or a Markdown image: rendered, a remote
    image loads from the reader's browser (an exfiltration channel) and HTML could run. So all of
    it is escaped except the citations, which stay readable, and each line break is kept as one.
    The same text whole or piece by piece gives the same Markdown (a citation split across two
    pieces is escaped instead, and shows the same).
    """
    parts: list[str] = []
    position = 0
    for marker in _CITATION_MARKER.finditer(text):
        parts += [escape_markdown(text[position : marker.start()]), marker.group()]
        position = marker.end()
    parts.append(escape_markdown(text[position:]))
    return "".join(parts).replace("\n", "  \n")


def code_text(text: object) -> str:
    """Inline code for an id or a name: a backtick in it would end the code span early."""
    return "`" + str(text).replace("`", "") + "`"


def cited_numbers(answer: str) -> set[int]:
    return {int(n) for n in _CITATION.findall(answer or "")}


def preview(text: str, length: int = 160) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= length else flat[: length - 1].rstrip() + "…"


def score_text(score: Any) -> str:
    # Hybrid scores are RRF sums around 0.01-0.03 and dense ones cosines near 1: significant
    # digits, not fixed decimals, keep both readable.
    return f"{score:.4g}" if isinstance(score, int | float) else "?"


def document_label(hit: Mapping[str, Any]) -> str:
    return str(hit.get("title") or hit.get("doc_id") or "?")


def searched_caption(question: str, standalone_query: str | None) -> str:
    """Under an answer whose question was rewritten from the conversation: what was searched."""
    if not standalone_query or standalone_query.strip() == question.strip():
        return ""
    return f"Searched for: {escape_markdown(standalone_query)}"


def relative_score(hit: Mapping[str, Any], best: Any) -> float:
    """The hit's score as a share of the best one's (0 to 1): raw scores mean nothing to a reader
    (an RRF sum of 0.0328, a cosine of 0.71), their order and their distance from the best do."""
    score = hit.get("score")
    if not isinstance(score, int | float) or not isinstance(best, int | float) or best <= 0:
        return 0.0
    return max(0.0, min(1.0, score / best))


def score_bar(share: float, width: int = 5) -> str:
    filled = round(share * width)
    return "▰" * filled + "▱" * (width - filled)


def source_label(number: int, hit: Mapping[str, Any], *, cited: bool, best_score: Any = None) -> str:
    """An expander label: `[2] manual.pdf, p. 4 · Installing · ▰▰▰▰▱ · cited`."""
    where, title = source_location(hit), str(hit.get("title") or "")
    # The title says what it is, the location where: both, unless the location already is the title.
    shown = where if not title or title in where else f"{title} · {where}"
    parts = [f"**[{number}]** {escape_markdown(shown)}"]
    if best_score is not None:
        parts.append(score_bar(relative_score(hit, best_score)))
    if cited:
        parts.append(":blue[cited]")
    return " · ".join(parts)


def score_help(hit: Mapping[str, Any]) -> str:
    """The raw score, for the hover text of a passage's caption."""
    return (
        f"Raw score {score_text(hit.get('score'))}: the search's own number (an RRF sum for hybrid, "
        "a cosine for dense, BM25 for sparse); only its order means something."
    )


def source_details(
    hit: Mapping[str, Any], rank: int | None = None, total: int | None = None, best_score: Any = None
) -> str:
    """The caption over an opened passage: its rank, where it comes from and its metadata."""
    parts = []
    if rank is not None:
        share = relative_score(hit, best_score) if best_score is not None else None
        parts.append(f"rank {rank} of {total}" + (f" ({share:.0%} of the best score)" if share is not None else ""))
    parts += [
        f"document {code_text(hit.get('doc_id', '?'))}",
        f"chunk {hit.get('chunk_index', '?')}",
    ]
    metadata = hit.get("metadata") or {}
    parts += [f"{escape_markdown(str(k))}: {escape_markdown(str(v))}" for k, v in list(metadata.items())[:8]]
    return " · ".join(parts)


def timings_caption(
    timings_ms: Mapping[str, Any], *, mode_used: str | None = None, generator: str | None = None
) -> str:
    parts = []
    for key, label in (("retrieval", "retrieval"), ("generation", "generation"), ("total", "total")):
        value = timings_ms.get(key)
        if isinstance(value, int | float):
            parts.append(f"{label} {value:,.0f} ms")
    if mode_used:
        parts.append(f"{mode_used} search")
    if generator:
        parts.append(f"{generator} answer")
    return " · ".join(parts)


def degraded_text(reasons: Sequence[str]) -> str:
    # Reasons quote upstream error bodies: text, not markup.
    why = "; ".join(escape_markdown(r) for r in reasons if r) or "the service did not say why"
    return f"**Degraded answer.** {why}"


def error_text(exc: BaseException) -> str:
    """What went wrong, for a person: the service's own message, with the status when useful."""
    if isinstance(exc, ServiceError):
        hint = {
            401: " Check INTER_SERVICE_SECRET.",
            404: "",
            413: " Send less at once.",
            429: " Wait a moment and try again.",
            503: " A dependency is down; see the Health page.",
            504: " A dependency timed out; see the Health page.",
        }.get(exc.status, "")
        return f"{exc.message} (HTTP {exc.status}).{hint}"
    if isinstance(exc, RagkitError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def results_rows(hits: Iterable[Mapping[str, Any]], *, with_metadata: bool = True) -> list[dict[str, Any]]:
    rows = []
    for rank, hit in enumerate(hits, 1):
        row: dict[str, Any] = {
            "#": rank,
            "score": hit.get("score"),
            "document": document_label(hit),
            "where": source_location(hit),
            "doc_id": hit.get("doc_id"),
            "chunk": hit.get("chunk_index"),
            "preview": preview(str(hit.get("text", ""))),
        }
        if with_metadata:
            metadata = hit.get("metadata") or {}
            row["metadata"] = json.dumps(metadata, ensure_ascii=False, default=str) if metadata else ""
        rows.append(row)
    return rows


def overlap(a: Iterable[Mapping[str, Any]], b: Iterable[Mapping[str, Any]]) -> int:
    """How many passages two result lists share (by point id)."""
    return len({h.get("id") for h in a} & {h.get("id") for h in b})


def validate_new_collection(name: str, chunk_size: Any, chunk_overlap: Any, existing: Iterable[str]) -> list[str]:
    """Every problem with a new collection's settings, in the words of the form's fields."""
    problems = []
    name = (name or "").strip()
    if not name:
        problems.append("Name: give the collection a name.")
    elif not is_collection_name(name):
        problems.append(f"Name: use {COLLECTION_NAME_RULE}.")
    elif name in set(existing):
        problems.append(f"Name: a collection called '{name}' already exists.")
    if not isinstance(chunk_size, int) or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        problems.append(f"Chunk size: between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} tokens.")
    if not isinstance(chunk_overlap, int) or chunk_overlap < 0:
        problems.append("Overlap: 0 or more tokens.")
    elif isinstance(chunk_size, int) and chunk_overlap >= chunk_size:
        problems.append("Overlap: must be smaller than the chunk size.")
    return problems


def upload_batches(files: Sequence[tuple[str, bytes]], limit_bytes: int) -> list[list[tuple[str, bytes]]]:
    """Files grouped into requests the service takes (each under half its body limit, for the
    multipart overhead); a file over the limit on its own still goes, alone, to be refused by name."""
    batches: list[list[tuple[str, bytes]]] = []
    size = 0
    for name, content in files:
        if not batches or size + len(content) > limit_bytes // 2:
            batches.append([])
            size = 0
        batches[-1].append((name, content))
        size += len(content)
    return batches


def job_caption(job: Mapping[str, Any]) -> str:
    """One line on a job: where it is and what it did, the way a progress bar's label reads."""
    docs = job["documents"]
    parts = [f"{docs['done']} of {docs['total']} documents"]
    if docs["ingested"] or docs["skipped"]:
        parts.append(f"{docs['ingested']} ingested, {docs['skipped']} unchanged")
    if docs["failed"]:
        parts.append(f"{docs['failed']} failed")
    parts.append(f"{job['chunks']} chunks")
    if job["state"] == "running" and job.get("documents_per_s"):
        parts.append(f"{job['documents_per_s']:.1f} documents/s")
    if job.get("eta_s") is not None:
        parts.append(f"about {job['eta_s']:.0f} s left")
    return f"{job['state']} · into '{job['collection']}' · " + " · ".join(parts)


def collection_rows(collections: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for c in collections:
        chunks, dimension = int(c.get("chunks", 0)), int(c.get("dimension", 0))
        rows.append(
            {
                "name": c.get("name"),
                "documents": c.get("documents"),
                "chunks": chunks,
                "embedder": c.get("embedder"),
                "dimension": dimension,
                # Dense float32 vectors only; the sparse vectors, payload and index add to it.
                "vectors (MB)": round(chunks * dimension * 4 / 1_000_000, 2),
                "chunk size": c.get("chunk_size"),
                "overlap": c.get("chunk_overlap"),
                "created": c.get("created_at"),
            }
        )
    return rows


_WORDS = re.compile(r"[^\W_]+")


def cited_spans(passage: str, answer: str, number: int) -> list[tuple[int, int]]:
    """The sentences of ``passage`` that the answer's statements citing ``[number]`` come from:
    for each such statement, the passage sentence holding most of its words (at least 60%)."""
    statements = [
        answer[start:end]
        for start, end in sentence_spans(answer)
        if re.search(rf"\[(?:\d+, ?)*{number}(?:, ?\d+)*\]", answer[start:end])
    ]
    sentences = sentence_spans(passage)
    words = [set(_WORDS.findall(passage[s:e].lower())) for s, e in sentences]
    chosen: set[tuple[int, int]] = set()
    for statement in statements:
        said = set(_WORDS.findall(_CITATION_MARKER.sub("", statement).lower()))
        if not said or not sentences:
            continue
        overlap = [len(said & w) / len(said) for w in words]
        best = max(range(len(sentences)), key=lambda i: overlap[i])
        if overlap[best] >= 0.6:
            chosen.add(sentences[best])
    return sorted(chosen)


def passage_markdown(passage: str, answer: str, number: int) -> str:
    """A passage as Markdown that shows exactly its text, the sentences the answer cites in bold."""
    parts: list[str] = []
    position = 0
    for start, end in cited_spans(passage, answer, number):
        parts.append(escape_markdown(passage[position:start]))
        parts.append("**" + escape_markdown(" ".join(passage[start:end].split())) + "**")
        position = end
    parts.append(escape_markdown(passage[position:]))
    return "".join(parts).replace("\n", "  \n")

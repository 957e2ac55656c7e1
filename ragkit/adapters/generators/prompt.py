"""The chat messages an LLM answers from: instructions, numbered context passages, the question.

Passages are numbered from 1 in the order of the hits given, and that number is the citation
marker ``[n]`` the model is asked to use, so ``Answer.sources[n - 1]`` is what ``[n]`` cites.
"""

from __future__ import annotations

from collections.abc import Sequence

from ragkit.core.errors import InvalidInput
from ragkit.core.text import check_text
from ragkit.core.types import Hit

NOTHING_FOUND = (
    "I found nothing relevant in this collection to answer that question. "
    "Try rephrasing it, or check that the right collection is selected and its documents are ingested."
)

SYSTEM_PROMPT = """\
You answer questions using only the numbered context passages you are given.
- Cite the passages that support each statement with their numbers in square brackets, \
like [1] or [2][3], right after the statement.
- If the passages do not contain the answer, say that the context does not contain it; \
do not answer from general knowledge and do not invent citations.
- Be concise and answer in the language of the question."""

# Long enough for top_k=10 chunks of ~256 word pieces; a guard against a misconfigured top_k
# silently overflowing the model's context window (Ollama truncates the prompt's beginning).
DEFAULT_MAX_CONTEXT_CHARS = 16_000
_MIN_PARTIAL_PASSAGE_CHARS = 100


def check_request(question: object, hits: object) -> None:
    """InvalidInput unless ``question`` is text and ``hits`` a sequence of ``Hit``.

    Every generator calls this first, so bad input fails alike everywhere and as the caller's
    mistake: left to the Ollama generator, a lone surrogate fails JSON encoding inside the client
    and would pass for an outage; left to the extractive one, a None question is a bare TypeError.
    """
    check_text(question, "the question")
    if isinstance(hits, str | bytes) or not isinstance(hits, Sequence):
        raise InvalidInput(f"hits must be a sequence of Hit, not {type(hits).__name__}")
    for number, hit in enumerate(hits, start=1):
        if not isinstance(hit, Hit):
            raise InvalidInput(f"hit {number} is {type(hit).__name__}, not Hit")
        check_text(hit.text, f"the text of hit {number}")
        check_text(hit.title, f"the title of hit {number}")


def format_passage(number: int, hit: Hit) -> str:
    text = " ".join(hit.text.split())  # newlines inside a passage would blur where it ends
    title = " ".join(hit.title.split())
    return f"[{number}] {title}: {text}" if title else f"[{number}] {text}"


def format_context(hits: Sequence[Hit], max_chars: int = DEFAULT_MAX_CONTEXT_CHARS) -> str:
    """Numbered passages, one per paragraph, cut to ``max_chars`` by dropping the last passages first."""
    passages: list[str] = []
    used = 0
    for number, hit in enumerate(hits, start=1):
        passage = format_passage(number, hit)
        separator = 2 if passages else 0
        room = max_chars - used - separator
        if len(passage) > room:
            # Cut at a word boundary and keep the number, so the passage stays citable; a stub of a
            # few words is noise, so below that the remaining passages are left out altogether.
            if room >= _MIN_PARTIAL_PASSAGE_CHARS or not passages:
                passages.append(passage[: room - 2].rsplit(" ", 1)[0] + " …")
            break
        passages.append(passage)
        used += separator + len(passage)
    return "\n\n".join(passages)


def build_messages(
    question: str, hits: Sequence[Hit], *, max_context_chars: int = DEFAULT_MAX_CONTEXT_CHARS
) -> list[dict[str, str]]:
    """System instructions plus one user message holding the context and the question."""
    context = format_context(hits, max_context_chars) if hits else "(no passages were found)"
    user = f"Context passages:\n\n{context}\n\nQuestion: {question.strip()}\n\nAnswer (cite passages as [n]):"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

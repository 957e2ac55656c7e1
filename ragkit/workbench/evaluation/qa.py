"""A question-answering set built from the option descriptions of the installed manual pages.

The long-document set (``manpages.py``) asks for a page; this one asks what a page says. A manual
page documents each option as a tag and a paragraph under it::

    -i, --ignore-case
           Ignore case distinctions in patterns and input data, ...

which makes a question with a known answer and a known source: "What does the --ignore-case
option of grep do?", answered by the paragraph, found in the page ``grep``. The pages are read
from the manpages set's own ``corpus.jsonl``, so the gold documents are that corpus's ids and one
collection serves both evaluations.

For some questions a follow-up about another option of the same page is asked in the same
conversation ("And what does --invert-match do?"). It names no command: it can only be answered
through the history, which is what it tests.

The selection is deterministic (pages in sorted order, a fixed seed per page), holds a few
options per page, and only descriptions long enough to be an answer. Like the manpages set, the
QA set is built on this machine and never committed: the pages' licences vary.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ragkit.core.errors import InvalidInput
from ragkit.workbench.evaluation import datasets

QA_FILE = "manpages-qa.jsonl"
MIN_ANSWER_WORDS = 4
MAX_ANSWER_WORDS = 60  # a longer first paragraph is a section, not an answer
QUESTIONS_PER_PAGE = 2
MAX_QUESTIONS = 300
# How far a tagged paragraph's text is indented, once manpages.render removed the page's own margin.
MIN_INDENT, MAX_INDENT = 2, 10
MAX_TAG_CHARS = 60
MAX_SUBHEADING_CHARS = 45
_SAME_LINE = re.compile(r"^(--?[A-Za-z][^\s,]*(?:, --?[A-Za-z][^\s,]*)*)( +)(\S.*)$")
_OPTION = re.compile(r"--?[A-Za-z][A-Za-z0-9-]*")
_ALTERNATIVES = re.compile(r"\s*(?:,|\|)\s*")
_BROKEN_WORD = "\u2010"  # how groff -Tutf8 hyphenates a word at the end of a line


@dataclass(frozen=True)
class ManOption:
    """One option of a page: its name (the long form when it has one) and its first paragraph."""

    page: str
    name: str
    description: str


@dataclass(frozen=True)
class FollowUp:
    option: str
    question: str
    answer: str


@dataclass(frozen=True)
class QAItem:
    id: str
    doc_id: str  # the gold document: the page, as the manpages corpus names it
    option: str
    question: str
    answer: str  # the gold answer: the option's description
    follow_up: FollowUp | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> QAItem:
        follow = record.get("follow_up")
        return cls(
            id=str(record["id"]),
            doc_id=str(record["doc_id"]),
            option=str(record["option"]),
            question=str(record["question"]),
            answer=str(record["answer"]),
            follow_up=FollowUp(**follow) if follow else None,
        )


def question_for(option: str, page: str) -> str:
    return f"What does the {option} option of {page} do?"


def follow_up_for(option: str) -> str:
    return f"And what does {option} do?"


# --------------------------------------------------------------------------- parsing


def option_name(tag: str) -> str | None:
    """The name a question asks about: ``-f FILE, --file=FILE`` → ``--file``; None if no option."""
    names = []
    for alternative in _ALTERNATIVES.split(tag.strip()):
        word = re.split(r"[\s=\[]", alternative, maxsplit=1)[0]
        if _OPTION.fullmatch(word):
            names.append(word)
    if not names:
        return None
    long_names = [n for n in names if n.startswith("--")]
    return long_names[0] if long_names else max(names, key=len)


def _joined(lines: Sequence[str]) -> str:
    text = ""
    for line in lines:
        piece = " ".join(line.split())
        if text.endswith(_BROKEN_WORD) and piece[:1].isalpha():
            text = text[:-1] + piece
        else:
            text = f"{text} {piece}" if text else piece
    return text


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_tag(line: str) -> bool:
    return line.startswith("-") and len(line) <= MAX_TAG_CHARS and option_name(line) is not None


def _same_line(line: str, following: str) -> tuple[str, str, int] | None:
    """A short tag sharing its line with the text ("-e     Switch to ..."): the tag, the text, and
    the indent of the paragraph's other lines (mdoc indents them less than the first)."""
    match = _SAME_LINE.match(line)
    if match is None or option_name(match.group(1)) is None:
        return None
    column = match.start(3)
    # The text is clearly apart from the tag, or where man puts it: "--help Output a usage message"
    # (with one space elsewhere, "--switch-on EVENT_NAME" is a tag and its argument, on their own line).
    if len(match.group(2)) < 2 and column != 7:
        return None
    if not following.strip():  # a paragraph of one line
        return match.group(1), match.group(3), column
    # A paragraph: its next line is indented, by no more than the text's first line.
    if not MIN_INDENT <= _indent(following) <= column:
        return None
    return match.group(1), match.group(3), _indent(following)


def _after_prose(previous: str) -> bool:
    """Whether a line follows a line of running text, so that a leading option is a word in it
    ("... so --guest and" / "--host need to be specified."), not a tag. Tags follow a blank line,
    a subheading, or the indented text of the option before."""
    return bool(previous.strip()) and _indent(previous) == 0 and len(previous) > MAX_SUBHEADING_CHARS


def _body(lines: Sequence[str], indent: int) -> list[str]:
    body = []
    for line in lines:
        if not line.strip() or _indent(line) < indent:
            break
        body.append(line)
    return body


def page_options(page: str, text: str) -> list[ManOption]:
    """The options a page documents as tagged paragraphs, each with its description's first paragraph.

    Pages are written with man, mdoc or DocBook macros, which indent the paragraph differently (4 to
    8 columns) and may put a short tag on the text's first line; a tag may take several lines
    (``-c command`` then ``--command=command``). An option whose tag appears more than once in the
    page (documented in two places) is left out: its answer would be ambiguous.
    """
    lines = text.split("\n") + [""]
    found: list[ManOption] = []
    number = 0
    while number < len(lines) - 1:
        line, previous = lines[number], lines[number - 1] if number else ""
        number += 1
        if not line.startswith("-") or _after_prose(previous):
            continue
        same = _same_line(line, lines[number])
        if same is not None:
            tag, first, indent = same
            body = [first, *_body(lines[number:], indent)]
        else:
            tags = [line]
            while number < len(lines) and _is_tag(lines[number]):
                tags.append(lines[number])
                number += 1
            if not lines[number].strip() and number + 1 < len(lines):
                number += 1  # help2man pages (sed) leave a blank line between the tag and its text
            indent = _indent(lines[number])
            if not all(_is_tag(t) for t in tags) or not MIN_INDENT <= indent <= MAX_INDENT:
                continue
            tag, body = ", ".join(t.strip() for t in tags), _body(lines[number:], indent)
        name = option_name(tag)
        description = _joined(body)
        if name is not None and description[:1].isalnum():
            found.append(ManOption(page=page, name=name, description=description))
    counts: dict[str, int] = {}
    for option in found:
        counts[option.name] = counts.get(option.name, 0) + 1
    return [o for o in found if counts[o.name] == 1]


def answerable(option: ManOption) -> bool:
    """Long enough to be an answer, short enough not to be a section, and not a list's lead-in."""
    words = len(option.description.split())
    return MIN_ANSWER_WORDS <= words <= MAX_ANSWER_WORDS and not option.description.endswith(":")


def names_page(text: str, page: str) -> bool:
    """Whether ``text`` names the command (as a word), so it would not need the history."""
    return re.search(rf"(?<![\w-]){re.escape(page)}(?![\w-])", text, re.IGNORECASE) is not None


# --------------------------------------------------------------------------- building


def page_items(
    page: str, text: str, per_page: int = QUESTIONS_PER_PAGE, seed: int = datasets.SAMPLE_SEED
) -> list[QAItem]:
    """Up to ``per_page`` questions about one page; the first has a follow-up if an option is left."""
    options = [o for o in page_options(page, text) if answerable(o)]
    shuffled = random.Random(f"{seed}-{page}").sample(options, len(options))
    asked = shuffled[:per_page]
    # The follow-up's option must not name the command, or it would not need the history.
    others = [o for o in shuffled[per_page:] if not names_page(o.name, page)]
    items = []
    for position, option in enumerate(asked):
        follow_up = None
        if others and position == 0:
            follow_up = FollowUp(others[0].name, follow_up_for(others[0].name), others[0].description)
        items.append(
            QAItem(
                id=f"qa-{page}{option.name}",
                doc_id=page,
                option=option.name,
                question=question_for(option.name, page),
                answer=option.description,
                follow_up=follow_up,
            )
        )
    return items


def build_items(
    pages: Iterable[tuple[str, str]], *, per_page: int = QUESTIONS_PER_PAGE, limit: int = MAX_QUESTIONS
) -> list[QAItem]:
    """Questions over (page, text) pairs, pages in sorted order, at most ``limit`` in all."""
    items: list[QAItem] = []
    for page, text in sorted(pages):
        items.extend(page_items(page, text, per_page))
        if len(items) >= limit:
            break
    return items[:limit]


def corpus_pages(corpus: Path) -> Iterator[tuple[str, str]]:
    for record in datasets.read_beir_corpus(corpus):
        yield record["id"], record["text"]


def write_items(items: Sequence[QAItem], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")
    return path


def read_items(path: Path) -> list[QAItem]:
    items = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                items.append(QAItem.from_dict(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise InvalidInput(f"{path} line {number} is not a QA record") from exc
    return items


def build(corpus_folder: Path, path: Path, limit: int = MAX_QUESTIONS) -> Path:
    """The QA set of a manpages BEIR folder, written as JSON lines; InvalidInput if it is too small."""
    items = build_items(corpus_pages(corpus_folder / "corpus.jsonl"), limit=limit)
    if len(items) < 20:
        raise InvalidInput(f"only {len(items)} option descriptions found in {corpus_folder}: too few for a QA set")
    return write_items(items, path)


def load_manpages_qa() -> tuple[datasets.BeirDataset, list[QAItem]]:
    """The manpages set and its QA set, both built on first use in the built datasets folder."""
    corpus = datasets.load_beir(datasets.MANPAGES)
    path = datasets.built_datasets_dir() / QA_FILE
    if not path.is_file() or path.stat().st_mtime < (corpus.root / "corpus.jsonl").stat().st_mtime:
        build(corpus.root, path)
    items = read_items(path)
    known = {record["id"] for record in corpus.corpus()}
    missing = sorted({item.doc_id for item in items} - known)
    if missing:
        raise InvalidInput(f"{datasets.display_path(path)} asks about pages not in the corpus: {missing[:5]}")
    return corpus, items


def sample_items(items: Sequence[QAItem], count: int | None, seed: int = datasets.SAMPLE_SEED) -> list[QAItem]:
    """A fixed, seeded sample (in the set's order), or all of them when ``count`` is None."""
    if count is None or count >= len(items):
        return list(items)
    chosen = set(random.Random(seed).sample(range(len(items)), count))
    return [item for position, item in enumerate(items) if position in chosen]


def answer_corpus_ids(
    corpus: datasets.BeirDataset, items: Sequence[QAItem], size: int | None, seed: int = datasets.SAMPLE_SEED
) -> set[str] | None:
    """The pages to ingest for a quick run: the gold pages of ``items`` topped up with seeded random
    others (distractors) to about ``size``; None (the whole corpus) when ``size`` is None."""
    if size is None:
        return None
    wanted = {item.doc_id for item in items}
    others = sorted(d["id"] for d in corpus.corpus() if d["id"] not in wanted)
    extra = max(size - len(wanted), 0)
    return wanted | set(random.Random(seed).sample(others, min(extra, len(others))))

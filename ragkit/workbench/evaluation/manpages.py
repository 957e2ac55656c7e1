"""A long-document retrieval set built from the manual pages installed on this machine.

SciFact's and ArguAna's documents are a few hundred words: every document is one or two chunks,
so they cannot show how ranking behaves when a document is thousands of words long. Manual pages
are real, public, long and varied, and they come with a one-line description written by their
authors ("cp - copy files and directories"), which makes a known-item query: the description asks
for the page it describes. So, for each page long enough:

- the query is the NAME line's description ("copy files and directories");
- the document is the rendered page without its NAME section (left in, the query would be
  found verbatim in the first chunk), with the page's own headings as Markdown headings;
- the one relevant document is that page.

Pages whose description is too short to search for, repeated (families of near-identical pages
such as ``gcloud_*``, a dozen ``git-*`` subcommands sharing a line), or whose text is too short, are
left out. Nothing is downloaded and nothing is committed: the set is rebuilt from the pages
installed here, in BEIR's layout, so the evaluation notebook reads it like the BEIR sets.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ragkit.core.errors import InvalidInput

MAN_DIR = Path("/usr/share/man/man1")
MIN_WORDS = 1500
MAX_WORDS = 20_000  # the few giants (bash, gcc) would be most of the chunks
MIN_QUERY_WORDS = 3
_SKIP_PREFIXES = ("gcloud", "perl", "git-", "openssl-", "llvm-")
_NAME_LINE = re.compile(r"^\s*(\S.*?)\s+[-\u2010-\u2014]+\s+(.+)$")
_SECTION = re.compile(r"^([A-Z][A-Z0-9 /&-]{1,40})$")


@dataclass(frozen=True)
class ManPage:
    name: str
    description: str
    text: str  # without the NAME section, headings as "## HEADING"

    @property
    def words(self) -> int:
        return len(self.text.split())


def render(path: Path) -> ManPage | None:
    """One page as plain text via groff, or None if it does not render into a NAME and a body."""
    groff = shutil.which("groff")
    if groff is None:
        raise InvalidInput("groff is needed to render manual pages (apt-get install groff-base)")
    source = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    try:
        # -k: the source read as UTF-8; -P -cbou: plain characters, no overstriking, bold or underline.
        shown = subprocess.run(
            [groff, "-k", "-man", "-Tutf8", "-P", "-cbou"], input=source, capture_output=True, timeout=30, check=False
        ).stdout.decode("utf-8", errors="replace")
    except subprocess.TimeoutExpired:
        return None
    lines = shown.splitlines()[1:-1]  # the running header and footer ("CP(1)  User Commands  CP(1)")
    sections: list[tuple[str, list[str]]] = []
    for line in lines:
        if _SECTION.match(line):
            sections.append((line.strip(), []))
        elif sections:
            sections[-1][1].append(line[7:] if line.startswith(" " * 7) else line.strip())
    name_lines = next((body for heading, body in sections if heading == "NAME"), None)
    if not name_lines:
        return None
    match = _NAME_LINE.match(" ".join(" ".join(name_lines).split()))
    if not match:
        return None
    body = []
    for heading, text in sections:
        if heading != "NAME":
            body.append(f"## {heading.title()}\n\n" + "\n".join(text).strip())
    text = re.sub(r"\n{3,}", "\n\n", "\n\n".join(body)).strip()
    return ManPage(name=match.group(1).split(",")[0].strip(), description=match.group(2).strip(), text=text)


def candidate_pages(man_dir: Path = MAN_DIR, min_bytes: int = 4000) -> Iterator[Path]:
    """Section-1 pages large enough to be long once rendered, in a fixed order."""
    for path in sorted(man_dir.glob("*.1*")):
        if path.name.startswith(_SKIP_PREFIXES) or path.stat().st_size < min_bytes:
            continue
        yield path


def long_pages(limit: int, man_dir: Path = MAN_DIR, min_words: int = MIN_WORDS) -> list[ManPage]:
    """Up to ``limit`` pages of ``min_words`` or more, each with a distinct, searchable description."""
    pages: list[ManPage] = []
    seen: set[str] = set()
    for path in candidate_pages(man_dir):
        page = render(path)
        if page is None or not (min_words <= page.words <= MAX_WORDS):
            continue
        key = page.description.lower().rstrip(".")
        if len(key.split()) < MIN_QUERY_WORDS or key in seen:
            continue
        seen.add(key)
        pages.append(page)
        if len(pages) >= limit:
            break
    return pages


def write_beir(pages: list[ManPage], folder: Path) -> Path:
    """The pages as a BEIR folder: corpus.jsonl, queries.jsonl and qrels/test.tsv (one relevant each)."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as corpus:
        for page in pages:
            corpus.write(json.dumps({"_id": page.name, "title": page.name, "text": page.text}) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as queries:
        for page in pages:
            queries.write(json.dumps({"_id": f"q-{page.name}", "text": page.description}) + "\n")
    with (folder / "qrels" / "test.tsv").open("w", encoding="utf-8") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for page in pages:
            qrels.write(f"q-{page.name}\t{page.name}\t1\n")
    return folder


def build(folder: Path, limit: int = 200, man_dir: Path = MAN_DIR) -> Path:
    """Build (or rebuild) the long-document set in ``folder``; InvalidInput if too few pages exist."""
    pages = long_pages(limit, man_dir)
    if len(pages) < 20:
        raise InvalidInput(f"only {len(pages)} manual pages of {MIN_WORDS}+ words in {man_dir}: too few for a set")
    return write_beir(pages, folder)

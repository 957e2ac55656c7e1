"""Where a chunk sits in its document: the pages it spans and the heading it falls under.

A citation that says "manual.pdf, p. 4 — Installing" lets a reader check it in the source; the
chunk's text alone does not. Both are computed from character offsets: pages from the
document's ``page_starts`` (filled by the PDF and slide loaders), sections from the Markdown
headings in the text (which the HTML, Word and slide loaders write as Markdown headings too).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

from ragkit.core.errors import InvalidInput

MAX_PAGES = 100_000
MAX_SECTION_CHARS = 200

_HEADING_LINE = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_FENCE_LINE = re.compile(r"^ {0,3}(?:```|~~~)", re.MULTILINE)


def check_page_starts(page_starts: Sequence[int], text_length: int, where: str) -> None:
    """InvalidInput unless the offsets are ascending integers within the text (a caller sends them)."""
    if len(page_starts) > MAX_PAGES:
        raise InvalidInput(f"{where}: page_starts has {len(page_starts)} entries, at most {MAX_PAGES}")
    previous = -1
    for number, start in enumerate(page_starts, start=1):
        if not isinstance(start, int) or isinstance(start, bool):
            raise InvalidInput(f"{where}: page_starts[{number - 1}] is not an integer")
        if start < previous or start < 0 or start > text_length:
            raise InvalidInput(
                f"{where}: page_starts must be ascending offsets into the text (0 to {text_length}); "
                f"page {number} starts at {start}"
            )
        previous = start


class Locator:
    """Answers "which pages, which section" for spans of one document's text."""

    def __init__(self, text: str, page_starts: Sequence[int] = ()) -> None:
        self._page_starts = list(page_starts)
        self._heading_at: list[int] = []
        self._heading: list[str] = []
        fences = [m.start() for m in _FENCE_LINE.finditer(text)]
        for match in _HEADING_LINE.finditer(text):
            # A "#" line inside a code block is a comment, not a heading.
            if bisect.bisect_right(fences, match.start()) % 2:
                continue
            self._heading_at.append(match.start())
            self._heading.append(" ".join(match.group(2).split())[:MAX_SECTION_CHARS])

    def pages(self, start: int, end: int) -> tuple[int | None, int | None]:
        """The first and last page (1-based) of text[start:end]; (None, None) without pages."""
        if not self._page_starts:
            return None, None
        first = max(1, bisect.bisect_right(self._page_starts, start))
        last = max(first, bisect.bisect_right(self._page_starts, max(start, end - 1)))
        return first, last

    def section(self, start: int) -> str:
        """The heading of the section that text from ``start`` on belongs to ("" before any)."""
        index = bisect.bisect_right(self._heading_at, start) - 1
        return self._heading[index] if index >= 0 else ""

"""PDF text by page, without what the page layout adds to it.

A PDF's text comes out page by page with the page's furniture in it: running headers ("Shared
MIME-info Database", "Chapter 2: ASN.1 structure handling 3"), page numbers, footers, and words
hyphenated at line ends ("declara-" / "tions"). Left in, they split sentences, match searches for
the wrong reasons and show up in answers. So, before chunking:

- a line at the top or bottom of a page (the first or last two) that recurs at page edges on
  several pages, digits ignored (so "Page 3" and "Page 4" are the same line), is furniture and is
  removed, and so is a bare page number there;
- a word broken by a hyphen at a line end, continued in lowercase on the next line, is joined.

The pages are kept: the document's ``page_starts`` say where each page's text begins, so every
chunk can cite the pages it comes from.
"""

from __future__ import annotations

import io
import logging
import re
from collections import Counter
from typing import Any

from ragkit.core.errors import InvalidInput

log = logging.getLogger(__name__)

EDGE_LINES = 2  # lines at the top and at the bottom of a page where headers and footers sit
_DIGITS = re.compile(r"\d+")
_PAGE_NUMBER = re.compile(r"(?:page\s+)?\d{1,4}(?:\s*(?:/|of)\s*\d{1,4})?|[ivxlcdm]{1,6}", re.IGNORECASE)
_HYPHENATED = re.compile(r"([^\W\d_])-\n[ \t]*([a-z])")


def read_pdf(name: str, data: bytes) -> tuple[str, list[str], int]:
    """(title, the text of each page, cleaned, number of pages); InvalidInput naming the file."""
    from pypdf import PdfReader  # deferred: only PDF ingestion pays for the import

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Many PDFs are "encrypted" only to restrict printing, with an empty user
            # password; those read fine. A real password we cannot know.
            try:
                opened = reader.decrypt("")
            except Exception as exc:  # e.g. AES without a crypto library installed
                raise InvalidInput(
                    f"{name}: the PDF is encrypted and cannot be opened ({exc}); "
                    "save an unencrypted copy and upload that",
                    source=name,
                ) from exc
            if not opened:
                raise InvalidInput(
                    f"{name}: the PDF is password-protected; save an unencrypted copy and upload that", source=name
                )
        pages = [(page.extract_text() or "") for page in reader.pages]
        title = _title(reader)
    except InvalidInput:
        raise
    except Exception as exc:  # PdfReadError, but also ValueError, KeyError... on a damaged file
        raise InvalidInput(f"{name}: not a readable PDF ({exc})", source=name) from exc
    if pages and not any(p.strip() for p in pages):
        log.warning("%s: no extractable text in %d page(s); a scan without OCR?", name, len(pages))
    return title, clean_pages(pages), len(pages)


def clean_pages(pages: list[str]) -> list[str]:
    """Each page's text without running headers, footers and page numbers, hyphenation joined."""
    split = [[line.strip() for line in page.replace("\r\n", "\n").split("\n") if line.strip()] for page in pages]
    furniture = _furniture(split)
    cleaned = []
    for lines in split:
        keep = []
        for index, line in enumerate(lines):
            at_edge = index < EDGE_LINES or index >= len(lines) - EDGE_LINES
            if at_edge and (_key(line) in furniture or _PAGE_NUMBER.fullmatch(line)):
                continue
            keep.append(line)
        cleaned.append(_HYPHENATED.sub(r"\1\2", "\n".join(keep)))
    return cleaned


def _key(line: str) -> str:
    return _DIGITS.sub("#", " ".join(line.lower().split()))


def _furniture(pages: list[list[str]]) -> set[str]:
    """Edge lines that recur on enough pages to be layout, not text."""
    seen: Counter[str] = Counter()
    for lines in pages:
        edges = {_key(line) for line in lines[:EDGE_LINES] + lines[-EDGE_LINES:]}
        seen.update(edges)
    # Two pages are enough: a chapter's running header ("Chapter 2: ... 4") recurs only on that
    # chapter's pages, which may be two; body text rarely repeats a whole line at two page edges.
    return {key for key, count in seen.items() if count >= 2}


def _title(reader: Any) -> str:
    try:
        info = reader.metadata
        title = info.title if info else None
    except Exception:  # noqa: BLE001 - a damaged info dictionary must not lose the text
        return ""
    return str(title).strip() if title else ""

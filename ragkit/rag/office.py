"""Word (.docx) and PowerPoint (.pptx) files as text, written as Markdown.

Headings become ``#`` lines (Word's "Heading n" and "Title" styles; a slide's title), list
paragraphs become ``-`` / ``1.`` items, tables become Markdown tables: the chunker, the
citations ("section") and the extractive answerer then read these files like any Markdown.
A slide is a page: ``read_pptx`` returns one text per slide, so chunks cite slide numbers.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

from ragkit.core.errors import InvalidInput

_HEADING_STYLE = re.compile(r"heading\s*(\d)", re.IGNORECASE)


def read_docx(name: str, data: bytes) -> tuple[str, list[str]]:
    """(title, [the whole text]): a Word file has no fixed pages, so it is one page of text."""
    import docx  # deferred: only Word ingestion pays for the import

    document = _open(name, data, docx.Document, "Word")
    try:
        lines = list(_docx_lines(document))
        title = (document.core_properties.title or "").strip()
    except Exception as exc:  # a part python-docx reads lazily is damaged
        raise InvalidInput(f"{name}: not a readable Word document ({exc})", source=name) from exc
    if not title:
        title = next((line[2:] for line in lines if line.startswith("# ")), "")
    return title, ["\n".join(lines).strip()]


def read_pptx(name: str, data: bytes) -> tuple[str, list[str]]:
    """(title, the text of each slide): a slide is a page."""
    import pptx  # deferred: only PowerPoint ingestion pays for the import

    deck = _open(name, data, pptx.Presentation, "PowerPoint")
    try:
        slides = ["\n".join(_slide_lines(slide)).strip() for slide in deck.slides]
        title = (deck.core_properties.title or "").strip()
    except Exception as exc:
        raise InvalidInput(f"{name}: not a readable PowerPoint file ({exc})", source=name) from exc
    if not title:
        title = next((s.split("\n", 1)[0][3:] for s in slides if s.startswith("## ")), "")
    return title, slides


def _open(name: str, data: bytes, opener: Any, kind: str) -> Any:
    try:
        return opener(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise InvalidInput(f"{name}: not a readable {kind} file ({exc or type(exc).__name__})", source=name) from exc
    except Exception as exc:  # lxml errors on a damaged part, and whatever else a bad file raises
        raise InvalidInput(f"{name}: not a readable {kind} file ({type(exc).__name__}: {exc})", source=name) from exc


def _docx_lines(document: Any) -> Iterator[str]:
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    # Paragraphs and tables in document order (document.paragraphs alone skips the tables).
    # Blocks are separated by a blank line, except list items from each other.
    in_list = False
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            yield from ([""] if in_list else [])
            yield from _table_lines([[cell.text for cell in row.cells] for row in item.rows])
            yield ""
            in_list = False
        elif isinstance(item, Paragraph):
            text = " ".join(item.text.split())
            if not text:
                continue
            style = ((item.style.name if item.style is not None else "") or "").lower()
            if "list" in style:
                yield f"{'1.' if 'number' in style else '-'} {text}"
                in_list = True
                continue
            yield from ([""] if in_list else [])
            in_list = False
            if heading := _HEADING_STYLE.match(style):
                yield f"{'#' * min(6, int(heading.group(1)))} {text}"
            else:
                yield f"# {text}" if style == "title" else text
            yield ""


def _slide_lines(slide: Any) -> Iterator[str]:
    title_shape = slide.shapes.title
    if title_shape is not None and title_shape.has_text_frame and title_shape.text_frame.text.strip():
        yield "## " + " ".join(title_shape.text_frame.text.split())
        yield ""
    for shape in slide.shapes:
        if title_shape is not None and shape.shape_id == title_shape.shape_id:
            continue
        if getattr(shape, "has_table", False) and shape.has_table:
            yield from _table_lines([[cell.text for cell in row.cells] for row in shape.table.rows])
            yield ""
        elif shape.has_text_frame:
            for paragraph in shape.text_frame.paragraphs:
                text = " ".join("".join(run.text for run in paragraph.runs).split())
                if text:
                    # Indented paragraphs of a body placeholder are the slide's bullets.
                    yield ("  " * paragraph.level + "- " + text) if paragraph.level else text
            yield ""
    if slide.has_notes_slide and (notes := slide.notes_slide.notes_text_frame.text.strip()):
        yield "Notes: " + " ".join(notes.split())


def _table_lines(rows: Iterable[list[str]]) -> Iterator[str]:
    rows = [[" ".join(cell.split()).replace("|", "/") for cell in row] for row in rows]
    if not rows:
        return
    yield "| " + " | ".join(rows[0]) + " |"
    yield "|" + "---|" * len(rows[0])
    for row in rows[1:]:
        yield "| " + " | ".join(row) + " |"

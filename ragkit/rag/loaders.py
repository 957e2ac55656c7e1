"""Turn files and uploads into `Document`s.

Two entry points share one set of format readers:

- `load_path(path)` for a file or a folder on disk (the CLI, notebooks, `make up`);
- `load_bytes(filename, data)` for an HTTP upload.

Document ids must be stable across runs, because ingestion skips a document whose id and
content hash are unchanged. So a single-document file is identified by its path relative
to the folder that was given (or by the upload filename), never by an absolute path, and a
JSON/JSONL record by its own id.

Every problem with the input itself is an `InvalidInput` naming the file (and the line for
JSONL), so the service answers 422 and the CLI can say which file to fix.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ragkit.core.errors import Forbidden, InvalidInput
from ragkit.core.types import Document
from ragkit.rag.office import read_docx, read_pptx
from ragkit.rag.pdf import read_pdf

log = logging.getLogger(__name__)

# Extension -> format name stored in metadata["format"].
_FORMATS: dict[str, str] = {
    ".txt": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".pptx": "pptx",
    ".json": "json",
    ".jsonl": "jsonl",
}
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(_FORMATS)

# C0 controls other than tab and newline: NULs and friends from binary junk or bad
# extractions break JSON payloads and terminals downstream, and carry no meaning.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MANY_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_MD_H1 = re.compile(r"^ {0,3}#[ \t]+(.+?)[ \t]*#*[ \t]*$")
_MD_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_WHITESPACE_RUN = re.compile(r"[ \t\r\n\f\v]{2,}|[\t\r\n\f\v]")

# Tags whose text is never content.
_HTML_DROP = ("script", "style", "noscript", "template", "svg", "head")
# Block-level tags: their boundaries become line breaks so that words from adjacent blocks
# are not glued together and paragraphs survive as blank-line separated blocks (which the
# chunker uses as boundaries).
_HTML_BLOCKS = (
    "address", "article", "aside", "blockquote", "dd", "details", "div", "dl", "dt", "fieldset",
    "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
    "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tr", "ul",
)  # fmt: skip


def supported(filename: str) -> bool:
    return _extension(filename) in _FORMATS


def allowed_path(raw: str, roots: Sequence[Path]) -> Path:
    """The file or folder ``raw`` names, resolved (symlinks followed), if it lies inside one of
    ``roots``: a relative path is taken from the first root. Forbidden otherwise, saying so."""
    if not roots:
        raise Forbidden("server-side paths are off; an admin allows folders with RAGKIT_INGEST_ROOTS")
    if "\x00" in raw or not raw.strip():
        raise InvalidInput("the path is empty or holds a NUL character")
    candidate = Path(raw).expanduser()
    resolved = (candidate if candidate.is_absolute() else roots[0] / candidate).resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise Forbidden(f"{raw} is outside the folders RAGKIT_INGEST_ROOTS allows", path=raw)
    if not resolved.exists():
        raise InvalidInput(f"{raw}: no such file or folder under the allowed folders", path=raw)
    return resolved


def load_path(
    path: Path | str, skipped: list[tuple[str, str]] | None = None, *, follow_links: bool = True
) -> Iterator[Document]:
    """Documents from a file, or from every supported file under a folder.

    A folder is walked recursively in sorted order of relative path, so runs are
    reproducible; hidden files and folders (names starting with a dot) are skipped, and so
    are files with an unsupported extension (a folder of docs often holds images too), each
    added to ``skipped`` as (relative path, reason) so the caller can say so; with ``skipped``
    given, a file that cannot be read is added to it too, and the folder goes on. A file named
    explicitly must be supported. ``follow_links=False`` (a job reading the service's own disk)
    skips symbolic links, which could lead out of the folder an admin allowed.
    """
    root = Path(path)
    if root.is_file():
        yield from _load_file(root, root.name)
        return
    if not root.is_dir():
        raise InvalidInput(f"{root}: no such file or folder", path=str(root))
    for file, relative in _walk(root):
        if not follow_links and file.is_symlink():
            if skipped is not None:
                skipped.append((relative, "a symbolic link; not followed"))
            continue
        if not supported(relative):
            log.info("skipping %s: unsupported extension", relative)
            if skipped is not None:
                skipped.append((relative, f"unsupported file type {_extension(relative) or '(no extension)'}"))
            continue
        try:
            yield from _load_file(file, relative)
        except InvalidInput as exc:
            if skipped is None:
                raise
            skipped.append((relative, exc.message))  # one unreadable file does not stop the folder


def load_bytes(filename: str, data: bytes) -> list[Document]:
    """Documents from an uploaded file; `filename` (as sent) decides the format and the id."""
    name = _clean_upload_name(filename)
    fmt = _format_of(name)
    if fmt == "jsonl":
        return list(_records_from_lines(io.BytesIO(data), name))
    return list(_load_data(name, fmt, data))


# --------------------------------------------------------------------------- files


def _walk(root: Path) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    for folder, dirs, files in os.walk(root):
        # Pruning in place stops os.walk from descending into hidden folders (.git, .venv).
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            file = Path(folder) / name
            found.append((file, file.relative_to(root).as_posix()))
    found.sort(key=lambda item: item[1])
    return found


def _load_file(file: Path, name: str) -> Iterator[Document]:
    fmt = _format_of(name)
    if fmt == "jsonl":
        # Streamed line by line: BEIR corpora run to millions of lines.
        try:
            with file.open("rb") as lines:
                yield from _records_from_lines(lines, name)
        except OSError as exc:
            raise InvalidInput(f"{name}: cannot read file ({exc.strerror})", source=name) from exc
        return
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{name}: cannot read file ({exc.strerror})", source=name) from exc
    yield from _load_data(name, fmt, data)


def _clean_upload_name(filename: str) -> str:
    # Clients may send a relative path to keep ids unique across folders; normalise it so
    # the same file uploaded from Windows or POSIX gets the same id. It is only an id,
    # never used to open a file, so there is no traversal to guard against.
    name = (filename or "").replace("\\", "/").strip()
    while name.startswith(("./", "/")):
        name = name[2:] if name.startswith("./") else name[1:]
    if not name or name.endswith("/"):
        raise InvalidInput("an uploaded file needs a file name (it decides the format and the document id)")
    return name


def _extension(name: str) -> str:
    return PurePosixPath(name).suffix.lower()


def _format_of(name: str) -> str:
    fmt = _FORMATS.get(_extension(name))
    if fmt is None:
        raise InvalidInput(
            f"{name}: unsupported file type; supported extensions are {', '.join(SUPPORTED_EXTENSIONS)}",
            source=name,
            supported=list(SUPPORTED_EXTENSIONS),
        )
    return fmt


def _stem(name: str) -> str:
    return PurePosixPath(name).stem


# --------------------------------------------------------------------------- formats


def _load_data(name: str, fmt: str, data: bytes) -> Iterator[Document]:
    if fmt == "text":
        yield from _single(name, fmt, _clean_text(_decode(data)), _stem(name))
    elif fmt == "markdown":
        text = _clean_text(_decode(data))
        yield from _single(name, fmt, text, _markdown_title(text) or _stem(name))
    elif fmt == "html":
        title, text = _html_text(data)
        yield from _single(name, fmt, text, title or _stem(name))
    elif fmt == "pdf":
        title, pages, count = read_pdf(name, data)
        text, starts = _paged(pages)
        yield from _single(name, fmt, text, title or _stem(name), {"pages": count}, starts)
    elif fmt in ("docx", "pptx"):
        title, pages = read_docx(name, data) if fmt == "docx" else read_pptx(name, data)
        text, starts = _paged(pages)
        extra = {"pages": len(pages)} if fmt == "pptx" else None
        yield from _single(name, fmt, text, title or _stem(name), extra, starts if fmt == "pptx" else ())
    elif fmt == "json":
        yield from _records_from_json(name, data)
    else:
        yield from _records_from_lines(io.BytesIO(data), name)


def _single(
    name: str,
    fmt: str,
    text: str,
    title: str,
    extra: dict[str, Any] | None = None,
    page_starts: tuple[int, ...] = (),
) -> Iterator[Document]:
    if not text:
        log.info("skipping %s: no text", name)
        return
    metadata: dict[str, Any] = {"source": name, "format": fmt, **(extra or {})}
    yield Document(id=name, text=text, title=title.strip(), metadata=metadata, page_starts=page_starts)


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    # utf-8-sig drops a BOM that would otherwise end up in the first token; replacement
    # rather than failure, because one stray Latin-1 byte should not lose a whole file.
    return data.decode("utf-8-sig", errors="replace")


def _clean_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL_CHARS.sub("", text)
    text = _MANY_BLANK_LINES.sub("\n\n", text)
    return text.strip()


def _markdown_title(text: str) -> str:
    in_fence = False
    for line in text.split("\n"):
        if _MD_FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (match := _MD_H1.match(line)):
            return match.group(1).strip()
    return ""


def _html_text(data: bytes) -> tuple[str, str]:
    from bs4 import BeautifulSoup, NavigableString  # deferred: only HTML ingestion pays for the import

    # Bytes, not str: BeautifulSoup then honours <meta charset> and BOMs itself.
    # html.parser (stdlib) rather than lxml so results don't depend on what is installed.
    soup = BeautifulSoup(data, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if not title and (h1 := soup.find("h1")):
        title = h1.get_text(" ", strip=True)
    for tag in soup(_HTML_DROP):
        tag.decompose()
    # In HTML a line break in the source is just a space; only <pre> keeps its layout. Without
    # this, hard-wrapped source would look like one line per sentence fragment.
    for string in soup.find_all(string=True):
        if type(string) is not NavigableString:
            continue  # comments, doctype, CDATA: rewriting them would turn them into text
        if string.find_parent(("pre", "textarea")) is None and _WHITESPACE_RUN.search(string):
            string.replace_with(_WHITESPACE_RUN.sub(" ", string))
    for tag in soup.find_all("br"):
        tag.replace_with("\n")
    # Headings and list items as Markdown writes them: the chunker and the citations know a
    # section by its heading line, and the answerer a list by its items.
    for tag in soup.find_all(("h1", "h2", "h3", "h4", "h5", "h6")):
        tag.insert(0, "#" * int(tag.name[1]) + " ")
    for tag in soup.find_all("li"):
        tag.insert(0, "1. " if tag.parent is not None and tag.parent.name == "ol" else "- ")
    for tag in soup.find_all(_HTML_BLOCKS):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    lines = (line.rstrip() for line in soup.get_text().split("\n"))
    text = "\n".join(line.lstrip() if not line.startswith("    ") else line for line in lines)
    return " ".join(title.split()), _clean_text(text)


def _paged(pages: list[str]) -> tuple[str, tuple[int, ...]]:
    """Pages joined as paragraphs, and where each starts (an empty page starts where the next does)."""
    parts: list[str] = []
    starts: list[int] = []
    length = 0
    for page in pages:
        text = _clean_text(page)
        if text and parts:
            parts.append("\n\n")
            length += 2
        starts.append(length)
        if text:
            parts.append(text)
            length += len(text)
    return "".join(parts), tuple(starts)


# --------------------------------------------------------------------------- records


def _records_from_json(name: str, data: bytes) -> Iterator[Document]:
    try:
        parsed = json.loads(_decode(data))
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{name}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
            source=name,
            line=exc.lineno,
        ) from exc
    # Also accept the body of the HTTP ingest call, {"documents": [...]}, so a request
    # saved to a file can be ingested as is.
    if isinstance(parsed, dict) and "text" not in parsed and isinstance(parsed.get("documents"), list):
        parsed = parsed["documents"]
    if isinstance(parsed, dict):
        document = _record_document(parsed, name, fallback_id=name, where=f"{name}")
        if document:
            yield document
        return
    if not isinstance(parsed, list):
        raise InvalidInput(f"{name}: expected a JSON object or a list of objects", source=name)
    for number, record in enumerate(parsed, start=1):
        where = f"{name}, record {number}"
        if not isinstance(record, dict):
            raise InvalidInput(f"{where}: expected a JSON object", source=name, record=number)
        document = _record_document(record, name, fallback_id=f"{name}:{number}", where=where)
        if document:
            yield document


def _records_from_lines(lines: Iterable[bytes], name: str) -> Iterator[Document]:
    for number, raw in enumerate(lines, start=1):
        line = _decode(raw).strip()
        if not line:
            continue
        where = f"{name}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                f"{where}: not valid JSON ({exc.msg} at column {exc.colno})", source=name, line=number
            ) from exc
        if not isinstance(record, dict):
            raise InvalidInput(f"{where}: expected a JSON object", source=name, line=number)
        document = _record_document(record, name, fallback_id=f"{name}:{number}", where=where)
        if document:
            yield document


def _record_document(record: dict[str, Any], name: str, *, fallback_id: str, where: str) -> Document | None:
    if "text" not in record:
        raise InvalidInput(f"{where}: the record has no 'text' field", source=name)
    text = record["text"]
    if not isinstance(text, str):
        raise InvalidInput(f"{where}: 'text' must be a string", source=name)
    text = _clean_text(text)
    raw_id = record.get("_id", record.get("id"))
    if raw_id is None or raw_id == "":
        doc_id = fallback_id
    elif isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool):
        doc_id = str(raw_id)
    else:
        raise InvalidInput(f"{where}: the id must be a string or an integer", source=name)
    if not text:
        log.info("skipping %s (id %s): empty text", where, doc_id)
        return None
    title = record.get("title")
    title = "" if title is None else str(title).strip()

    metadata: dict[str, Any] = {}
    # A nested "metadata" object (the HTTP ingest shape) is flattened, not nested twice.
    nested = record.get("metadata")
    if isinstance(nested, dict):
        metadata.update(nested)
    for key, value in record.items():
        if key not in ("_id", "id", "text", "title") and not (key == "metadata" and isinstance(nested, dict)):
            metadata[key] = value
    metadata["source"] = name
    metadata["format"] = _FORMATS[_extension(name)]
    return Document(id=doc_id, text=text, title=title, metadata=metadata)

"""Citations a reader can check: pages (PDF pages, slides) and sections (headings) from loading to
the API's sources, with the page furniture of PDFs removed and Word and PowerPoint files read.

PDFs are written by hand (`make_pdf`, so pypdf reads an independently produced file); Word and
PowerPoint files by python-docx and python-pptx at test time. Nothing binary is committed.
"""

from __future__ import annotations

import io

import pytest

from ragkit.core.errors import InvalidInput
from ragkit.core.types import Document, source_location
from ragkit.rag.chunking import chunk_document, content_hash
from ragkit.rag.loaders import load_bytes
from ragkit.rag.pdf import clean_pages
from tests.conftest import Stack
from tests.test_loaders import make_pdf


def words(text: str) -> int:
    return 4 * len(text.split()) + 2  # coarse on purpose: small documents still make several chunks


def chunks_of(doc: Document, size: int = 40) -> list:
    return chunk_document(doc, chunk_size=size, chunk_overlap=0, count_tokens=words)


MANUAL_PAGES = [
    "ACME Manual\nInstalling\nRun the installer and accept the licence. The installer copies the files.\n1",
    "ACME Manual\nConfiguring\nThe configuration file holds the declara-\ntions of all services.\n2",
    "ACME Manual\nUpgrading\nStop the service before an upgrade, then run the installer again.\n3",
]


# -- PDF ------------------------------------------------------------------------------------------
def test_a_pdf_keeps_its_pages_without_headers_page_numbers_or_hyphenation() -> None:
    (doc,) = load_bytes("manual.pdf", make_pdf(MANUAL_PAGES))
    assert "ACME Manual" not in doc.text  # the running header, on every page
    assert "declarations of all services" in doc.text  # "declara-" + "tions" joined
    assert not any(line.strip().isdigit() for line in doc.text.splitlines())  # page numbers gone
    assert len(doc.page_starts) == 3 and doc.page_starts[0] == 0
    for number, page in enumerate(("Installing", "Configuring", "Upgrading"), start=1):
        assert doc.text[doc.page_starts[number - 1] :].startswith(page)


def test_every_chunk_of_a_pdf_knows_its_pages() -> None:
    (doc,) = load_bytes("manual.pdf", make_pdf(MANUAL_PAGES))
    small = chunks_of(doc, size=16)
    assert [c.page for c in small][0] == 1 and small[-1].page_end == 3
    for chunk in small:
        start = doc.text.index(chunk.text)
        first = max(i for i, s in enumerate(doc.page_starts, 1) if s <= start)
        assert chunk.page == first and chunk.page <= chunk.page_end
    whole = chunks_of(doc, size=400)
    assert [(c.page, c.page_end) for c in whole] == [(1, 3)]


def test_furniture_is_found_on_page_edges_only() -> None:
    pages = ["Title A\nbody one\nfooter 1", "Title A\nbody two, Title A inside\nfooter 2", "Title B\nbody three\nend"]
    cleaned = clean_pages(pages)
    assert cleaned[0] == "body one"  # "footer 1" and "footer 2" are one line, digits aside
    assert cleaned[1] == "body two, Title A inside"
    assert cleaned[2] == "Title B\nbody three\nend"  # a line on one page only is text


def test_page_starts_change_the_content_hash_only_when_present() -> None:
    plain = Document(id="d", text="one two three")
    paged = Document(id="d", text="one two three", page_starts=(0, 4))
    assert content_hash(plain) != content_hash(paged)
    assert content_hash(plain) == content_hash(Document(id="other", text="one two three"))


# -- sections -------------------------------------------------------------------------------------
def test_markdown_chunks_know_their_section_and_code_comments_are_not_headings() -> None:
    text = (
        "# Guide\n\nIntro words here.\n\n## Backups\n\nTake one nightly.\n\n"
        "```sh\n# not a heading\nrun\n```\n\nKeep seven."
    )
    doc = Document(id="g.md", text=text, title="Guide")
    sections = {c.text.split("\n")[-1]: c.section for c in chunks_of(doc, size=40)}
    assert "Backups" in sections.values()
    assert all(section != "not a heading" for section in sections.values())
    assert chunks_of(doc, size=40)[-1].section == "Backups"


def test_html_headings_and_lists_become_markdown_so_sections_carry_over() -> None:
    html = b"<h1>FAQ</h1><h2>What happens when Ollama is down?</h2><p>Requests keep working.</p><ul><li>one</li></ul>"
    (doc,) = load_bytes("faq.html", html)
    assert "## What happens when Ollama is down?" in doc.text and "- one" in doc.text
    assert chunks_of(doc, size=400)[0].section == "FAQ"
    assert chunks_of(doc, size=30)[-1].section == "What happens when Ollama is down?"


# -- Word and PowerPoint --------------------------------------------------------------------------
def make_docx() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Backup guide", 0)
    document.add_heading("Restoring", 1)
    document.add_paragraph("Restore a snapshot like this:")
    document.add_paragraph("Stop the service.", style="List Number")
    document.add_paragraph("Copy the files back.", style="List Number")
    table = document.add_table(rows=2, cols=2)
    for (row, col), text in {(0, 0): "setting", (0, 1): "default", (1, 0): "RETENTION", (1, 1): "7 days"}.items():
        table.cell(row, col).text = text
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_pptx(slides: list[tuple[str, str]]) -> bytes:
    import pptx

    deck = pptx.Presentation()
    for title, body in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def test_a_word_file_reads_as_markdown_with_headings_lists_and_tables() -> None:
    (doc,) = load_bytes("guide.docx", make_docx())
    assert doc.title == "Backup guide" and doc.metadata["format"] == "docx" and doc.page_starts == ()
    assert "# Restoring" in doc.text
    assert "Restore a snapshot like this:\n\n1. Stop the service.\n1. Copy the files back.\n\n| setting" in doc.text
    assert "| RETENTION | 7 days |" in doc.text
    assert chunks_of(doc, size=400)[0].section == "Backup guide"


def test_a_slide_is_a_page() -> None:
    (doc,) = load_bytes("deck.pptx", make_pptx([("Intro", "ragkit answers questions"), ("Setup", "Run make up")]))
    assert doc.title == "Intro" and doc.metadata == {"source": "deck.pptx", "format": "pptx", "pages": 2}
    assert doc.text.count("Intro") == 1  # the title once, as the slide's heading
    setup = [c for c in chunks_of(doc, size=24) if "make up" in c.text]
    assert setup and setup[0].page == 2 and setup[0].section == "Setup"


@pytest.mark.parametrize("name", ["broken.docx", "broken.pptx"])
def test_a_damaged_office_file_is_a_clear_error(name: str) -> None:
    with pytest.raises(InvalidInput, match=rf"{name}: not a readable"):
        load_bytes(name, b"PK\x03\x04 this is not a zip")


def test_a_citation_says_file_page_and_section() -> None:
    assert source_location({"metadata": {"source": "m.pdf"}, "page": 4, "page_end": 4, "section": "Setup"}) == (
        "m.pdf, p. 4 · Setup"
    )
    assert source_location({"doc_id": "d", "page": 2, "page_end": 3}) == "d, pp. 2–3"
    assert source_location({"title": "T", "page": None}) == "T"


INTRO = "This deck shows the product to new users: what it does, who it is for, and where to read more about it."


# -- through the service --------------------------------------------------------------------------
def test_sources_carry_page_and_section_from_an_upload(stack: Stack) -> None:
    # Small chunks, so that each page of these short files is a chunk of its own.
    created = stack.http.post("/api/v1/rag/collections", json={"name": "manuals", "chunk_size": 24, "chunk_overlap": 0})
    assert created.status_code == 201, created.text
    files = [
        ("files", ("manual.pdf", make_pdf(MANUAL_PAGES), "application/pdf")),
        ("files", ("deck.pptx", make_pptx([("Intro", INTRO), ("Upgrades", "Back up first, then upgrade.")]), "x")),
    ]
    uploaded = stack.http.post("/api/v1/rag/collections/manuals/documents", files=files)
    assert uploaded.status_code == 200, uploaded.text
    body = stack.http.post(
        "/api/v1/rag/query", json={"question": "What must I do before an upgrade?", "collection": "manuals"}
    ).json()
    by_doc: dict = {}
    for source in body["sources"]:
        by_doc.setdefault(source["doc_id"], source)  # each document's best passage
    assert by_doc["manual.pdf"]["page"] == by_doc["manual.pdf"]["page_end"] == 3  # "Upgrading"
    assert by_doc["deck.pptx"]["page"] == 2 and by_doc["deck.pptx"]["section"] == "Upgrades"


def test_page_starts_sent_as_json_are_checked(stack: Stack) -> None:
    assert stack.http.post("/api/v1/rag/collections", json={"name": "paged"}).status_code == 201
    url = "/api/v1/rag/collections/paged/documents"
    for bad in ([0, 50], [5, 2], [-1], ["a"]):
        doc = {"id": "d", "text": "short text here", "page_starts": bad}
        response = stack.http.post(url, json={"documents": [doc]})
        assert response.status_code == 422, (bad, response.text)
        assert "page_starts" in response.json()["error"]["message"]
    good = {"id": "d", "text": "page one text. page two text.", "page_starts": [0, 15]}
    assert stack.http.post(url, json={"documents": [good]}).status_code == 200
    hits = stack.http.post("/api/v1/rag/search", json={"query": "page two", "collection": "paged"}).json()["results"]
    assert hits[0]["page"] == 1 and hits[0]["page_end"] == 2

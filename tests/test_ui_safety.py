"""Documents are shown as text in the workbench, never as markup: an answer that quotes a document,
the source panels under it and the search results show `<img onerror=…>` and `![](http://…)` as
the characters they are. A remote image in a rendered answer would load from the reader's browser
(an exfiltration channel); HTML would run.

Streamlit renders `st.markdown` (and captions, labels, banners) as CommonMark with extensions; the
checks render what each element was given with a CommonMark renderer, raw HTML allowed, and
require no image, no link and no HTML element, and the hostile text itself, literally, in the result.
"""

from __future__ import annotations

from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from ragkit.workbench.ui import display
from tests.conftest import REPO, SECRET, Stack

APP = REPO / "app.py"
TIMEOUT = 30

IMG = "<img src=x onerror=alert(1)>"
REMOTE = "![x](http://127.0.0.1:9/x.png)"
HOSTILE = {
    "id": "hostile",
    "title": "Embedding ![t](http://127.0.0.1:9/title.png) <b>pictures</b>",
    # In code spans: the extractive answerer strips bare markup from what it quotes (the next
    # test), so only this way does hostile text reach its answer, as an LLM's answer could anyway.
    "text": f"Images are embedded in the documents like `{IMG}` and like `{REMOTE}` in the text. "
    f"Bare markup such as {IMG} and {REMOTE} is stripped from quotes.",
    "metadata": {"note": "![m](http://127.0.0.1:9/m.png) <img src=y onerror=alert(2)>"},
}
QUESTION = "How are images embedded in the documents?"
_RENDERER = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


class _Page(HTMLParser):
    """What a browser would make of rendered markdown: its elements and its visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:  # noqa: ARG002
        self.tags.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:  # noqa: ARG002
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def rendered(markdown: str) -> tuple[set[str], str]:
    page = _Page()
    page.feed(_RENDERER.render(markdown))
    return set(page.tags), "".join(page.text).strip()  # character references are decoded once, above


def assert_shown_as_text(markdown: str, *literals: str) -> None:
    tags, text = rendered(markdown)
    assert not tags & {"img", "a", "b", "script", "iframe"}, (tags, markdown)
    for literal in literals:
        assert literal in text, (literal, text)


def assert_text_everywhere(sources: Iterable[str]) -> None:
    for source in sources:
        tags, _ = rendered(source)
        assert not tags & {"img", "a", "b", "script", "iframe"}, (tags, source)


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def hostile(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """A service holding the hostile document, and the UI pointed at it from a clean directory."""
    ui_dir = tmp_path / "ui"
    ui_dir.mkdir()
    monkeypatch.chdir(ui_dir)
    monkeypatch.setenv("RAGKIT_DATA_DIR", str(ui_dir / "data"))
    monkeypatch.setenv("RAGKIT_API_URL", stack.url)
    monkeypatch.setenv("INTER_SERVICE_SECRET", SECRET)
    assert stack.http.post("/api/v1/rag/collections", json={"name": "docs"}).status_code == 201
    response = stack.http.post("/api/v1/rag/collections/docs/documents", json={"documents": [HOSTILE]})
    assert response.status_code == 200, response.text
    return stack


def start(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# -- Ask --------------------------------------------------------------------------------------------
def test_an_answer_quoting_markup_shows_it_as_text(hostile: Stack) -> None:
    body = hostile.http.post("/api/v1/rag/query", json={"question": QUESTION, "collection": "docs"}).json()
    assert IMG in body["answer"] and REMOTE in body["answer"]  # the service answers with the raw text

    bare = hostile.http.post(
        "/api/v1/rag/query", json={"question": "What happens to bare markup?", "collection": "docs"}
    ).json()
    assert "stripped from quotes [1]." in bare["answer"] and "<img" not in bare["answer"] and "](" not in bare["answer"]

    at = start()
    at.chat_input[0].set_value(QUESTION).run()
    assert not at.exception, [e.value for e in at.exception]
    assistant = at.chat_message[1]
    answer = assistant.markdown[0].value  # then the passages, in their panels
    assert_shown_as_text(answer, IMG, REMOTE, "[1]")  # the citation stays readable

    (panel,) = assistant.expander
    assert_shown_as_text(panel.label, "Embedding ![t](http://127.0.0.1:9/title.png) <b>pictures</b>", "[1]")
    # The passage, with the sentence the answer cites in bold: still text, never markup.
    (passage,) = [m.value for m in panel.markdown]
    assert_shown_as_text(passage, IMG, REMOTE, "Bare markup such as")
    assert "**Images are embedded" in passage
    assert_shown_as_text(panel.caption[0].value, "![m](http://127.0.0.1:9/m.png) <img src=y onerror=alert(2)>")
    assert_text_everywhere(c.value for c in assistant.caption)


def test_the_answer_renderer_keeps_citations_and_lines() -> None:
    shown = display.answer_markdown(f"First {IMG} [1].\n- second {REMOTE} [2]\n\n**third** [3]")
    tags, text = rendered(shown)
    assert not tags & {"img", "a", "ul", "li", "strong", "b"}, (tags, shown)
    assert text.count("[1]") == 1 and "[2]" in text and "[3]" in text
    assert f"First {IMG} [1]." in text and f"- second {REMOTE} [2]" in text and "**third** [3]" in text
    # One line per line of the answer: a list or a heading in the answer does not become one.
    assert "br" in tags and shown.count("\n") >= 3
    # Per piece (a streamed answer) or whole, the same text.
    assert "".join(display.answer_markdown(c) for c in ["First <im", "g src=x> ![x](h", "ttp://a/b.png) [1]"]) == (
        display.answer_markdown("First <img src=x> ![x](http://a/b.png) [1]")
    )


def test_streamlit_directives_and_math_in_a_document_are_text() -> None:
    text = ":red[alarm] :material/warning: $x^2$ &lt;img src=x&gt; `code` ~~gone~~"
    tags, shown = rendered(display.answer_markdown(text))
    assert not tags & {"code", "del", "s"} and shown == text


# -- Search -----------------------------------------------------------------------------------------
def test_search_results_show_markup_as_text(hostile: Stack) -> None:
    at = start("search")
    at.text_input(key="search_query").set_value("images embedded in documents")
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert IMG in at.text[0].value and REMOTE in at.text[0].value  # the chosen result in full
    table = at.dataframe[0].value
    assert IMG in table["preview"][0]  # a dataframe cell is text
    assert_text_everywhere([*(m.value for m in at.markdown), *(c.value for c in at.caption)])
    assert_text_everywhere(s.value for s in at.subheader)

    at.toggle(key="search_compare").set_value(True)
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    lists = [m.value for m in at.markdown if m.value.startswith("**1.**")]
    assert len(lists) == 3
    for ranked in lists:
        assert_shown_as_text(ranked, "Embedding ![t](http://127.0.0.1:9/title.png)", "Images are embedded")

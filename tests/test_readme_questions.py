"""The README's example questions, asked of the sample collection `make up` ingests, get real answers.

The questions are read from the README itself (the curl example, `ragkit ask` examples and the
quoted list under them), so a question added there is asked here too. A real answer quotes the
documents with citations, is short, is not a "not found" and shows no Markdown heading; the
token-rotation question, the README's first, must bring the rotation steps, not only the lead-in.
"""

from __future__ import annotations

import re

import pytest

from ragkit.rag.loaders import load_path
from tests.conftest import REPO, Stack

README = (REPO / "README.md").read_text(encoding="utf-8")
SAMPLES = REPO / "samples" / "docs"
COLLECTION = "ragkit-docs"


def readme_questions() -> list[str]:
    asked = re.findall(r'"question": "([^"]+)"', README) + re.findall(r'ragkit ask "([^"]+)"', README)
    listed = re.search(r"More questions the sample collection answers[^\n]*\n((?:.+\n)+)", README)
    assert listed, "the README's list of example questions is gone"
    asked += re.findall(r'"([^"]+\?)"', listed.group(1))
    unique = list(dict.fromkeys(q.strip() for q in asked))
    assert len(unique) >= 4, unique
    return unique


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory, local_embedder):  # noqa: ANN001, ANN201
    from tests.conftest import start_stack

    stack, server = start_stack(tmp_path_factory.mktemp("readme"), local_embedder)
    try:
        assert stack.http.post("/api/v1/rag/collections", json={"name": COLLECTION}).status_code == 201
        documents = [
            {"id": d.id, "text": d.text, "title": d.title, "metadata": dict(d.metadata)} for d in load_path(SAMPLES)
        ]
        response = stack.http.post(f"/api/v1/rag/collections/{COLLECTION}/documents", json={"documents": documents})
        assert response.status_code == 200, response.text
        yield stack
    finally:
        stack.close()
        server.__exit__()
        stack.services.store.close()


@pytest.mark.parametrize("question", readme_questions())
def test_a_readme_question_gets_a_real_answer(samples: Stack, question: str) -> None:
    response = samples.http.post("/api/v1/rag/query", json={"question": question, "collection": COLLECTION})
    assert response.status_code == 200, response.text
    body = response.json()
    answer = body["answer"]
    assert not answer.startswith(("Not found", "I found nothing")), answer
    assert re.search(r"\[\d\]", answer), answer
    assert not re.search(r"(^|\n)\s*#{1,6} ", answer) and "##" not in answer, answer
    assert len(answer) < 1500, answer
    if "rotate" in question.lower():
        for step in ("ragkit secret", "INTER_SERVICE_SECRET=NEW,OLD", "Move the clients"):
            assert step in answer, answer

"""The long-document set: manual pages installed here, rendered, each a known-item query.

Runs on the real pages of this machine (groff renders them): the set is built from them, not
from a fixture, so what the evaluation reads is what these tests check.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragkit.core.errors import InvalidInput
from ragkit.workbench.evaluation import datasets, manpages


def page(name: str) -> Path:
    found = sorted(manpages.MAN_DIR.glob(f"{name}.1*"))
    assert found, f"no manual page for {name} in {manpages.MAN_DIR}"
    return found[0]


def test_a_page_renders_to_its_description_and_a_body_without_the_name_section() -> None:
    cp = manpages.render(page("cp"))
    assert cp is not None
    assert cp.name == "cp" and cp.description == "copy files and directories"
    assert cp.text.startswith("## Synopsis") and "## Description" in cp.text
    assert "copy files and directories" not in cp.text  # the query is not in the document verbatim
    assert "--archive" in cp.text and "User Commands" not in cp.text  # the running header is gone


def test_the_set_has_long_documents_with_distinct_searchable_descriptions(tmp_path: Path) -> None:
    folder = manpages.write_beir(manpages.long_pages(25), tmp_path / "set")
    corpus = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
    queries = [json.loads(line) for line in (folder / "queries.jsonl").read_text().splitlines()]
    assert len(corpus) == len(queries) == 25
    assert all(manpages.MIN_WORDS <= len(doc["text"].split()) <= manpages.MAX_WORDS for doc in corpus)
    descriptions = [q["text"].lower() for q in queries]
    assert len(set(descriptions)) == len(descriptions)
    data = datasets.load_beir(folder)  # the evaluation reads it as a BEIR set
    assert len(data.queries) == 25 and all(len(judged) == 1 for judged in data.qrels.values())


def test_the_set_is_built_on_first_use_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGKIT_DATA_DIR", str(tmp_path))
    whole = manpages.long_pages
    monkeypatch.setattr(manpages, "long_pages", lambda limit, man_dir: whole(30, man_dir))  # a smaller set, faster
    folder = datasets.resolve_dataset("manpages")
    assert folder == tmp_path / "datasets" / "manpages" and (folder / "qrels" / "test.tsv").is_file()
    built = (folder / "corpus.jsonl").stat().st_mtime_ns
    assert datasets.resolve_dataset("manpages") == folder and (folder / "corpus.jsonl").stat().st_mtime_ns == built


def test_too_few_pages_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "man1").mkdir()
    with pytest.raises(InvalidInput, match="too few"):
        manpages.build(tmp_path / "set", man_dir=tmp_path / "man1")

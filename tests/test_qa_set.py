"""The QA set: questions about the options of the manual pages installed here, each answered by the
option's description and found in its page.

Runs on the real pages of this machine, rendered by groff like the manpages set, so what the
answer evaluation asks is what these tests check.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ragkit.core.errors import InvalidInput
from ragkit.workbench.evaluation import manpages, qa
from tests.test_manpages import page


def rendered(name: str) -> manpages.ManPage:
    shown = manpages.render(page(name))
    assert shown is not None
    return shown


def flat(text: str) -> str:
    """The page as one line of words, groff's line-end hyphenation undone (as the builder reads it)."""
    return " ".join(re.sub("\u2010\n\\s*", "", text).split())


def test_options_are_read_with_their_descriptions_from_man_pages_in_every_layout() -> None:
    cp = {o.name: o.description for o in qa.page_options("cp", rendered("cp").text)}
    assert cp["--archive"] == "same as -dR --preserve=all"
    assert cp["--force"].startswith("if an existing destination file cannot be opened, remove it and try again")
    grep = {o.name: o.description for o in qa.page_options("grep", rendered("grep").text)}
    assert grep["--ignore-case"] == (
        "Ignore case distinctions in patterns and input data, so that characters that differ only in case match "
        "each other."
    )
    assert grep["--help"] == "Output a usage message and exit."  # a short tag on its text's line
    # mdoc (ssh: 6 columns, the tag sharing the first line) and DocBook (psql: 4 columns, a tag on two lines).
    ssh = {o.name: o.description for o in qa.page_options("ssh", rendered("ssh").text)}
    assert ssh["-g"].startswith("Allows remote hosts to connect to local forwarded ports.")
    psql = {o.name: o.description for o in qa.page_options("psql", rendered("psql").text)}
    assert psql["--command"].startswith("Specifies that psql is to execute the given command string")


def test_questions_name_the_option_and_the_page_and_are_answered_by_its_description() -> None:
    pages = {name: rendered(name).text for name in ("cp", "grep", "tar", "make", "ssh", "psql", "sed", "xxd")}
    items = qa.build_items(pages.items(), per_page=3)
    assert {item.doc_id for item in items} == set(pages)
    for item in items:
        assert item.question == f"What does the {item.option} option of {item.doc_id} do?"
        assert qa.MIN_ANSWER_WORDS <= len(item.answer.split()) <= qa.MAX_ANSWER_WORDS
        assert flat(item.answer) in flat(pages[item.doc_id]), item  # the page's own words
        options = {o.name: o.description for o in qa.page_options(item.doc_id, pages[item.doc_id])}
        assert options[item.option] == item.answer
    follow_ups = [item for item in items if item.follow_up is not None]
    assert len(follow_ups) >= len(pages) - 1
    for item in follow_ups:
        follow = item.follow_up
        assert follow is not None and follow.option != item.option
        assert follow.question == f"And what does {follow.option} do?"
        assert not qa.names_page(follow.question, item.doc_id), follow  # only the history says which command
        options = {o.name: o.description for o in qa.page_options(item.doc_id, pages[item.doc_id])}
        assert options[follow.option] == follow.answer
    # Deterministic: the same pages give the same questions, in any order.
    assert qa.build_items(reversed(list(pages.items())), per_page=3) == items


def test_the_qa_set_is_built_on_first_use_beside_the_manpages_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGKIT_DATA_DIR", str(tmp_path))
    whole = manpages.long_pages
    monkeypatch.setattr(manpages, "long_pages", lambda limit, man_dir: whole(30, man_dir))  # a smaller set, faster
    corpus, items = qa.load_manpages_qa()
    path = tmp_path / "datasets" / qa.QA_FILE
    assert corpus.root == tmp_path / "datasets" / "manpages" and path.is_file()
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(items) >= 20 and records[0]["question"] == items[0].question
    pages = {d["id"] for d in corpus.corpus()}
    assert {item.doc_id for item in items} <= pages  # the same ids as the corpus: one collection serves both
    assert len({item.id for item in items}) == len(items)
    assert qa.sample_items(items, 10) == qa.sample_items(items, 10) and len(qa.sample_items(items, 10)) == 10
    built = path.stat().st_mtime_ns
    assert qa.load_manpages_qa()[1] == items and path.stat().st_mtime_ns == built


def test_a_corpus_without_option_descriptions_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "corpus.jsonl").write_text('{"_id": "x", "title": "x", "text": "## Description\\n\\nNone."}\n')
    with pytest.raises(InvalidInput, match="too few"):
        qa.build(tmp_path / "set", tmp_path / "qa.jsonl")

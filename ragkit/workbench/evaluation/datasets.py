"""What an evaluation runs on: BEIR datasets, the seeded query and corpus samples, the sources the
ingestion notebook loads, and the paths that name them from any working directory."""

from __future__ import annotations

import csv
import json
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragkit.core.errors import InvalidInput
from ragkit.core.types import document_to_dict
from ragkit.workbench.evaluation import manpages

SAMPLE_SEED = 13
# ragkit/workbench/evaluation/ sits three folders below the checkout.
REPO_ROOT = Path(__file__).resolve().parents[3]
# Where DESIGN.md §5 keeps the shared datasets, relative to a source checkout.
SHARED_BEIR = REPO_ROOT.parent / "shared" / "data" / "beir"
MANPAGES = "manpages"  # built here: see manpages.py


@dataclass(frozen=True)
class BeirDataset:
    name: str
    root: Path
    queries: dict[str, str]  # only queries that have judgments
    qrels: dict[str, dict[str, int]]

    def corpus(self, only: set[str] | None = None) -> Iterator[dict[str, Any]]:
        """Corpus records as ingestible documents: {id, title, text, metadata}."""
        yield from read_beir_corpus(self.root / "corpus.jsonl", only)


def read_beir_corpus(path: Path, only: set[str] | None = None) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{path} line {number} is not JSON") from exc
            doc_id = str(record.get("_id", record.get("id", "")))
            if only is not None and doc_id not in only:
                continue
            yield {"id": doc_id, "title": record.get("title", "") or "", "text": record.get("text", ""), "metadata": {}}


# --------------------------------------------------------------------------- paths


def resolve_path(value: str | os.PathLike[str], *, kind: str) -> Path:
    """A path as given (relative to the working directory), else relative to the repository.

    Notebooks run with the notebook folder (nbval) or the caller's folder (papermill) as working
    directory; defaults such as ``samples/docs`` must mean the same thing in both.
    """
    path = Path(value).expanduser()
    if path.exists():
        return path
    if not path.is_absolute() and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    raise InvalidInput(f"{kind} '{value}' does not exist (looked in {Path.cwd()} and {REPO_ROOT})")


def built_datasets_dir() -> Path:
    """Where sets built on this machine are kept (under the data directory, never committed)."""
    return Path(os.environ.get("RAGKIT_DATA_DIR") or "data") / "datasets"


def resolve_dataset(value: str | os.PathLike[str]) -> Path:
    """A BEIR folder: a path, the bare name of a shared dataset (``scifact``, ``arguana``), or
    ``manpages``, the long-document set built from this machine's manual pages on first use."""
    text = str(value)
    if os.sep not in text and "/" not in text and not Path(text).exists() and (SHARED_BEIR / text).is_dir():
        return SHARED_BEIR / text
    if text == MANPAGES:
        folder = built_datasets_dir() / MANPAGES
        if not (folder / "qrels" / "test.tsv").is_file():
            manpages.build(folder)
        return folder
    path = resolve_path(value, kind="dataset")
    return path.parent if path.name == "corpus.jsonl" else path


def display_path(path: Path) -> str:
    """Relative to the repository when inside or beside it: no machine paths in shared reports."""
    try:
        return os.path.relpath(path.resolve(), REPO_ROOT)
    except ValueError:  # another drive on Windows
        return str(path)


# --------------------------------------------------------------------------- loading


def load_beir(root: Path | str, split: str = "test") -> BeirDataset:
    root = resolve_dataset(root)
    for needed in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (root / needed).is_file():
            raise InvalidInput(f"{root} is not a BEIR folder: {needed} is missing")
    qrels: dict[str, dict[str, int]] = {}
    with (root / "qrels" / f"{split}.tsv").open(encoding="utf-8") as rows:
        for row in csv.reader(rows, delimiter="\t"):
            if not row or row[0] == "query-id":
                continue
            qid, doc_id, score = row[0], row[1], int(row[2])
            if score > 0:
                qrels.setdefault(qid, {})[doc_id] = score
    queries: dict[str, str] = {}
    with (root / "queries.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                if str(record["_id"]) in qrels:
                    queries[str(record["_id"])] = record["text"]
    if not queries:
        raise InvalidInput(f"{root}: no query in queries.jsonl has a judgment in qrels/{split}.tsv")
    return BeirDataset(name=root.name, root=root, queries=queries, qrels=qrels)


def load_source(source: str | os.PathLike[str], limit: int | None = None) -> list[dict[str, Any]]:
    """Ingestible documents from a folder, a file or a BEIR corpus (its folder or corpus.jsonl)."""
    from ragkit.rag.loaders import load_path

    path = resolve_path(source, kind="source")
    beir_corpus = path / "corpus.jsonl" if path.is_dir() else path
    if beir_corpus.name == "corpus.jsonl" and beir_corpus.is_file():
        # Through the same reader as the evaluation, so both ingest byte-identical documents and a
        # collection filled by one is found unchanged by the other.
        records: Iterable[dict[str, Any]] = read_beir_corpus(beir_corpus)
    else:
        records = (document_to_dict(d) for d in load_path(path))
    documents = []
    for record in records:
        if limit is not None and len(documents) >= limit:
            break
        documents.append(record)
    return documents


# --------------------------------------------------------------------------- samples


def optional_count(value: object, name: str) -> int | None:
    """None (or 0) means "all"; otherwise a positive integer."""
    if isinstance(value, bool) or not (value is None or isinstance(value, int)) or (value or 0) < 0:
        raise InvalidInput(f"{name} must be a positive integer or None (all), got {value!r}")
    return value or None


def sample_queries(dataset: BeirDataset, max_queries: int | None, seed: int = SAMPLE_SEED) -> list[str]:
    """A fixed, seeded sample of query ids (all of them when max_queries is None)."""
    ids = sorted(dataset.queries)
    if max_queries is None or max_queries >= len(ids):
        return ids
    return sorted(random.Random(seed).sample(ids, max_queries))


def subset_corpus_ids(dataset: BeirDataset, query_ids: Iterable[str], size: int, seed: int = SAMPLE_SEED) -> set[str]:
    """About ``size`` documents for a quick run: the judged documents of the chosen queries
    (those that exist) topped up with seeded random others, so the queries have distractors."""
    corpus_ids = sorted(d["id"] for d in dataset.corpus())
    known = set(corpus_ids)
    wanted = {doc for q in query_ids for doc in dataset.qrels.get(q, {}) if doc in known}
    others = [d for d in corpus_ids if d not in wanted]
    extra = max(size - len(wanted), 0)
    return wanted | set(random.Random(seed).sample(others, min(extra, len(others))))


def choose_documents(dataset: BeirDataset, query_ids: Sequence[str], max_documents: int | None) -> set[str] | None:
    """The corpus subset to evaluate on: None (the whole corpus) or ``subset_corpus_ids``."""
    return None if max_documents is None else subset_corpus_ids(dataset, query_ids, max_documents)


def default_collection_name(
    dataset: BeirDataset, max_queries: int | None, max_documents: int | None, chunk_size: int | None = None
) -> str:
    """One collection per corpus selection and chunking, so a rerun finds its corpus already ingested."""
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in dataset.name).strip("-_") or "dataset"
    name = f"eval-{stem}"
    if max_documents is not None:
        name += f"-q{max_queries if max_queries is not None else 'all'}-d{max_documents}"
    if chunk_size is not None:
        name += f"-c{chunk_size}"
    return name[:63]

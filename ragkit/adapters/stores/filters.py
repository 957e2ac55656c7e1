"""A backend-neutral filter tree (``Match``/``AtLeast``/``Where``) that each store compiles to its
own library's classes, the filters every document operation uses, and the translation of the
caller's flat ``filters`` into the tree."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragkit.core.errors import InvalidInput
from ragkit.core.names import METADATA_KEY_RULE, is_metadata_key
from ragkit.core.types import (
    MAX_FILTER_INT,
    MAX_FILTER_KEYS,
    MAX_FILTER_VALUE_CHARS,
    MAX_FILTER_VALUES,
    MIN_FILTER_INT,
    IndexKind,
)

Scalar = str | int | bool


@dataclass(frozen=True)
class Match:
    """``key`` equals one of ``values``."""

    key: str
    values: tuple[Scalar, ...]

    @property
    def kind(self) -> IndexKind | None:
        """The payload index that serves this match; None for mixed value types."""
        if all(isinstance(v, bool) for v in self.values):
            return "bool"
        if all(isinstance(v, str) for v in self.values):
            return "keyword"
        if all(isinstance(v, int) and not isinstance(v, bool) for v in self.values):
            return "integer"
        return None


@dataclass(frozen=True)
class AtLeast:
    """``key`` >= ``value``."""

    key: str
    value: int


@dataclass(frozen=True)
class Where:
    must: tuple[Condition, ...] = ()
    should: tuple[Condition, ...] = ()
    must_not: tuple[Condition, ...] = ()


Condition = Match | AtLeast | Where


def doc_where(doc_id: str) -> Where:
    return Where(must=(Match("doc_id", (doc_id,)),))


def version_where(doc_id: str, content_hash: str) -> Where:
    return Where(must=(Match("doc_id", (doc_id,)), Match("content_hash", (content_hash,))))


def docs_where(doc_ids: Sequence[str]) -> Where:
    return Where(must=(Match("doc_id", tuple(doc_ids)),))


def heads_where(doc_ids: Sequence[str]) -> Where:
    """First chunks of these documents. The ingester writes chunk 0 first and point ids are
    per (document, chunk index), so chunk 0 always carries the newest version's hash and count."""
    return Where(must=(Match("doc_id", tuple(doc_ids)), Match("chunk_index", (0,))))


def first_chunks_where() -> Where:
    """Chunk 0 of every document: one point per document (see heads_where)."""
    return Where(must=(Match("chunk_index", (0,)),))


def stale_where(doc_id: str, keep_hash: str, keep_count: int) -> Where:
    return Where(
        must=(
            Match("doc_id", (doc_id,)),
            Where(
                should=(
                    Where(must_not=(Match("content_hash", (keep_hash,)),)),
                    AtLeast("chunk_index", keep_count),
                )
            ),
        )
    )


def _filter_values(key: str, value: object) -> tuple[Scalar, ...]:
    values = tuple(value) if isinstance(value, list | tuple) else (value,)
    if not values:
        raise InvalidInput(f"filter '{key}' has an empty list of values; give at least one", field=key)
    if len(values) > MAX_FILTER_VALUES:
        raise InvalidInput(
            f"filter '{key}' has {len(values)} values; at most {MAX_FILTER_VALUES} values per field "
            "(split the search, or filter on a coarser field)",
            field=key,
            limit=MAX_FILTER_VALUES,
        )
    for v in values:
        if not isinstance(v, str | int | bool):  # bool is an int; float, None and containers are refused
            raise InvalidInput(
                f"filter '{key}' has a value of type {type(v).__name__}; filters match strings, integers "
                "or booleans exactly (or a list of them for any-of)",
                field=key,
            )
        if isinstance(v, str) and len(v) > MAX_FILTER_VALUE_CHARS:
            raise InvalidInput(
                f"filter '{key}' has a value of {len(v)} characters; at most {MAX_FILTER_VALUE_CHARS}",
                field=key,
                limit=MAX_FILTER_VALUE_CHARS,
            )
        if isinstance(v, int) and not isinstance(v, bool) and not MIN_FILTER_INT <= v <= MAX_FILTER_INT:
            raise InvalidInput(
                f"filter '{key}' has the integer {v}, outside the 64-bit range the store holds "
                f"({MIN_FILTER_INT} to {MAX_FILTER_INT}); no stored value can equal it",
                field=key,
            )
    return values


def translate_filters(filters: Mapping[str, Any] | None) -> Where | None:
    """``{field: value | [values]}`` → all of (field equals value / any of values).

    ``doc_id`` is the top-level payload field; any other key is read from ``metadata.<key>``.
    This is the one place a caller's filters are checked, whichever entry point they came through:
    the caps keep the work of one read bounded.
    """
    if not filters:
        return None
    if not isinstance(filters, Mapping):
        raise InvalidInput("filters must be an object of field: value")
    if len(filters) > MAX_FILTER_KEYS:
        raise InvalidInput(
            f"{len(filters)} filter fields given; at most {MAX_FILTER_KEYS} per search (filter on the "
            "fields that narrow the results most)",
            limit=MAX_FILTER_KEYS,
        )
    matches = []
    for key, value in filters.items():
        if not is_metadata_key(key):
            raise InvalidInput(
                f"invalid filter field {key!r}: use {METADATA_KEY_RULE} (metadata keys only)", field=str(key)
            )
        path = "doc_id" if key == "doc_id" else f"metadata.{key}"
        matches.append(Match(path, _filter_values(key, value)))
    return Where(must=tuple(matches))


def unindexed_fields(where: Where | None, indexed: set[str]) -> list[str]:
    """The fields of a caller's filter (``translate_filters``) that no payload index serves."""
    if where is None:
        return []
    return [c.key.removeprefix("metadata.") for c in where.must if isinstance(c, Match) and c.key not in indexed]

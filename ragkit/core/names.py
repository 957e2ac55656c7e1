"""Names and ids every layer agrees on: the collection-name rule and the deterministic point id."""

from __future__ import annotations

import re
import uuid

from ragkit.core.errors import InvalidInput

# fullmatch, not match with "$": "$" also matches before a final newline ("good\n").
COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
COLLECTION_NAME_RULE = "1-63 letters, digits, '_' or '-', starting with a letter or digit"
_POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "ragkit:point")


def is_collection_name(name: object) -> bool:
    return isinstance(name, str) and COLLECTION_NAME.fullmatch(name) is not None


def validate_collection_name(name: object) -> str:
    if not is_collection_name(name):
        raise InvalidInput(f"invalid collection name {name!r}: use {COLLECTION_NAME_RULE}", collection=str(name))
    return name  # type: ignore[return-value]


def point_id(collection: str, doc_id: str, chunk_index: int) -> str:
    """The id of a chunk's point: stable across re-ingestion, so a rewrite overwrites in place.

    The collection name cannot contain '/' and the chunk index is last, so the key is unambiguous
    even when the document id contains '/'.
    """
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{collection}/{doc_id}/{chunk_index}"))

"""Names and ids every layer agrees on: the collection-name rule, the metadata-key rule (filters and
indexed fields), and the deterministic point id."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping

from ragkit.core.errors import InvalidInput
from ragkit.core.types import INDEX_KINDS, MAX_INDEXED_FIELDS, IndexKind

# fullmatch, not match with "$": "$" also matches before a final newline ("good\n").
COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
COLLECTION_NAME_RULE = "1-63 letters, digits, '_' or '-', starting with a letter or digit"
# The same rules as JSON Schema patterns (the OpenAPI document), where "$" means the end of the text.
COLLECTION_NAME_PATTERN = f"^{COLLECTION_NAME.pattern}$"
# One flat level of metadata: dots would address nested paths and brackets arrays.
METADATA_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
METADATA_KEY_RULE = "1-64 letters, digits, '_' or '-'"
METADATA_KEY_PATTERN = f"^{METADATA_KEY.pattern}$"
_POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "ragkit:point")


def is_collection_name(name: object) -> bool:
    return isinstance(name, str) and COLLECTION_NAME.fullmatch(name) is not None


def validate_collection_name(name: object) -> str:
    if not is_collection_name(name):
        raise InvalidInput(f"invalid collection name {name!r}: use {COLLECTION_NAME_RULE}", collection=str(name))
    return name  # type: ignore[return-value]


def is_metadata_key(key: object) -> bool:
    return isinstance(key, str) and METADATA_KEY.fullmatch(key) is not None


def validate_indexed_fields(fields: object) -> dict[str, IndexKind]:
    """The payload indexes a collection declares: ``{metadata key: "keyword"|"integer"|"bool"}``."""
    if fields is None:
        return {}
    if not isinstance(fields, Mapping):
        raise InvalidInput('indexed_fields must be an object of field: "keyword", "integer" or "bool"')
    if len(fields) > MAX_INDEXED_FIELDS:
        raise InvalidInput(
            f"{len(fields)} indexed fields declared; at most {MAX_INDEXED_FIELDS} (index the fields searches "
            "filter on most; the others can still be filtered on, without an index)",
            limit=MAX_INDEXED_FIELDS,
        )
    checked: dict[str, IndexKind] = {}
    for key, kind in fields.items():
        if not is_metadata_key(key):
            raise InvalidInput(f"invalid indexed field {key!r}: use {METADATA_KEY_RULE} (metadata keys only)")
        if key == "doc_id":
            raise InvalidInput("doc_id is always indexed; declare metadata fields only", field=key)
        if kind not in INDEX_KINDS:
            raise InvalidInput(
                f"indexed field '{key}' has the type {kind!r}; use one of {', '.join(INDEX_KINDS)}", field=key
            )
        checked[key] = kind
    return dict(sorted(checked.items()))


def point_id(collection: str, doc_id: str, chunk_index: int) -> str:
    """The id of a chunk's point: stable across re-ingestion, so a rewrite overwrites in place.

    The collection name cannot contain '/' and the chunk index is last, so the key is unambiguous
    even when the document id contains '/'.
    """
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{collection}/{doc_id}/{chunk_index}"))

"""Does an existing Weaviate collection fit the store? Its configuration, read through
weaviate-client's config API (``collection.config.get()``), against what the store needs.

A collection of the configured name that another tool (or a hand-made schema) created is
used only when it has what the store writes, searches and filters on: otherwise searches
fail later with errors from deep in the client, or silently match nothing (a ``meta``
tokenized by word matches a filter's words, not its whole term). Extras (more properties,
more named vectors, another BM25 tuning, a quantizer, replication) are fine.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._requests import SEARCHED, STORED, VECTOR_NAME

__all__ = ["WeaviateCollectionMismatch", "check_collection", "collection_mismatches"]


class WeaviateCollectionMismatch(ValueError):
    """The collection the store is configured with exists, but its configuration lacks
    what the store needs (a property, its type, tokenization or index; the self-provided
    named vector ``default``; no multi-tenancy). Raised on open, before any write; the
    message names the collection, each difference and what to do."""


@attrs.frozen
class _Need:
    """What the store needs of one property."""

    data_type: str  # DataType's value: "text" or "text[]"
    why: str
    searchable: bool = False
    filterable: bool = False
    field: bool | None = None  # True: field tokenization; False: not field; None: any


_PROPERTIES: dict[str, _Need] = {
    "doc_id": _Need("text", "the document id"),
    **{name: _Need("text", "BM25 searches it", searchable=True, field=False)
       for name in SEARCHED},
    STORED: _Need("text", "hits are rebuilt from it"),
    "meta": _Need("text[]", "metadata filters match its whole terms", filterable=True,
                  field=True),
    "meta_keys": _Need("text[]", "null filters match its whole terms", filterable=True,
                       field=True),
}


def _value(enum_or_str: Any) -> str:
    return str(getattr(enum_or_str, "value", enum_or_str))


def _property_mismatches(name: str, need: _Need, prop: Any) -> list[str]:
    if prop is None:
        return [f"it has no property {name!r} ({need.data_type}; {need.why})"]
    found: list[str] = []
    data_type = _value(prop.data_type)
    if data_type != need.data_type:
        return [f"property {name!r} is {data_type}, not {need.data_type} ({need.why})"]
    if need.searchable and not prop.index_searchable:
        found.append(f"property {name!r} is not searchable (index_searchable=False; "
                     f"{need.why})")
    if need.filterable and not prop.index_filterable:
        found.append(f"property {name!r} is not filterable (index_filterable=False; "
                     f"{need.why})")
    tokenization = _value(prop.tokenization) if prop.tokenization is not None else "word"
    if need.field is True and tokenization != "field":
        found.append(f"property {name!r} is tokenized {tokenization!r}, not 'field' "
                     f"({need.why})")
    elif need.field is False and tokenization == "field":
        found.append(f"property {name!r} is tokenized 'field' (one term per value: BM25 "
                     f"would match only a whole {name}); it needs a word tokenization")
    analyzer = getattr(prop, "text_analyzer", None)
    if need.field and analyzer is not None and getattr(analyzer, "ascii_fold", False):
        found.append(f"property {name!r} folds accents (ascii_fold; filters compare "
                     f"values exactly)")
    return found


def _vector_mismatches(config: Any) -> list[str]:
    vectors = config.vector_config or {}
    named = vectors.get(VECTOR_NAME)
    if named is None:
        if vectors:
            others = ", ".join(repr(name) for name in sorted(vectors))
            return [f"it has no named vector {VECTOR_NAME!r} (its named vectors: {others})"]
        if config.vectorizer is not None or getattr(config, "vector_index_config", None):
            return [f"it has a legacy unnamed vector, not the named vector {VECTOR_NAME!r}"]
        return [f"it has no named vector {VECTOR_NAME!r}"]
    found: list[str] = []
    vectorizer = _value(named.vectorizer.vectorizer)
    if vectorizer != "none":
        found.append(f"its vector {VECTOR_NAME!r} is made by the vectorizer {vectorizer!r}; "
                     f"the store writes the pipeline embedder's vectors (self-provided, "
                     f"no vectorizer)")
    index = named.vector_index_config
    if _value(index.vector_index_type()) == "none":
        found.append(f"the index of its vector {VECTOR_NAME!r} was dropped (it cannot be "
                     f"searched)")
        return found
    distance = getattr(index, "distance_metric", None)
    if distance is not None and _value(distance) != "cosine":
        found.append(f"its vector {VECTOR_NAME!r} uses the distance {_value(distance)!r}, "
                     f"not 'cosine' (vector hits score 1 - cosine distance)")
    multi = getattr(index, "multi_vector", None) or getattr(
        getattr(index, "hnsw", None), "multi_vector", None)
    if multi is not None:
        found.append(f"its vector {VECTOR_NAME!r} is a multi-vector (the store writes one "
                     f"vector per document)")
    return found


def collection_mismatches(config: Any) -> list[str]:
    """What an existing collection's configuration (a ``CollectionConfig`` of
    ``collection.config.get()``) lacks for the store, one phrase each; empty: it fits."""
    found: list[str] = []
    tenancy = getattr(config, "multi_tenancy_config", None)
    if tenancy is not None and tenancy.enabled:
        found.append("it has multi-tenancy enabled (the store names no tenant)")
    properties = {prop.name: prop for prop in config.properties}
    references = {ref.name for ref in getattr(config, "references", None) or []}
    for name, need in _PROPERTIES.items():
        if properties.get(name) is None and name in references:
            found.append(f"property {name!r} is a cross-reference, not {need.data_type}")
            continue
        found.extend(_property_mismatches(name, need, properties.get(name)))
    found.extend(_vector_mismatches(config))
    return found


def check_collection(config: Any, name: str) -> None:
    """Refuse an existing collection that does not fit the store (see
    :func:`collection_mismatches`).

    :raises WeaviateCollectionMismatch: naming the collection, each difference, and what
        to do: another ``collection`` name, or delete the collection.
    """
    found = collection_mismatches(config)
    if found:
        raise WeaviateCollectionMismatch(
            f"the Weaviate collection {name} exists but does not fit the weaviate "
            f"component (was it made by another tool?): " + "; ".join(found) + ". "
            f"Nothing was written. Set the component's `collection` option to a new name "
            f"(created on open as the component needs it), or delete the collection {name} "
            f"(client.collections.delete({name!r}): its objects are lost) to have it "
            f"recreated")

"""The Weaviate collection omnibind writes to: how it is created, and how an existing one is
checked against it.

Created with one named vector ("default": no vectorizer, HNSW, cosine) and every record
property declared explicitly (`shared.vectors.properties`), so that nothing is left to
Weaviate's auto-schema. An existing collection is accepted when what omnibind relies on
matches: that one self-provided cosine vector, each property's data type, whole-value
(``field``) tokenisation and a filter index on the properties omnibind filters on, and no
multi-tenancy. The index type and its tuning, descriptions and properties of its own are the
operator's business. Properties omnibind declares that the collection lacks (added to the
schema after the collection was created) are added, not refused: Weaviate adds properties to
a live collection, and existing objects read them as unset.

A record's extra vectors (`VectorRecord.parts`) are further named vectors ``part_<name>``,
made like "default", added to the live collection when the first record with that part is
written (Weaviate 1.31 and later add named vectors to an existing collection).
"""

from __future__ import annotations

from typing import Any

from weaviate.classes.config import (
    Configure,
    DataType,
    Property,
    Tokenization,
    VectorDistances,
    Vectorizers,
)
from weaviate.collections.classes.config import CollectionConfig

from shared.vectors.properties import PROPERTIES, Kind

VECTOR_NAME = "default"
# The named vector of the record part `name` is PART_PREFIX + name.
PART_PREFIX = "part_"

_DATA_TYPES: dict[Kind, DataType] = {
    Kind.TEXT: DataType.TEXT,
    Kind.TEXT_LIST: DataType.TEXT_ARRAY,
    Kind.INT: DataType.INT,
    Kind.BOOL: DataType.BOOL,
    Kind.DATE: DataType.DATE,
    Kind.JSON: DataType.TEXT,
}


def collection_properties() -> list[Property]:
    """Explicit Weaviate properties for `PROPERTIES` (nothing left to auto-schema)."""
    properties = []
    for spec in PROPERTIES:
        data_type = _DATA_TYPES[spec.kind]
        text = data_type in (DataType.TEXT, DataType.TEXT_ARRAY)
        properties.append(
            Property(
                name=spec.name,
                data_type=data_type,
                description=spec.description or None,
                index_filterable=spec.filterable,
                # Exact-match filters only; no BM25 (that would need an index we don't use).
                index_searchable=False if text else None,
                tokenization=Tokenization.FIELD if text and spec.filterable else None,
            )
        )
    return properties


def vector_config(name: str) -> Any:
    """One self-provided named vector with an HNSW index and cosine distance."""
    return Configure.Vectors.self_provided(
        name=name,
        vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE),
    )


def part_vectors(config: CollectionConfig) -> frozenset[str]:
    """The part names the collection of `config` has named vectors for."""
    names = config.vector_config or {}
    return frozenset(name.removeprefix(PART_PREFIX) for name in names if name.startswith(PART_PREFIX))


def collection_config(name: str) -> dict[str, Any]:
    """Keyword arguments for ``client.collections.create``: self-provided vectors, HNSW, cosine."""
    return {
        "name": name,
        "description": "omnibind: one ImageBind embedding per upload (vectors provided by omnibind)",
        "properties": collection_properties(),
        "vector_config": vector_config(VECTOR_NAME),
    }


def schema_differences(config: CollectionConfig) -> list[str]:
    """What in an existing collection's `config` omnibind cannot work with (empty: fine).

    Properties it lacks are not differences (see `missing_properties`)."""
    differences = _vector_differences(config)
    if config.multi_tenancy_config.enabled:
        differences.append("it has multi-tenancy enabled (omnibind keeps tenants in the 'tenant' property)")
    declared = {prop.name: prop for prop in config.properties}
    for wanted in collection_properties():
        got = declared.get(wanted.name)
        if got is not None:
            differences.extend(_property_differences(wanted, got.data_type, got.tokenization, got.index_filterable))
    return differences


def missing_properties(config: CollectionConfig) -> list[Property]:
    """The properties omnibind declares that the collection of `config` does not have."""
    declared = {prop.name for prop in config.properties}
    return [prop for prop in collection_properties() if prop.name not in declared]


def _vector_differences(config: CollectionConfig) -> list[str]:
    if config.vectorizer is not None or config.vector_index_config is not None:
        # A collection-level ("legacy") vector: writes by name would not reach it.
        return [f"it has an unnamed (legacy, collection-level) vector; omnibind needs one named vector '{VECTOR_NAME}'"]
    names = sorted(config.vector_config or {})
    if VECTOR_NAME not in names or any(name != VECTOR_NAME and not name.startswith(PART_PREFIX) for name in names):
        found = ", ".join(f"'{name}'" for name in names) or "none"
        return [
            f"its named vectors are {found}; omnibind needs '{VECTOR_NAME}' and, for the extra vectors of "
            f"records, '{PART_PREFIX}<name>' ones only"
        ]
    assert config.vector_config is not None
    differences = []
    for name in names:
        named = config.vector_config[name]
        vectorizer = _text(named.vectorizer.vectorizer)
        if vectorizer != Vectorizers.NONE.value:
            differences.append(f"vector '{name}' is made by {vectorizer}; omnibind provides its own vectors (none)")
        # No distance where the vector has no index at all (index type "none").
        distance = _text(getattr(named.vector_index_config, "distance_metric", None))
        if distance != VectorDistances.COSINE.value:
            # Search scores are 1 - cosine distance; another metric would rank and score differently.
            differences.append(f"vector '{name}' uses distance {distance}; omnibind needs cosine")
    return differences


def _property_differences(
    wanted: Property, data_type: Any, tokenization: Any, index_filterable: bool | None
) -> list[str]:
    name = wanted.name
    if _text(data_type) != _text(wanted.dataType):
        return [f"property '{name}' is {_text(data_type)}; omnibind needs {_text(wanted.dataType)}"]
    differences = []
    if wanted.tokenization is not None and _text(tokenization) != _text(wanted.tokenization):
        # Word tokenisation would let tenant == "acme" match "acme corp".
        differences.append(
            f"property '{name}' has tokenization {_text(tokenization)}; omnibind needs {_text(wanted.tokenization)}"
        )
    if wanted.indexFilterable and index_filterable is False:
        differences.append(f"property '{name}' has no filter index; omnibind filters on it")
    return differences


def _text(value: Any) -> str | None:
    """An enum member (or a plain string) as the string Weaviate uses."""
    return None if value is None else str(getattr(value, "value", value))

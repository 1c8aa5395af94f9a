"""The LanceDB table's row format: its schema, records to and from Arrow, search filters as
LanceDB expressions, and what its vector indexes need of the cache. Pure transforms; the
store (`shared.vectors.lancedb`) does the I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from shared.vectors.properties import PROPERTIES, Kind, properties_to_record, record_to_properties
from shared.vectors.records import SearchFilters, VectorRecord

if TYPE_CHECKING:
    from lancedb.expr import Expr

VECTOR_COLUMN = "vector"
KEY_COLUMN = "upload_id"
# Every search and count filters by tenant (`SearchFilters.scope`): a BTREE index on it
# from the table's creation on (`optimize` adds later rows to it).
TENANT_COLUMN = "tenant"
TENANT_INDEX = "tenant_idx"
DISTANCE_COLUMN = "_distance"
# Column of the extra vector `name` of a record: PART_PREFIX + name.
PART_PREFIX = "part_"

_ARROW_TYPES: dict[Kind, pa.DataType] = {
    Kind.TEXT: pa.string(),
    Kind.TEXT_LIST: pa.list_(pa.string()),
    Kind.INT: pa.int64(),
    Kind.BOOL: pa.bool_(),
    Kind.DATE: pa.timestamp("us", tz="UTC"),
    Kind.JSON: pa.string(),
}


def arrow_schema(dim: int, parts: Sequence[str] = ()) -> pa.Schema:
    """The table schema: the key, the vector (fixed-size float32 list), `PROPERTIES` and a
    nullable vector column per part name in `parts`."""
    fields = [
        pa.field(KEY_COLUMN, pa.string(), nullable=False),
        pa.field(VECTOR_COLUMN, pa.list_(pa.float32(), dim), nullable=False),
    ]
    fields += [pa.field(spec.name, _ARROW_TYPES[spec.kind]) for spec in PROPERTIES if spec.name != KEY_COLUMN]
    fields += [part_field(name, dim) for name in parts]
    return pa.schema(fields)


def part_field(name: str, dim: int) -> pa.Field:
    """The nullable column of the extra vector `name` (null where a record has no such part)."""
    return pa.field(PART_PREFIX + name, pa.list_(pa.float32(), dim))


def records_to_arrow(records: Sequence[VectorRecord], dim: int, parts: Sequence[str] = ()) -> pa.Table:
    """`records` (all of dimension `dim`) as an Arrow table of `arrow_schema(dim, parts)`;
    `parts` names every part column of the table (a record without that part writes null)."""
    schema = arrow_schema(dim, parts)
    rows = [record_to_properties(record) for record in records]
    flat = np.concatenate([np.asarray(record.vector, dtype=np.float32).reshape(dim) for record in records])
    columns: dict[str, pa.Array] = {}
    for field in schema:
        if field.name == VECTOR_COLUMN:
            # (n*dim,) float32 -> n fixed-size lists of dim
            columns[field.name] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
        elif field.name.startswith(PART_PREFIX):
            name = field.name.removeprefix(PART_PREFIX)
            values = [record.parts.get(name) for record in records]
            columns[field.name] = pa.array(
                [None if value is None else np.asarray(value, dtype=np.float32).reshape(dim) for value in values],
                type=field.type,
            )
        else:
            columns[field.name] = pa.array([row[field.name] for row in rows], type=field.type)
    return pa.table(columns, schema=schema)


def arrow_to_records(table: pa.Table) -> list[VectorRecord]:
    """Rows of an Arrow table (as read back from the store) as `VectorRecord`s."""
    if table.num_rows == 0:
        return []
    vectors = _vectors(table.column(VECTOR_COLUMN))
    part_columns = [name for name in table.column_names if name.startswith(PART_PREFIX)]
    parts = {name.removeprefix(PART_PREFIX): table.column(name).to_pylist() for name in part_columns}
    names = [
        name
        for name in table.column_names
        if name not in (VECTOR_COLUMN, DISTANCE_COLUMN) and not name.startswith(PART_PREFIX)
    ]
    rows = table.select(names).to_pylist()
    return [
        properties_to_record(row, vector, {name: values[i] for name, values in parts.items() if values[i] is not None})
        for i, (row, vector) in enumerate(zip(rows, vectors, strict=True))
    ]


def part_names(schema: pa.Schema) -> list[str]:
    """The part names a table of `schema` has columns for, sorted."""
    return sorted(name.removeprefix(PART_PREFIX) for name in schema.names if name.startswith(PART_PREFIX))


def filter_expr(filters: SearchFilters) -> Expr | None:
    """`filters` as a LanceDB expression (values travel as typed literals, never as SQL text);
    None only for `ALL_TENANTS` without other filters."""
    from lancedb.expr import col, lit

    terms: list[Expr] = []
    scoped = filters.scoped_tenants
    if scoped is not None:  # sorted: the same scope gives the same SQL (and plan) every time
        terms.append(col(TENANT_COLUMN).isin(sorted(scoped)))
    if filters.modality is not None:
        terms.append(col("modality") == lit(str(filters.modality.value)))
    if filters.flagged is not None:
        terms.append(col("flagged") == lit(bool(filters.flagged)))
    if not terms:
        return None
    expr = terms[0]
    for term in terms[1:]:
        expr = expr & term
    return expr


def index_cache_needed_mb(rows: int, dim: int, vector_columns: int) -> int:
    """The index cache that holds a table's IVF_FLAT indexes whole: they keep every vector
    (float32) of each indexed column, plus a quarter for partition metadata and the scalar
    indexes. Smaller caches reload the probed partitions on every search."""
    return math.ceil(rows * dim * 4 * vector_columns * 1.25 / 2**20)


def _vectors(column: pa.ChunkedArray) -> np.ndarray:
    """A fixed-size-list column as an (n, dim) float32 array."""
    combined = column.combine_chunks()
    dim = combined.type.list_size
    # (n*dim,) -> (n, dim)
    return np.asarray(combined.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)

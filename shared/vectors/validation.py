"""Checks every vector store adapter applies before it writes or searches (pure)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared.errors import ConfigError, PermanentError
from shared.vectors.records import VectorRecord, check_part_name


def unique_by_upload_id(records: Sequence[VectorRecord]) -> list[VectorRecord]:
    """`records` with one record per upload id: the last one given wins (as if written in order)."""
    latest: dict[str, VectorRecord] = {}
    for record in records:
        if not record.upload_id:
            raise PermanentError("a vector record needs a non-empty upload_id", reason="invalid_record")
        latest.pop(record.upload_id, None)  # re-insert so the dict keeps last-write order
        latest[record.upload_id] = record
    return list(latest.values())


def records_dimension(records: Sequence[VectorRecord], expected: int | None, *, store: str, hint: str) -> int:
    """The common dimension of `records` (non-empty) and of their parts, checked against the store's.

    Raises `PermanentError` (reason ``invalid_vector``) for a vector that is not a finite,
    non-zero 1-D array or for records that disagree among themselves, (``invalid_record``)
    for a part name `check_part_name` refuses, and `ConfigError` when they disagree with
    `expected` (the store's dimension).
    """
    dims = {_check_vector(record.vector, record.upload_id) for record in records}
    for record in records:
        for name, vector in record.parts.items():
            try:
                check_part_name(name)
            except ValueError as exc:
                raise PermanentError(f"record {record.upload_id!r}: {exc}", reason="invalid_record") from exc
            dims.add(_check_vector(vector, f"{record.upload_id}/{name}"))
    if len(dims) > 1:
        raise PermanentError(
            f"vector records (and their parts) of one write have different dimensions {sorted(dims)}",
            reason="invalid_vector",
        )
    (dim,) = dims
    if expected is not None and dim != expected:
        raise dimension_mismatch(dim, expected, store=store, hint=hint)
    return dim


def query_vector(vector: np.ndarray, expected: int | None, *, store: str, hint: str) -> np.ndarray:
    """`vector` as a contiguous float32 1-D array; `ConfigError` if its dimension is not the store's."""
    dim = _check_vector(vector, "<query>")
    if expected is not None and dim != expected:
        raise dimension_mismatch(dim, expected, store=store, hint=hint)
    return np.ascontiguousarray(vector, dtype=np.float32)


def dimension_mismatch(got: int, expected: int, *, store: str, hint: str) -> ConfigError:
    return ConfigError(
        f"vector dimension {got} does not match the dimension {expected} of {store}; vectors of "
        f"different models cannot share one store: {hint}"
    )


def _check_vector(vector: np.ndarray, upload_id: str) -> int:
    array = np.asarray(vector)
    if array.ndim != 1 or array.size == 0:
        raise PermanentError(
            f"vector of {upload_id!r} must be 1-D and non-empty, got shape {array.shape}", reason="invalid_vector"
        )
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        raise PermanentError(f"vector of {upload_id!r} has dtype {array.dtype}", reason="invalid_vector")
    if not np.all(np.isfinite(array)):
        raise PermanentError(f"vector of {upload_id!r} contains NaN or infinity", reason="invalid_vector")
    if not np.any(array):
        # Cosine similarity is undefined for the zero vector.
        raise PermanentError(f"vector of {upload_id!r} is all zeros", reason="invalid_vector")
    return int(array.shape[0])

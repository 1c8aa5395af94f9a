"""Compact binary form of arrays inside task messages (msgpack carries the bytes as-is).

A 3×224×224 uint8 image travels as 150 KB of raw bytes instead of ~600 KB of JSON floats.
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np

# uint16: video clips in fixed point (shared.imagebind.video)
_ALLOWED_DTYPES = frozenset({"uint8", "uint16", "int32", "int64", "float16", "float32"})


class PackedArray(TypedDict):
    dtype: str
    shape: list[int]
    data: bytes


def pack_array(array: np.ndarray) -> PackedArray:
    dtype = str(array.dtype)
    if dtype not in _ALLOWED_DTYPES:
        raise ValueError(f"dtype {dtype} is not allowed on the wire")
    contiguous = np.ascontiguousarray(array)
    return {"dtype": dtype, "shape": list(contiguous.shape), "data": contiguous.tobytes()}


def unpack_array(packed: PackedArray | dict[str, Any]) -> np.ndarray:
    """Rebuild an array (read-only view over the message bytes; copy before mutating)."""
    dtype = packed["dtype"]
    if dtype not in _ALLOWED_DTYPES:
        raise ValueError(f"dtype {dtype} is not allowed on the wire")
    shape = tuple(int(n) for n in packed["shape"])
    array = np.frombuffer(packed["data"], dtype=dtype)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"array payload holds {array.size} values, shape {shape} needs {int(np.prod(shape))}")
    return array.reshape(shape)

"""Float32 arrays as text (base64 of the raw little-endian bytes) for Redis values read by a
client with ``decode_responses=True``."""

from __future__ import annotations

import base64

import numpy as np


def encode_vectors(matrix: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(matrix, dtype="<f4").tobytes()).decode("ascii")


def decode_vectors(text: str, dim: int) -> np.ndarray:
    """(n, dim) float32 from `encode_vectors` output; raises `ValueError` on a size mismatch."""
    flat = np.frombuffer(base64.b64decode(text), dtype="<f4")
    if dim <= 0 or flat.size % dim:
        raise ValueError(f"{flat.size} values do not form rows of {dim}")
    return flat.reshape(-1, dim).astype(np.float32)


def decode_vector(text: str) -> np.ndarray:
    """One (dim,) float32 vector from `encode_vectors` output of a single row."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)

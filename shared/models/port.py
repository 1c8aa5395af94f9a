"""The model port: what a gpu worker needs from an embedding backend (torch-free to import).

`shared.imagebind.embed.Embedder` (adapted by `shared.models.imagebind.ImageBindBackend`)
and `shared.models.perception.PerceptionBackend` implement it; `shared.models.loader.
load_backend` picks one from ``OMNIBIND_MODEL__NAME``. What differs between families is
said here, by the backend, not by branches in the workers:

- `head_for_upload(modality)` / `heads_for_query(modality)`: which output head embeds an
  upload, and which vector(s) a query needs per target modality (ImageBind: one space, one
  vector; PE-AV: a text query has a text-audio and a text-video vector);
- `batch_group(modality, head, array)`: which items may share a forward (same shapes);
- `prepare` / `forward` / `finish`: the three stages the micro-batcher pipelines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from shared.events import Modality

DEFAULT_HEAD = ""  # the one head of a single-space family


@runtime_checkable
class EmbeddingBackend(Protocol):
    model_name: str  # stored on every record ("imagebind-huge", "pe-av-base", "...-tiny-random")
    checkpoint_sha256: str  # the fingerprint stored on every record
    device: Any  # torch.device
    compute_dtype: Any  # torch.dtype
    modalities: frozenset[Modality]

    @property
    def out_dim(self) -> int: ...

    def head_for_upload(self, modality: Modality) -> str:
        """The head that embeds an upload of `modality` (one vector per upload)."""
        ...

    def heads_for_query(self, modality: Modality) -> Mapping[Modality, str]:
        """{target modality: head} for a query of `modality`; one entry per modality a record
        can have. Equal heads mean one vector serves those targets."""
        ...

    def batch_group(self, modality: Modality, head: str, array: np.ndarray) -> int:
        """Items of one (modality, head, group) can be stacked into one forward."""
        ...

    def prepare(self, modality: Modality, inputs: Any, head: str = DEFAULT_HEAD) -> Any:
        """Validate CPU inputs of one modality and put them on the device. Raises
        `PermanentError(reason="invalid_model_input")` for bad input."""
        ...

    def forward(self, prepared: Any) -> Any:
        """Run the model -> (B, out_dim) on the device."""
        ...

    def finish(self, output: Any) -> Sequence[np.ndarray] | np.ndarray:
        """(B, out_dim) -> float32 numpy rows of unit L2 norm."""
        ...

"""ImageBind behind the model port: `shared.imagebind.embed.Embedder` plus what the port
asks that the Embedder does not say itself (one space: one head; text batches grouped by
their EOT position)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from shared.config import ModelSettings
from shared.events import Modality
from shared.imagebind.constants import TEXT_EOT_TOKEN
from shared.imagebind.embed import EMBEDDABLE, Embedder, Prepared
from shared.models.port import DEFAULT_HEAD

TEXT_BUCKET = 8  # a text batch is cut after its longest text: group by EOT position, rounded up


class ImageBindBackend:
    """Delegates to an `Embedder`; `embedder` is the wrapped one."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.model_name = embedder.model_name
        self.checkpoint_sha256 = embedder.checkpoint_sha256
        self.device = embedder.device
        self.compute_dtype = embedder.compute_dtype
        self.modalities = embedder.modalities

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> ImageBindBackend:
        return cls(Embedder.from_settings(settings))

    @property
    def out_dim(self) -> int:
        return self.embedder.out_dim

    def head_for_upload(self, modality: Modality) -> str:
        return DEFAULT_HEAD

    def heads_for_query(self, modality: Modality) -> Mapping[Modality, str]:
        return dict.fromkeys(EMBEDDABLE, DEFAULT_HEAD)

    def batch_group(self, modality: Modality, head: str, array: np.ndarray) -> int:
        if modality is Modality.TEXT:
            hits = np.flatnonzero(array == TEXT_EOT_TOKEN)
            length = int(hits[0]) + 1 if hits.size else int(array.shape[-1])
            return -(-length // TEXT_BUCKET) * TEXT_BUCKET
        if modality is Modality.AUDIO:
            return int(array.shape[0])  # clips per item
        return 0

    def prepare(self, modality: Modality, inputs: Any, head: str = DEFAULT_HEAD) -> Prepared:
        return self.embedder.prepare(modality, inputs)

    def forward(self, prepared: Prepared) -> torch.Tensor:
        return self.embedder.forward(prepared)

    def finish(self, output: torch.Tensor) -> np.ndarray:
        return self.embedder.finish(output)

"""GpuRunner on CUDA out-of-memory: a batch that does not fit is split in halves before any
task sees an error, the cap shrinks, and it grows back after `GROW_AFTER_BATCHES` batches
run at the cap. torch.cuda.OutOfMemoryError is raised by a forward that takes more than a
given batch size (the real tiny model on the CPU runs the rest)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from shared.config import GpuSettings, ModelSettings
from shared.events import Modality
from shared.imagebind.embed import Embedder, Prepared
from shared.imagebind.text import tokenize
from tests.shared.imagebind.model_support import TINY_STATE_DICT
from workers.gpu import GROW_AFTER_BATCHES, EmbedItem, GpuRunner


class OutOfMemoryAbove:
    """An embedder's forward that runs out of CUDA memory for batches above `fits` items."""

    def __init__(self, embedder: Embedder, fits: int) -> None:
        self.forward = embedder.forward
        self.fits = fits
        self.sizes: list[int] = []

    def __call__(self, prepared: Prepared) -> torch.Tensor:
        size = prepared.batch_size
        self.sizes.append(size)
        if size > self.fits:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory: a batch of {size}")
        return self.forward(prepared)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    settings = ModelSettings(name="tiny", checkpoint=TINY_STATE_DICT, cache_dir=tmp_path_factory.mktemp("cache"))
    return Embedder.from_settings(settings.model_copy(update={"device": "cpu"}), modalities=("text",))


def _captions(n: int) -> list[EmbedItem]:
    tokens = tokenize(["the same caption"] * n)  # one length: one batch group
    return [EmbedItem(Modality.TEXT, row) for row in tokens]


def _run(runner: GpuRunner, items: list[EmbedItem]) -> list[Any]:
    """One batch as the batcher runs it: launch, then collect."""
    return list(runner._collect(runner._launch(runner.group_of(items[0]), items)))


def test_a_batch_out_of_cuda_memory_is_split_and_the_cap_grows_back(
    embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = GpuRunner(embedder, GpuSettings(max_batch=8, min_batch_after_oom=1))
    try:
        expected = embedder.finish(embedder.forward(embedder.prepare(Modality.TEXT, tokenize(["the same caption"]))))[0]
        forward = OutOfMemoryAbove(embedder, fits=2)
        monkeypatch.setattr(embedder, "forward", forward)

        results = _run(runner, _captions(8))

        assert forward.sizes == [8, 4, 2, 2, 4, 2, 2], "split in halves until the halves fit"
        assert len(results) == 8 and all(isinstance(r, np.ndarray) for r in results), results
        for result in results:
            np.testing.assert_allclose(result, expected, atol=1e-5)
        assert runner.batch_cap == 2

        forward.fits = 8  # memory is free again: the cap doubles after enough batches at it
        for _ in range(GROW_AFTER_BATCHES):
            _run(runner, _captions(2))
        assert runner.batch_cap == 4
        for _ in range(GROW_AFTER_BATCHES):
            _run(runner, _captions(4))
        assert runner.batch_cap == 8, "back to max_batch, never past it"
        for _ in range(GROW_AFTER_BATCHES):
            _run(runner, _captions(8))
        assert runner.batch_cap == 8
    finally:
        runner.close()

"""Items per second per modality of both model families behind the model port, on CPU, same
input files, same run: ImageBind (`shared.models.imagebind.ImageBindBackend`) and PE-AV
(`shared.models.perception.PerceptionBackend`, transformers' PeAudioVideoModel).

    PYTHONPATH=$PWD .venv/bin/python bench/model_families.py            # tiny random configs
    PYTHONPATH=$PWD .venv/bin/python bench/model_families.py --full     # + full-size architectures

Weights are random (the real ones cannot be fetched on the dev box, and throughput does not
depend on their values): the tiny configs are the test ones (`tiny`, `pe-av-tiny`, loaded
through the real loading code); `--full` builds ImageBind huge and PE-AV large (transformers'
default PeAudioVideoConfig: PE-Core L/14 336 px video tower, ModernBERT text, DAC audio front
end) at random in memory. Each sample file is preprocessed by each family's own cpu-side
preprocessing (`shared.models.preprocessing`, timed separately), then embedded through the
backend's prepare/forward/finish at each batch size; median and best of --iterations after
one warm-up. Families are interleaved per modality so that load from other processes on a
shared machine hits both alike. Writes ``bench/results/model_families_<sizes>_cpu.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.* when run as a script

from bench.machine import cpu_name
from bench.report import write_report
from shared.config import ModelSettings
from shared.events import Modality
from shared.imagebind.config import MODEL_MODALITIES, config_by_name
from shared.imagebind.embed import Embedder
from shared.imagebind.model import build_model, place, random_state_dict
from shared.media.image import decode_image
from shared.models.imagebind import ImageBindBackend
from shared.models.loader import load_backend
from shared.models.perception import PerceptionBackend
from shared.models.port import EmbeddingBackend
from shared.models.preprocessing import Preprocessor, preprocessor_for

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "fixtures" / "samples"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
IMAGE = "rgb_landscape_640x427.jpg"
AUDIO = "speech_22050_1500ms_mono.wav"
TEXT = "a dog barking at a red ball in the park on a rainy afternoon"


def tiny_backends(cache: Path) -> dict[str, tuple[EmbeddingBackend, Preprocessor]]:
    found = {}
    for name in ("tiny", "pe-av-tiny"):
        settings = ModelSettings(name=name, cache_dir=cache, device="cpu")
        found[name] = (load_backend(settings), preprocessor_for(settings))
    return found


def full_backends(cache: Path) -> dict[str, tuple[EmbeddingBackend, Preprocessor]]:
    from transformers import PeAudioVideoConfig

    config = config_by_name("huge")
    model = build_model(config, MODEL_MODALITIES, device="meta")
    model.load_state_dict(random_state_dict(config, seed=0), strict=True, assign=True)
    device = torch.device("cpu")
    imagebind = ImageBindBackend(
        Embedder(
            place(model, device, torch.float32),
            model_name="imagebind-huge (random)",
            checkpoint_sha256="-",
            device=device,
        )
    )
    pe_model = PerceptionBackend_model(PeAudioVideoConfig())
    pe = PerceptionBackend(
        pe_model, model_name="pe-av-large (random)", checkpoint_sha256="-", device=device, dtype=torch.float32
    )
    # PE-AV large's tokenizer is not in a package: its text input is the tiny tokenizer's ids
    # padded to the real model's 64 tokens (speed depends on length, not on which ids).
    tiny_pre = preprocessor_for(ModelSettings(name="pe-av-tiny", cache_dir=cache))
    return {
        "huge": (imagebind, preprocessor_for(ModelSettings(name="huge"))),
        "pe-av-large": (pe, LargeWire(tiny_pre)),
    }


def PerceptionBackend_model(config: Any) -> Any:
    from transformers import PeAudioVideoModel

    torch.manual_seed(0)
    model = PeAudioVideoModel(config)
    model.audio_video_encoder = None
    return model.eval()


class LargeWire:
    """PE-AV large's wire arrays: 336 px crops, 64 text tokens, 48 kHz audio (tiny's tokenizer ids)."""

    def __init__(self, tiny: Any) -> None:
        self.tiny = tiny

    def image(self, image: Any, *, max_pixels: int) -> np.ndarray:
        from shared.imagebind.image import resize_and_center_crop

        return resize_and_center_crop(image, max_resized_pixels=max_pixels, size=336)

    def text(self, text: str) -> np.ndarray:
        ids = self.tiny.text(text)
        return np.pad(ids, (0, 64 - len(ids)))

    def audio(self, data: bytes, **kwargs: Any) -> np.ndarray:
        return self.tiny.audio(data, **kwargs)


def wire_inputs(pre: Preprocessor) -> tuple[dict[Modality, np.ndarray], dict[Modality, float]]:
    """One wire array per modality from the same files, and the cpu seconds each took."""
    image_bytes, audio_bytes = (SAMPLES / IMAGE).read_bytes(), (SAMPLES / AUDIO).read_bytes()
    makers: dict[Modality, Callable[[], np.ndarray]] = {
        Modality.IMAGE: lambda: pre.image(decode_image(image_bytes, max_pixels=10**8), max_pixels=10**8),
        Modality.TEXT: lambda: pre.text(TEXT),
        Modality.AUDIO: lambda: pre.audio(audio_bytes, max_duration_s=600, mode="reference", format=None),
    }
    arrays, seconds = {}, {}
    for modality, make in makers.items():
        make()
        start = time.perf_counter()
        arrays[modality] = make()
        seconds[modality] = time.perf_counter() - start
    return arrays, seconds


def embed_once(backend: EmbeddingBackend, modality: Modality, batch: np.ndarray) -> None:
    backend.finish(backend.forward(backend.prepare(modality, batch)))


def run(
    backends: dict[str, tuple[EmbeddingBackend, Preprocessor]],
    sizes: list[int],
    iterations: int,
    done: Callable[[list[dict[str, Any]]], None] = lambda rows: None,
) -> list[dict[str, Any]]:
    """Time every modality and batch size; `done(rows)` after each one (a slow run on a loaded
    machine still leaves what it measured)."""
    inputs = {name: wire_inputs(pre) for name, (_, pre) in backends.items()}
    rows: list[dict[str, Any]] = []
    for modality in (Modality.IMAGE, Modality.TEXT, Modality.AUDIO):
        for size in sizes:
            runs: dict[str, list[float]] = {name: [] for name in backends}
            for i in range(iterations + 1):
                for name, (backend, _) in backends.items():  # interleaved: A B A B ...
                    batch = np.stack([inputs[name][0][modality]] * size)
                    start = time.perf_counter()
                    embed_once(backend, modality, batch)
                    if i:
                        runs[name].append(time.perf_counter() - start)
            for name, times in runs.items():
                rows.append(
                    {
                        "model": name,
                        "modality": modality.value,
                        "batch_size": size,
                        "wire_shape": list(inputs[name][0][modality].shape),
                        "cpu_preprocess_s": round(inputs[name][1][modality], 5),
                        "median_s": round(statistics.median(times), 5),
                        "best_s": round(min(times), 5),
                        "items_per_s": round(size / min(times), 2),
                    }
                )
            done(rows)
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Model families on CPU ({report['date']})",
        "",
        f"Machine: {report['machine']}; torch threads {report['torch_threads']}; load avg at start "
        f"{report['load_avg_1m']}. Random weights; same files ({IMAGE}, {AUDIO}, one caption). "
        "items/s from the best of the runs (least disturbed by other load).",
        "",
        "| model | modality | batch | wire array | cpu preprocess (ms) | median (ms) | items/s |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['model']} | {row['modality']} | {row['batch_size']} | {tuple(row['wire_shape'])} | "
            f"{row['cpu_preprocess_s'] * 1000:.1f} | {row['median_s'] * 1000:.1f} | {row['items_per_s']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also the full-size architectures (random weights)")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/omnibind-bench-cache"))
    parser.add_argument("--full-only", action="store_true", help="only the full-size architectures")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    full = args.full or args.full_only
    label = "full" if args.full_only else ("tiny+full" if full else "tiny")
    report: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "machine": f"{cpu_name()}, {os.cpu_count()} logical CPUs (shared with other work)",
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "versions": {"torch": torch.__version__},
        "rows": [],
    }
    stem = RESULTS_DIR / f"model_families_{label}_cpu_{report['date']}"
    earlier: list[dict[str, Any]] = []

    def save(rows: list[dict[str, Any]]) -> None:
        report["rows"] = earlier + rows
        write_report(stem, report, markdown(report))

    if not args.full_only:
        earlier = run(tiny_backends(args.cache), sizes, args.iterations, save)
    if full:
        print("building the full-size architectures (random weights) ...", flush=True)
        run(full_backends(args.cache), sizes, args.iterations, save)
    return report


if __name__ == "__main__":
    main()

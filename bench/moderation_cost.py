"""Per-upload CPU cost of moderation, next to the preprocessing it runs beside.

    PYTHONPATH=$PWD .venv/bin/python bench/moderation_cost.py [--iterations 200]

Single process, single thread (torch/onnxruntime/OpenCV at 1 thread, like a prefork CPU
worker child). Measures CPU time (``time.process_time``) per upload, median over
--iterations after warm-up, for:

- preprocessing alone (`workers.preprocess.prepare_upload_and_media`: sniff, decode,
  resize/crop or tokenise or fbank) of an image (640x427 JPEG and 1600x1200 JPEG), a short
  text and a 1 s WAV;
- each detector on the already decoded media (NudeNet on both images, the text classifier on
  the text), i.e. what enabling it adds to the CPU stage;
- zero-shot scoring (`zero_shot_scores`) for a policy of 50 prompts (45 category prompts in
  9 categories + 5 contrast) at 1024 dimensions (huge) and 32 (tiny), and the whole
  decision (`zero_shot_scores` + blocklist match against 100 listed examples + `decide`,
  which builds the `Moderation` with every signal): what the index stage adds per upload.

Writes ``bench/results/moderation_cost.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "fixtures" / "samples"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
TEXT = "shut up you worthless idiot, nobody wants your opinion about the train to Lyon"


def cpu_time_per_call_us(fn: Callable[[], Any], iterations: int, warmup: int = 5) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        start = time.process_time_ns()
        fn()
        samples.append((time.process_time_ns() - start) / 1000)
    wall_start = time.perf_counter()
    for _ in range(max(1, iterations // 4)):
        fn()
    wall_us = (time.perf_counter() - wall_start) / max(1, iterations // 4) * 1e6
    return {"median_us": statistics.median(samples), "mean_us": statistics.fmean(samples), "wall_mean_us": wall_us}


def fifty_prompt_policy_text() -> str:
    lines = ['name = "bench-50"', "[contrast]", "image = [" + ", ".join(f'"safe {i}"' for i in range(5)) + "]"]
    for c in range(9):
        prompts = ", ".join(f'"category {c} prompt {i}"' for i in range(5))
        lines += [
            f"[categories.c{c}]",
            "review = 0.5",
            "block = 0.8",
            f"[categories.c{c}.prompts]",
            f"image = [{prompts}]",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

    from shared.config import LimitSettings
    from shared.events import Modality, UploadEvent
    from shared.moderation.blocklist import BlocklistEntry, BlocklistIndex
    from shared.moderation.decision import Evidence, decide
    from shared.moderation.detectors import DetectorSet
    from shared.moderation.policy import parse_policy
    from shared.moderation.zeroshot import build_prompt_groups, zero_shot_scores
    from workers.preprocess import prepare_upload_and_media

    n = args.iterations
    limits = LimitSettings()
    results: dict[str, dict[str, float]] = {}
    media: dict[str, Any] = {}
    inputs = {
        "image 640x427 jpeg": (SAMPLES / "rgb_landscape_640x427.jpg").read_bytes(),
        "image 1600x1200 jpeg": (SAMPLES / "large_1600x1200.jpg").read_bytes(),
        "text (80 chars)": None,
        "audio 1 s wav": (SAMPLES / "tone_16k_1s_mono.wav").read_bytes(),
    }
    for name, data in inputs.items():
        if data is None:
            event = UploadEvent(text=TEXT)
            payload = TEXT.encode()
        else:
            event = UploadEvent.model_validate({"object": {"bucket": "b", "key": "k"}})
            payload = data

        def prepare(event: UploadEvent = event, payload: bytes = payload) -> Any:
            return prepare_upload_and_media(event, payload, limits)

        results[f"preprocess: {name}"] = cpu_time_per_call_us(prepare, max(20, n // 4))
        media[name] = prepare()[1]

    detectors = DetectorSet(("nudenet", "profanity"))
    for name in ("image 640x427 jpeg", "image 1600x1200 jpeg", "text (80 chars)"):
        detector = "nudenet" if name.startswith("image") else "profanity"
        results[f"detector {detector}: {name}"] = cpu_time_per_call_us(
            lambda m=media[name]: detectors.run(m), max(20, n // 4)
        )

    policy = parse_policy(fifty_prompt_policy_text())
    assert len(policy.prompt_texts()) == 50
    rng = np.random.default_rng(0)
    for dim in (1024, 32):
        vectors = {
            p: (v := rng.standard_normal(dim).astype(np.float32)) / np.linalg.norm(v) for p in policy.prompt_texts()
        }
        groups = build_prompt_groups(policy, Modality.IMAGE, vectors)
        assert groups is not None
        upload = rng.standard_normal(dim).astype(np.float32)
        upload /= np.linalg.norm(upload)
        results[f"zero-shot scores: 50 prompts, {dim}-d"] = cpu_time_per_call_us(
            lambda g=groups, u=upload: zero_shot_scores(g, u), n
        )
        entries = [
            BlocklistEntry(id=f"bl-{i}", category="c0", sha256=f"{i:064x}", modality=Modality.IMAGE, checkpoint="ck")
            for i in range(100)
        ]
        index = BlocklistIndex.build(entries, {e.id: rng.standard_normal(dim).astype(np.float32) for e in entries})

        def whole(g: Any = groups, u: np.ndarray = upload, ix: BlocklistIndex = index) -> Any:
            scores = zero_shot_scores(g, u)
            matches = ix.match(sha256="f" * 64, vector=u, checkpoint="ck", max_distance=0.08)
            return decide(
                policy, Evidence(Modality.IMAGE, zero_shot=scores, blocklist=matches), model="m", checkpoint="ck"
            )

        results[f"decision: 50 prompts + 100 blocklisted, {dim}-d"] = cpu_time_per_call_us(whole, n)

    write(results, n)


def write(results: dict[str, dict[str, float]], iterations: int) -> None:
    import onnxruntime
    import sklearn

    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "load_average_at_end": os.getloadavg()[0],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "scikit-learn": sklearn.__version__,
        "iterations": iterations,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "moderation_cost.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    lines = [
        "# Moderation cost per upload (CPU time, one thread)",
        "",
        *(f"- {k}: {v}" for k, v in meta.items()),
        "",
        "| what | median CPU µs | mean CPU µs | mean wall µs |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {r['median_us']:.0f} | {r['mean_us']:.0f} | {r['wall_mean_us']:.0f} |"
            for name, r in results.items()
        ),
    ]
    (RESULTS_DIR / "moderation_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Items per second of omnibind's ImageBind vs Meta's reference, same weights, same inputs.

Runs in our venv (reference skipped with a note) or in the reference's venv, where both
import (our model needs only torch and numpy):

    PYTHONPATH=$PWD /tmp/ib-ref/bin/python bench/model_throughput.py --config huge --batch-sizes 1,2,4
    PYTHONPATH=$PWD .venv/bin/python bench/model_throughput.py --config tiny

Weights are seeded random (no checkpoint needed): with the reference present, ours loads the
reference model's own tensors (shared, not copied); otherwise `random_state_dict`. Per
modality and batch size it times the whole inference path and reports the median over
--iterations after --warmup runs:

- ours: the Embedder's stages -- `cut_tokens` (text cut after EOT), device copy, model forward
  under `inference_mode` (bf16: Linear weights stored in bf16 + autocast), L2-normalise;
- reference: ``model({modality: x})`` under `inference_mode` (bf16: autocast over fp32
  weights), L2-normalise.

Inputs: CLIP-normalised float images (B, 3, 224, 224); captions of --caption-tokens tokens
(SOT + ids + EOT, zero-padded to 77); audio (B, 3, 1, 128, 204) fbank clips. The max abs
difference of the unit vectors of both implementations is recorded as a sanity check.
Writes ``bench/results/model_throughput_<config>_<dtype>_<device>[_ours-only].{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.* when run as a script

from bench.machine import cpu_name
from bench.report import write_report
from shared.imagebind.config import (
    MODEL_MODALITIES,
    TINY,
    ImageBindConfig,
    ModelModality,
    config_by_name,
    reference_kwargs,
)
from shared.imagebind.inputs import cut_tokens
from shared.imagebind.model import ImageBindModel, build_model, place, random_state_dict

SEED = 0
SOT, EOT = 49406, 49407
RESULTS_DIR = Path(__file__).resolve().parent / "results"
REFERENCE_TINY_KWARGS = reference_kwargs(TINY)


@dataclass
class Row:
    implementation: str
    modality: str
    batch_size: int
    best_s: float
    median_s: float
    items_per_s: float  # from the best run: the least disturbed by other load
    runs_s: list[float]


def build_reference(config_name: str) -> torch.nn.Module | None:
    """The reference model with seeded random weights, or None where it is not installed."""
    try:
        from imagebind.models.imagebind_model import ImageBindModel as ReferenceModel
        from imagebind.models.imagebind_model import imagebind_huge
    except ImportError:
        return None
    torch.manual_seed(SEED)
    model = imagebind_huge(pretrained=False) if config_name == "huge" else ReferenceModel(**REFERENCE_TINY_KWARGS)
    return model.eval().requires_grad_(False)


def build_ours(
    config: ImageBindConfig, reference: torch.nn.Module | None, device: torch.device, dtype: torch.dtype
) -> ImageBindModel:
    model = build_model(config, MODEL_MODALITIES, device="meta")
    if reference is not None:
        source = reference.state_dict()
        state = {k: v for k, v in source.items() if k.split(".")[1] in MODEL_MODALITIES}
    else:
        state = random_state_dict(config, seed=SEED)
    model.load_state_dict(state, strict=True, assign=True)
    return place(model, device, dtype)


def make_inputs(modality: ModelModality, batch: int, caption_tokens: int, gen: torch.Generator) -> torch.Tensor:
    if modality == "vision":
        return torch.randn(batch, 3, 224, 224, generator=gen)
    if modality == "audio":
        return torch.randn(batch, 3, 1, 128, 204, generator=gen)
    tokens = torch.zeros(batch, 77, dtype=torch.int64)
    body = torch.randint(1, 49000, (batch, caption_tokens), generator=gen)
    tokens[:, 0], tokens[:, 1 : caption_tokens + 1], tokens[:, caption_tokens + 1] = SOT, body, EOT
    return tokens


def precision(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


Embed = Callable[[torch.Tensor], np.ndarray]


def ours_fn(model: ImageBindModel, modality: ModelModality, device: torch.device, dtype: torch.dtype) -> Embed:
    config = model.config

    def run(x: torch.Tensor) -> np.ndarray:
        if modality == "text":
            x = cut_tokens(x, config.context_length, config.vocab_size)
        x = x.to(device)
        with torch.inference_mode(), precision(device, dtype):
            if modality == "vision":
                out = model.embed_vision(x)
            elif modality == "text":
                out = model.embed_text(x)
            else:
                out = model.embed_audio(x.flatten(0, 1), [x.shape[1]] * x.shape[0])
            return F.normalize(out.float(), dim=-1).cpu().numpy()

    return run


def reference_fn(model: torch.nn.Module, modality: ModelModality, device: torch.device, dtype: torch.dtype) -> Embed:
    def run(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), precision(device, dtype):
            out = model({modality: x.to(device)})[modality]
            return F.normalize(out.float(), dim=-1).cpu().numpy()

    return run


def time_interleaved(
    impls: list[tuple[str, Embed]], x: torch.Tensor, warmup: int, iterations: int
) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Run the implementations in turn (A B A B ...) so that load from other processes on a
    shared machine hits both alike; returns each one's run times and last output."""
    runs: dict[str, list[float]] = {name: [] for name, _ in impls}
    outputs: dict[str, np.ndarray] = {}
    for i in range(warmup + iterations):
        for name, fn in impls:
            start = time.perf_counter()
            outputs[name] = fn(x)
            if i >= warmup:
                runs[name].append(time.perf_counter() - start)
    return runs, outputs


def deviation(out: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    """Max abs difference and lowest cosine of unit vectors against the fp32 ones."""
    return {
        "max_abs_diff": float(np.abs(out - exact).max()),
        "min_cosine": float(np.sum(out * exact, axis=1).min()),
    }


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    with contextlib.suppress(OSError, ValueError):
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["ram_gib"] = round(pages / 2**30, 1)
    with contextlib.suppress(OSError):
        info["load_avg_1m_at_start"] = round(os.getloadavg()[0], 2)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        found["imagebind-unofficial"] = version("imagebind-unofficial")
    return found


@contextlib.contextmanager
def progress(label: str) -> Iterator[None]:
    start = time.perf_counter()
    print(f"{label} ...", file=sys.stderr, flush=True)
    yield
    print(f"{label}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def _fmt(row: dict[str, Any] | None, key: str, spec: str) -> str:
    return "-" if row is None else format(row[key], spec)


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"# ImageBind throughput: {s['config']}, {s['dtype']}, {s['device']}",
        "",
        f"- machine: {report['machine']['cpu']}, {report['machine']['logical_cpus']} logical CPUs, "
        f"{report['machine'].get('ram_gib', '?')} GiB RAM, torch threads {report['machine']['torch_threads']}, "
        f"load average at start {report['machine'].get('load_avg_1m_at_start', '?')}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}",
        f"- {s['warmup']} warm-up + {s['iterations']} timed runs per cell, implementations interleaved; "
        f"items/s from the best run (least disturbed by other load); captions of "
        f"{s['caption_tokens']} tokens; audio = 3 clips per item; random weights (seed {SEED})",
        f"- reference: {report['reference_note']}",
        f"- created {report['created_at']} with `{report['command']}`",
        "",
        "| modality | batch | ours items/s | reference items/s | speed-up | ours median s/batch "
        "| reference median s/batch | max abs diff (unit vectors) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cells: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for row in report["results"]:
        cells.setdefault((row["modality"], row["batch_size"]), {})[row["implementation"]] = row
    for (modality, batch), impls in cells.items():
        ours, ref = impls["omnibind"], impls.get("reference")
        diff = report["max_abs_diff"].get(f"{modality}/{batch}")
        speedup = f"{ours['items_per_s'] / ref['items_per_s']:.2f}x" if ref else "-"
        diff_text = "-" if diff is None else f"{diff:.1e}"
        lines.append(
            f"| {modality} | {batch} | {ours['items_per_s']:.2f} | {_fmt(ref, 'items_per_s', '.2f')} | {speedup} | "
            f"{ours['median_s']:.3f} | {_fmt(ref, 'median_s', '.3f')} | {diff_text} |"
        )
    if report["vs_fp32"]:
        lines += [
            "",
            f"Accuracy of {s['dtype']} against the reference in fp32 (same weights, unit vectors):",
            "",
            "| modality | batch | ours max abs diff | ours min cosine "
            "| reference max abs diff | reference min cosine |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for cell, impls in report["vs_fp32"].items():
            modality, batch = cell.split("/")
            ours, ref = impls["omnibind"], impls["reference"]
            lines.append(
                f"| {modality} | {batch} | {ours['max_abs_diff']:.1e} | {ours['min_cosine']:.6f} | "
                f"{ref['max_abs_diff']:.1e} | {ref['min_cosine']:.6f} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("tiny", "huge"), default="tiny")
    parser.add_argument("--batch-sizes", default="1,8,32", help="comma-separated, e.g. 1,2,4")
    parser.add_argument("--modalities", default="vision,text,audio", help="subset of vision,text,audio")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--caption-tokens", type=int, default=12, help="tokens between SOT and EOT")
    parser.add_argument("--no-reference", action="store_true", help="time only our implementation")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    config = config_by_name(args.config)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    modalities: list[ModelModality] = [m for m in MODEL_MODALITIES if m in args.modalities.split(",")]

    with progress("building models"):
        reference = None if args.no_reference else build_reference(args.config)
        ours = build_ours(config, reference, device, dtype)
        if reference is not None:
            reference.to(device)
    reference_note = (
        "imagebind-unofficial, same weights and inputs, autocast over fp32 weights for bf16"
        if reference is not None
        else "skipped (--no-reference)"
        if args.no_reference
        else "skipped: `imagebind` is not importable here"
    )

    rows: list[Row] = []
    diffs: dict[str, float] = {}
    vs_fp32: dict[str, dict[str, dict[str, float]]] = {}
    gen = torch.Generator().manual_seed(SEED)
    for modality in modalities:
        for batch in batch_sizes:
            x = make_inputs(modality, batch, args.caption_tokens, gen)
            impls = [("omnibind", ours_fn(ours, modality, device, dtype))]
            if reference is not None:
                impls.append(("reference", reference_fn(reference, modality, device, dtype)))
            with progress(f"{modality} batch {batch}"):
                runs, outputs = time_interleaved(impls, x, args.warmup, args.iterations)
            for name, times in runs.items():
                best, median = min(times), statistics.median(times)
                rows.append(Row(name, modality, batch, best, median, batch / best, [round(t, 4) for t in times]))
            if "reference" in outputs:
                diffs[f"{modality}/{batch}"] = float(np.abs(outputs["omnibind"] - outputs["reference"]).max())
            if reference is not None and dtype != torch.float32:
                # The reference still holds fp32 weights: its fp32 output is the yardstick for both.
                exact = reference_fn(reference, modality, device, torch.float32)(x)
                vs_fp32[f"{modality}/{batch}"] = {name: deviation(out, exact) for name, out in outputs.items()}

    report: dict[str, Any] = {
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "config": args.config,
            "dtype": args.dtype,
            "device": str(device),
            "batch_sizes": batch_sizes,
            "modalities": modalities,
            "iterations": args.iterations,
            "warmup": args.warmup,
            "caption_tokens": args.caption_tokens,
        },
        "reference_note": reference_note,
        "results": [asdict(r) for r in rows],
        "max_abs_diff": diffs,
        "vs_fp32": vs_fp32,
    }
    suffix = "" if reference is not None else "_ours-only"
    stem = args.out_dir / f"model_throughput_{args.config}_{args.dtype}_{device.type}{suffix}"
    write_report(stem, report, markdown(report))
    return report


if __name__ == "__main__":
    main()

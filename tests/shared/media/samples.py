"""The committed sample inputs (tests/fixtures/samples, made by tools/golden/make_samples.py)
and the reference outputs for them (tests/fixtures/golden/preprocess)."""

from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SAMPLES = FIXTURES / "samples"
GOLDEN = FIXTURES / "golden" / "preprocess"


def sample_names(kind: str) -> list[str]:
    """Names of the samples of one kind: image, wav, encoded_audio."""
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    return sorted(name for name, entry in manifest.items() if entry["kind"] == kind)


def read_sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def sample_texts() -> dict[str, str]:
    return json.loads((SAMPLES / "texts.json").read_text(encoding="utf-8"))

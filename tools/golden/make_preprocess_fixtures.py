"""Run the REFERENCE preprocessing (Meta's `imagebind.data`) on tests/fixtures/samples/ and
save its outputs under tests/fixtures/golden/preprocess/.

Runs in the throw-away reference environment (see REFERENCE.md), never in ours:

    /tmp/ib-ref/bin/python tools/golden/make_preprocess_fixtures.py

It imports nothing from omnibind. Adjustments, each also described in ``meta.json``:

- ``torchaudio.load`` (needs torchcodec + FFmpeg in torchaudio >= 2.9) is replaced by a
  soundfile loader with the same result for 16-bit WAV (int16 / 32768, (channels, samples)).
- Where omnibind differs from the reference on purpose, the input handed to the reference
  gets the same pre-step here, written independently of omnibind's code: EXIF orientation
  applied, transparency composited on white, 16-bit grey scaled to 8 bits (saved as PNG
  first); a waveform shorter than one 25 ms window is de-meaned and zero-padded to 400
  samples (the reference crashes on it).
- Clip placement: PyPI's pytorchvideo 0.1.5 spaces clips (d - 2) / 3 apart, the commit the
  official ImageBind pins (d - 2) / 2. Files <= 2 s are placed identically by both and use
  the reference as installed; the 5 s sample uses the official sampler, re-implemented below.

Images are saved as the reference's float32 tensors; as every value is
normalize(uint8 / 255), a lossless uint8 copy is saved instead when it reproduces the
tensor exactly (checked here), which keeps the fixtures small.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from fractions import Fraction
from pathlib import Path

import imagebind.data as ib_data
import numpy as np
import soundfile
import torch
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "fixtures" / "samples"
OUT = ROOT / "tests" / "fixtures" / "golden" / "preprocess"
MEAN = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(3, 1, 1)
STD = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(3, 1, 1)

# name -> pre-step applied before the reference sees the image
IMAGE_PRESTEPS = {
    "exif_rotated_320x240.jpg": "exif_transpose",
    "rgba_transparent_240x240.png": "alpha_on_white",
    "palette_transparent_320x240.gif": "alpha_on_white",
    "gray16_200x300.png": "gray16_to_8bit",
}
AUDIO_PRESTEPS = {"blip_16k_300samples.wav": "demean_and_pad_to_400_samples"}
OFFICIAL_SAMPLER = {"clips_16k_5s_mono.wav"}


def _prepared_image_path(name: str, tmp: Path) -> Path:
    step = IMAGE_PRESTEPS.get(name)
    path = SAMPLES / name
    if step is None:
        return path
    image = Image.open(path)
    if step == "exif_transpose":
        image = ImageOps.exif_transpose(image).convert("RGB")
    elif step == "alpha_on_white":
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba).convert("RGB")
    elif step == "gray16_to_8bit":
        image = Image.fromarray((np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8))
    out = tmp / (name + ".png")
    image.save(out, "PNG")
    return out


def _uint8_if_lossless(tensor: torch.Tensor) -> np.ndarray:
    pixels = torch.round((tensor * STD + MEAN) * 255).clamp(0, 255).to(torch.uint8)
    again = (pixels.float().div(255) - MEAN) / STD
    if not torch.equal(again, tensor):
        raise SystemExit("reference image tensor is not normalize(uint8): cannot store it as uint8")
    return pixels.numpy()


def make_images(manifest: dict[str, dict[str, str]]) -> dict[str, np.ndarray]:
    names = sorted(n for n, m in manifest.items() if m["kind"] == "image")
    out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = _prepared_image_path(name, Path(tmp))
            tensor = ib_data.load_and_transform_vision_data([str(path)], "cpu")[0]
            out[name] = _uint8_if_lossless(tensor)
    return out


class OfficialConstantClipsPerVideoSampler:
    """pytorchvideo's ConstantClipsPerVideoSampler at the commit ImageBind pins: the same
    as PyPI 0.1.5's except that the spacing divides by max(clips - 1, 1)."""

    def __init__(self, clip_duration: float, clips_per_video: int) -> None:
        self._clip_duration = Fraction(clip_duration)
        self._clips_per_video = clips_per_video
        self._index = 0

    def __call__(self, last_clip_time, video_duration, annotation):  # signature of pytorchvideo's
        max_start = Fraction(max(video_duration - self._clip_duration, 0))
        uniform = Fraction(max_start, max(self._clips_per_video - 1, 1))
        start = uniform * self._index
        index = self._index
        self._index += 1
        is_last = self._index >= self._clips_per_video or uniform * self._index > max_start
        if is_last:
            self._index = 0
        return start, start + self._clip_duration, index, 0, is_last


def _soundfile_load(path: str) -> tuple[torch.Tensor, int]:
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)  # (samples, channels)
    waveform = torch.from_numpy(np.ascontiguousarray(samples.T))
    if AUDIO_PRESTEPS.get(Path(path).name) == "demean_and_pad_to_400_samples":
        waveform = waveform - waveform.mean()
        waveform = torch.nn.functional.pad(waveform, (0, max(0, 400 - waveform.shape[1])))
    return waveform, rate


def make_audio(manifest: dict[str, dict[str, str]]) -> dict[str, np.ndarray]:
    ib_data.torchaudio.load = _soundfile_load
    pypi_sampler = ib_data.ConstantClipsPerVideoSampler
    out: dict[str, np.ndarray] = {}
    for name in sorted(n for n, m in manifest.items() if m["kind"] == "wav"):
        ib_data.ConstantClipsPerVideoSampler = (
            OfficialConstantClipsPerVideoSampler if name in OFFICIAL_SAMPLER else pypi_sampler
        )
        out[name] = ib_data.load_and_transform_audio_data([str(SAMPLES / name)], "cpu")[0].numpy()
    ib_data.ConstantClipsPerVideoSampler = pypi_sampler
    return out


def make_text() -> dict[str, np.ndarray]:
    texts: dict[str, str] = json.loads((SAMPLES / "texts.json").read_text(encoding="utf-8"))
    names = sorted(texts)
    tokens = ib_data.load_and_transform_text([texts[n] for n in names], "cpu").numpy()
    return {"names": np.array(names), "tokens": tokens}


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    packages = ("torch", "torchvision", "torchaudio", "imagebind-unofficial", "pytorchvideo", "pillow", "ftfy", "regex")
    return {p: version(p) for p in packages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    np.savez_compressed(args.out / "images_uint8.npz", **make_images(manifest))
    np.savez_compressed(args.out / "audio.npz", **make_audio(manifest))
    np.savez_compressed(args.out / "text.npz", **make_text())
    meta = {
        "generated_by": "tools/golden/make_preprocess_fixtures.py",
        "reference_versions": _versions(),
        "images": "uint8 (3, 224, 224) u such that the reference tensor == (u / 255 - CLIP_MEAN) / CLIP_STD exactly",
        "audio": "float32 (3, 1, 128, 204), the reference output for one file",
        "text": "names (N,), tokens int64 (N, 77)",
        "image_presteps": IMAGE_PRESTEPS,
        "audio_presteps": AUDIO_PRESTEPS,
        "audio_official_sampler": sorted(OFFICIAL_SAMPLER),
        "audio_loader": "soundfile float32 in place of torchaudio.load",
    }
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print("wrote", ", ".join(f"{p.name} ({p.stat().st_size // 1024} KiB)" for p in sorted(args.out.iterdir())))


if __name__ == "__main__":
    main()

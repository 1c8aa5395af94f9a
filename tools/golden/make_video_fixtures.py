"""Make small sample videos with PyAV, run the REFERENCE video preprocessing (Meta's
`imagebind.data.load_and_transform_video_data`, decoding with decord) and the reference model
in the tiny configuration on them, and save the outputs under tests/fixtures/golden/video/.

Runs in the throw-away reference environment with ``decord av`` added (REFERENCE.md, "Video"),
never in ours; it imports nothing from omnibind but the dependency-free model configuration:

    /tmp/refvenv/bin/python tools/golden/make_video_fixtures.py

x264 output is not bit-reproducible across runs, so the samples (tests/fixtures/golden/video/samples/)
are written by this script together with the fixtures made from them: regenerate both or
neither. ``--reuse-samples`` keeps the committed samples and remakes only the fixtures.

Adjustments to the reference, each also recorded in ``meta.json``:

- PyPI pytorchvideo 0.1.5's ``EncodedVideo.from_path`` rejects the ``sample_rate`` keyword
  the reference passes (the official pin accepts it; no audio is decoded): dropped.
- Clip placement: the official pin's sampler (k * max(d - 2, 0) / 4), re-implemented in
  make_preprocess_fixtures.py; PyPI's 0.1.5 divides by 5.
- Rotation needs no pre-step: decord 0.6.0 applies the display matrix itself (its frames of
  the rotated sample are portrait, as omnibind's; ``meta.json`` records the shapes).
- The audio track: the reference's ``torchaudio.load`` (needs torchcodec + FFmpeg) is
  replaced by a PyAV loader (first audio stream as float32 (channels, samples)); with the
  official sampler.

Stored (``reference.npz``; the full reference tensors, 9 MB each, would not compress below
~8 MB each, so they are stored as what rebuilds them exactly), per sample NAME (the file name
without its extension):

- ``NAME__frames_sub`` (k, H, W, 3) uint8: the distinct frames decord gave the reference
  (after the rotation pre-step), each stored as its PNG "Sub" filter (byte minus its left
  neighbour, mod 256; ``np.cumsum(..., axis=2, dtype=np.uint8)`` restores it), which
  compresses these smooth frames several-fold; ``NAME__frame_slots`` (10,): which stored frame
  each clip position took, in clip order; ``NAME__frame_indices`` (10,): the frame numbers;
- ``NAME__grid`` (15, 3, 2, G, G) float32: the reference tensor at rows and columns ``GRID``
  (crop edges included), exactly; ``NAME__clip_mean`` / ``NAME__clip_std`` (15, 3, 2) float64:
  of the whole tensor, so that nothing outside the grid goes unchecked;
- ``NAME__fps``, ``NAME__frame_count``: what decord reports;
- ``NAME__embed_raw`` / ``NAME__embed_unit`` (32,): the tiny reference model
  (tests/fixtures/golden/model/tiny_state_dict.pt) on the reference tensor (1, 15, 3, 2, 224,
  224) as it returns it (the mean of 15 unit clip vectors) and L2-normalised;
- ``NAME__audio`` (3, 1, 128, 204) for samples with sound: the reference audio preprocessing
  of the track.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import av
import decord
import imagebind.data as ib_data
import numpy as np
import pytorchvideo.data.encoded_video_decord as pv_decord
import torch
from imagebind.models.imagebind_model import ImageBindModel
from make_preprocess_fixtures import OfficialConstantClipsPerVideoSampler

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # our config module is dependency-free
from shared.imagebind.config import TINY, reference_kwargs  # noqa: E402

SAMPLES = ROOT / "tests" / "fixtures" / "golden" / "video" / "samples"
OUT = ROOT / "tests" / "fixtures" / "golden" / "video"
TINY_STATE_DICT = ROOT / "tests" / "fixtures" / "golden" / "model" / "tiny_state_dict.pt"
SEED = 20261206
MAX_SAMPLE_BYTES = 200_000
# rows and columns of each 224 x 224 crop kept in the grid: both edges and every 16th between
GRID = np.array(sorted({0, 223, *range(7, 224, 16)}), dtype=np.int64)

# name -> how to make it: container, codec, coded size, fps, seconds, keyframe interval,
# display rotation (degrees counter-clockwise), audio track
SPECS: dict[str, dict[str, object]] = {
    "h264_landscape_384x240_4s.mp4": {"codec": "libx264", "size": (384, 240), "fps": 15, "seconds": 4.0},
    "vp9_256x144_3s.webm": {"codec": "libvpx-vp9", "size": (256, 144), "fps": 12, "seconds": 3.0},
    "h264_portrait_144x256_3s.mp4": {"codec": "libx264", "size": (144, 256), "fps": 12, "seconds": 3.0},
    "h264_rotated_270_256x144_3s.mp4": {
        "codec": "libx264",
        "size": (256, 144),
        "fps": 12,
        "seconds": 3.0,
        "rotation": -90,
    },
    "h264_short_1200ms.mp4": {"codec": "libx264", "size": (200, 150), "fps": 10, "seconds": 1.2},
    "h264_long_12s.mp4": {"codec": "libx264", "size": (160, 96), "fps": 10, "seconds": 12.0, "gop": 20},
    "h264_aac_3s.mp4": {"codec": "libx264", "size": (192, 128), "fps": 12, "seconds": 3.0, "audio": True},
}


def _frame(index: int, width: int, height: int, texture: np.ndarray) -> np.ndarray:
    """A moving, photo-like frame: shifting gradients, a disc crossing the frame, texture."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v, t = xx / (width - 1), yy / (height - 1), index / 10.0
    img = np.stack([120 + 100 * np.sin(3 * u + t), 60 + 150 * v, 128 + 90 * np.sin(5 * u - 3 * v + 2 * t)], axis=-1)
    cx, cy = (0.1 + 0.8 * ((t / 3) % 1)) * width, (0.5 + 0.3 * np.sin(t)) * height
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 < (0.15 * min(width, height)) ** 2
    img[disc] = (230, 40, 60)
    img += texture
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_video(spec: dict[str, object], container: str) -> bytes:
    import io

    width, height = spec["size"]  # type: ignore[misc]
    fps, seconds = int(spec["fps"]), float(spec["seconds"])  # type: ignore[arg-type]
    texture = np.random.default_rng(SEED).normal(0, 2, (height, width, 3))
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(str(spec["codec"]), rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "26"} if spec["codec"] == "libx264" else {"crf": "40", "b": "0"}
        if "gop" in spec:
            stream.codec_context.gop_size = int(spec["gop"])  # type: ignore[arg-type]
        if "rotation" in spec:
            stream.set_display_rotation(int(spec["rotation"]))  # type: ignore[arg-type]
        track = None
        if spec.get("audio"):
            track = out.add_stream("aac", rate=16000)
            track.layout = "mono"
        count = round(seconds * fps)
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(_frame(i, width, height, texture), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if track is not None:
            _encode_sound(out, track, seconds)
    return buf.getvalue()


def _encode_sound(out: av.container.OutputContainer, track: av.audio.stream.AudioStream, seconds: float) -> None:
    """A rising tone over soft noise, 16 kHz mono."""
    total = int(seconds * 16000)
    t = np.arange(total) / 16000
    rng = np.random.default_rng(SEED + 1)
    sound = (0.3 * np.sin(2 * np.pi * (300 + 200 * t) * t) + 0.02 * rng.normal(size=total)).astype(np.float32)
    for start in range(0, total, 1024):
        frame = av.AudioFrame.from_ndarray(sound[None, start : start + 1024], format="flt", layout="mono")
        frame.sample_rate = 16000
        for packet in track.encode(frame):
            out.mux(packet)
    for packet in track.encode():
        out.mux(packet)


def make_samples() -> None:
    SAMPLES.mkdir(parents=True, exist_ok=True)
    for name, spec in SPECS.items():
        data = make_video(spec, "webm" if name.endswith(".webm") else "mp4")
        if len(data) > MAX_SAMPLE_BYTES:
            raise SystemExit(f"{name} is {len(data)} bytes, over {MAX_SAMPLE_BYTES}")
        (SAMPLES / name).write_bytes(data)


def _display_rotation(path: Path) -> int:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            return round(frame.rotation)
    return 0


class _Recorder:
    """Wraps the reference's decord-backed video to drop the ``sample_rate`` keyword and record
    the frames decord returns."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.indices: list[int] = []
        self._get_clip = pv_decord.EncodedVideoDecord.get_clip
        self._from_path = ib_data.EncodedVideo.from_path

    def install(self) -> None:
        recorder = self
        original_from_path = self._from_path
        original_get_clip = self._get_clip

        def from_path(file_path: str, decode_audio: bool = True, decoder: str = "pyav", **_: object) -> object:
            return original_from_path(file_path, decode_audio=decode_audio, decoder=decoder)

        def get_clip(self: pv_decord.EncodedVideoDecord, start_sec: float, end_sec: float) -> dict:
            clip = original_get_clip(self, start_sec, end_sec)
            video = clip["video"]  # (C, T, H, W) float 0..255
            # UniformTemporalSubsample(2) keeps the first and last frame of the clip
            first_index = int(np.ceil(self._fps * start_sec))
            last_index = min(int(np.ceil(self._fps * end_sec)), len(self._av_reader)) - 1
            for t, index in ((0, first_index), (video.shape[1] - 1, last_index)):
                recorder.frames.append(video[:, t].permute(1, 2, 0).to(torch.uint8).numpy())
                recorder.indices.append(index)
            return clip

        ib_data.EncodedVideo.from_path = staticmethod(from_path)
        pv_decord.EncodedVideoDecord.get_clip = get_clip


def reference_video(path: Path, recorder: _Recorder) -> dict[str, np.ndarray]:
    recorder.frames, recorder.indices = [], []
    tensor = ib_data.load_and_transform_video_data([str(path)], "cpu")[0]  # (15, 3, 2, 224, 224)
    frames = np.stack(recorder.frames)
    distinct = sorted(set(recorder.indices))
    reader = decord.VideoReader(str(path))
    return {
        "tensor": tensor.numpy(),
        "frames_sub": _sub_filter(np.stack([frames[recorder.indices.index(i)] for i in distinct])),
        "frame_slots": np.array([distinct.index(i) for i in recorder.indices], dtype=np.int64),
        "frame_indices": np.array(recorder.indices, dtype=np.int64),
        "grid": tensor[:, :, :, GRID][:, :, :, :, GRID].numpy(),
        "clip_mean": tensor.double().mean(dim=(3, 4)).numpy(),
        "clip_std": tensor.double().std(dim=(3, 4)).numpy(),
        "fps": np.float64(reader.get_avg_fps()),
        "frame_count": np.int64(len(reader)),
    }


def _sub_filter(frames: np.ndarray) -> np.ndarray:
    """(k, H, W, 3) uint8 -> each byte minus its left neighbour, mod 256 (PNG's Sub filter)."""
    left = np.zeros_like(frames)
    left[:, :, 1:] = frames[:, :, :-1]
    return frames - left  # uint8 arithmetic wraps mod 256


def _pyav_load(path: str) -> tuple[torch.Tensor, int]:
    with av.open(path) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")
        planes = [p.to_ndarray() for f in container.decode(stream) for p in resampler.resample(f)]
        planes += [p.to_ndarray() for p in resampler.resample(None)]
        return torch.from_numpy(np.concatenate(planes, axis=1).astype(np.float32)), stream.rate


def reference_audio(path: Path) -> np.ndarray:
    ib_data.torchaudio.load = _pyav_load
    ib_data.ConstantClipsPerVideoSampler = OfficialConstantClipsPerVideoSampler
    return ib_data.load_and_transform_audio_data([str(path)], "cpu")[0].numpy()


def tiny_model() -> ImageBindModel:
    model = ImageBindModel(**reference_kwargs(TINY)).eval()
    model.load_state_dict(torch.load(TINY_STATE_DICT, weights_only=True), strict=True)
    return model


def embed(model: ImageBindModel, tensor: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model({"vision": torch.from_numpy(tensor)[None]})["vision"][0]  # (1, 15, ...) -> clip mean


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    packages = ("torch", "torchvision", "torchaudio", "imagebind-unofficial", "pytorchvideo", "decord", "av")
    return {p: version(p) for p in packages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reuse-samples", action="store_true", help="keep the committed sample videos")
    args = parser.parse_args()
    if not args.reuse_samples:
        make_samples()
    OUT.mkdir(parents=True, exist_ok=True)
    recorder = _Recorder()
    recorder.install()
    pypi_sampler = ib_data.ConstantClipsPerVideoSampler
    ib_data.ConstantClipsPerVideoSampler = OfficialConstantClipsPerVideoSampler
    model = tiny_model()
    arrays: dict[str, np.ndarray] = {}
    for name, spec in SPECS.items():
        stem = name.rsplit(".", 1)[0]
        out = reference_video(SAMPLES / name, recorder)
        out["embed_raw"] = embed(model, out.pop("tensor")).numpy()
        out["embed_unit"] = torch.nn.functional.normalize(torch.from_numpy(out["embed_raw"]), dim=-1).numpy()
        if spec.get("audio"):
            out["audio"] = reference_audio(SAMPLES / name)
            ib_data.ConstantClipsPerVideoSampler = OfficialConstantClipsPerVideoSampler
        arrays.update({f"{stem}__{key}": value for key, value in out.items()})
    ib_data.ConstantClipsPerVideoSampler = pypi_sampler
    np.savez_compressed(OUT / "reference.npz", **arrays)
    meta = {
        "generated_by": "tools/golden/make_video_fixtures.py",
        "seed": SEED,
        "reference_versions": _versions(),
        "samples": {name: {k: v for k, v in spec.items()} for name, spec in SPECS.items()},
        "display_rotation": {name: _display_rotation(SAMPLES / name) for name in SPECS},
        "decoded_frame_shapes": {
            name: list(arrays[f"{name.rsplit('.', 1)[0]}__frames_sub"].shape[1:]) for name in SPECS
        },
        "sample_bytes": {name: (SAMPLES / name).stat().st_size for name in SPECS},
        "adjustments": [
            "EncodedVideo.from_path: the sample_rate keyword dropped (PyPI pytorchvideo 0.1.5 rejects it)",
            "clip placement: the official pin's sampler, k * max(d - 2, 0) / 4",
            "rotation: none needed, decord applies the display matrix (see decoded_frame_shapes)",
            "audio track: torchaudio.load replaced by a PyAV loader; official sampler (3 clips)",
        ],
        "grid": GRID.tolist(),
    }
    (OUT / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    print("wrote", ", ".join(f"{p.name} ({p.stat().st_size // 1024} KiB)" for p in sorted(OUT.iterdir())))
    print("samples", ", ".join(f"{n} ({(SAMPLES / n).stat().st_size // 1024} KiB)" for n in SPECS))


if __name__ == "__main__":
    main()

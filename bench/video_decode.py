"""Video decode + preprocess cost (issue #17): flat with length, and per resolution.

Two series, each video made here with PyAV (libx264, ultrafast, a keyframe every 2 s, the
same moving content), then run through the cpu stage's video path
(`shared.imagebind.video.preprocess_video`: seek to 10 frames, scale, crop) in this process:

- **length**: the same content at 10 s, 10 min and 2 h (low resolution, so that encoding 2 h
  stays quick): decode + preprocess must stay flat, bounded by the keyframe interval;
- **resolution**: 10 s at 480p, 1080p and 4K: CPU ms per video;
- **audio track**: the same 44.1 kHz stereo AAC sound at 10 s, 10 min and 30 min beside a tiny
  picture: the track read by seeking to its 3 clips
  (`shared.imagebind.audio.preprocess_audio_track`) against decoding it whole
  (`preprocess_audio`, as audio uploads are).

Each case runs `--repeats` times; the median of wall and process CPU time is reported with
the frames decoded. Results: bench/results/video_decode_<date>.{json,md}.

    python bench/video_decode.py --repeats 5
    python bench/video_decode.py --only audio --repeats 3   # one series
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import host_info  # noqa: E402
from bench.report import write_report  # noqa: E402
from shared.imagebind.audio import preprocess_audio, preprocess_audio_track  # noqa: E402
from shared.imagebind.video import preprocess_video  # noqa: E402
from shared.media.video import VideoLimits  # noqa: E402
from tests.support.media import video_with_sound  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LIMITS = VideoLimits(
    max_duration_s=4 * 3600, max_pixels=36_000_000, max_fps=240, max_frames_decoded=3000, decode_budget_s=600
)


def make_video(seconds: float, fps: int, width: int, height: int, keyframe_s: float = 2.0) -> bytes:
    """A moving gradient (changes every frame, so the codec really codes motion)."""
    buf = io.BytesIO()
    keyint = max(1, round(keyframe_s * fps))
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0"}
        x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
        y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
        for i in range(round(seconds * fps)):
            shift = (i * 4) % 256
            plane = ((x + y / 2 + shift) % 256).astype(np.uint8)
            rgb = np.stack([plane, np.roll(plane, i % width, axis=1), 255 - plane], axis=-1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def measure(data: bytes, repeats: int) -> dict[str, Any]:
    walls, cpus, decoded = [], [], 0
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        prepared = preprocess_video(data, format="mp4", limits=LIMITS)
        cpus.append((time.process_time() - cpu) * 1000)
        walls.append((time.perf_counter() - wall) * 1000)
        decoded = prepared.frames.decoded
    return {
        "bytes": len(data),
        "wall_ms_median": round(statistics.median(walls), 1),
        "cpu_ms_median": round(statistics.median(cpus), 1),
        "wall_ms_all": [round(w, 1) for w in walls],
        "frames_decoded": decoded,
    }


def measure_track(data: bytes, repeats: int) -> dict[str, Any]:
    """CPU ms of the audio track by seeking and decoded whole (median of `repeats`)."""
    row: dict[str, Any] = {"bytes": len(data)}
    for name, run in (
        ("seek", lambda: preprocess_audio_track(data, format="mp4", max_duration_s=1e9)),
        ("whole", lambda: preprocess_audio(data, max_duration_s=1e9, format="mp4")),
    ):
        cpus = []
        for _ in range(repeats):
            cpu = time.process_time()
            run()
            cpus.append((time.process_time() - cpu) * 1000)
        row[f"{name}_cpu_ms_median"] = round(statistics.median(cpus), 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--long-s", type=float, default=7200.0, help="the longest video of the length series")
    parser.add_argument("--only", choices=("length", "resolution", "audio"), help="run one series")
    args = parser.parse_args()
    report: dict[str, Any] = {"host": host_info(), "repeats": args.repeats, "length": {}, "resolution": {}, "audio": {}}
    started = time.perf_counter()
    if args.only in (None, "audio"):
        for label, seconds in (("10 s", 10.0), ("10 min", 600.0), ("30 min", 1800.0)):
            data = video_with_sound(seconds=seconds, rate_hz=44100, layout="stereo")
            report["audio"][label] = {"seconds": seconds, **measure_track(data, args.repeats)}
    if args.only not in (None, "length"):
        series: tuple[tuple[str, float], ...] = ()
    else:
        series = (("10 s", 10.0), ("10 min", 600.0), (f"{args.long_s / 3600:g} h", args.long_s))
    for label, seconds in series:
        t0 = time.perf_counter()
        data = make_video(seconds, fps=10, width=160, height=90)
        made_s = time.perf_counter() - t0
        report["length"][label] = {"seconds": seconds, "fps": 10, "size": "160x90", "encode_s": round(made_s, 1)}
        report["length"][label].update(measure(data, args.repeats))
    resolutions = (("480p", (854, 480)), ("1080p", (1920, 1080)), ("4K", (3840, 2160)))
    for label, (width, height) in resolutions if args.only in (None, "resolution") else ():
        data = make_video(10.0, fps=30, width=width, height=height)
        report["resolution"][label] = {"seconds": 10, "fps": 30, "size": f"{width}x{height}"}
        report["resolution"][label].update(measure(data, args.repeats))
    report["host"]["load_avg_at_end"] = [round(x, 2) for x in __import__("psutil").getloadavg()]
    report["total_s"] = round(time.perf_counter() - started, 1)
    write_report(RESULTS / f"video_decode_{dt.date.today().isoformat()}", report, markdown(report))


def markdown(report: dict[str, Any]) -> str:
    host = report["host"]
    lines = [
        "# Video decode + preprocess cost (bench/video_decode.py)",
        "",
        f"{host['cpu']}, {host['cores']} cores, load average {host['load_avg_at_start']} at start, "
        f"{host['load_avg_at_end']} at end (other helpers' jobs share the machine). One process, "
        f"median of {report['repeats']} runs; keyframe every 2 s; libx264 ultrafast.",
    ]
    if report["length"]:
        lines += ["", "## Same content, growing length (160x90, 10 fps)", ""]
        lines += ["| length | file | wall ms | CPU ms | frames decoded |", "|---|---|---|---|---|"]
    for label, row in report["length"].items():
        lines.append(
            f"| {label} | {row['bytes'] / 2**20:.1f} MB | {row['wall_ms_median']} | {row['cpu_ms_median']} "
            f"| {row['frames_decoded']} |"
        )
    if report["resolution"]:
        lines += ["", "## Resolution (10 s, 30 fps)", "", "| video | file | wall ms | CPU ms | frames decoded |"]
        lines.append("|---|---|---|---|---|")
    for label, row in report["resolution"].items():
        lines.append(
            f"| {label} {row['size']} | {row['bytes'] / 2**20:.1f} MB | {row['wall_ms_median']} "
            f"| {row['cpu_ms_median']} | {row['frames_decoded']} |"
        )
    if report.get("audio"):
        lines += ["", "## Audio track (44.1 kHz stereo AAC): read by seeking vs decoded whole", ""]
        lines += ["| length | file | seek CPU ms | whole CPU ms |", "|---|---|---|---|"]
        for label, row in report["audio"].items():
            size = f"{row['bytes'] / 2**20:.1f} MB"
            lines.append(f"| {label} | {size} | {row['seek_cpu_ms_median']} | {row['whole_cpu_ms_median']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

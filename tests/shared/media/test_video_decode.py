"""Decoding the frames ImageBind samples from real videos made with PyAV: the right frames,
seeking instead of decoding the whole file, rotation, pixel formats, and every hostile video
ending as a `PermanentError` with its own reason."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from shared.errors import PermanentError
from shared.media.video import VideoLimits, decode_frames, has_video_stream
from tests.support.media import frame_level, video_bytes

LIMITS = VideoLimits(
    max_duration_s=3600, max_pixels=40_000_000, max_fps=240, max_frames_decoded=3000, decode_budget_s=60
)


def _first_and_last(info) -> list[int]:  # type: ignore[no-untyped-def]
    return [0, info.frame_count - 1]


def _level(frame: np.ndarray) -> int:
    return int(frame[frame.shape[0] // 2, frame.shape[1] // 2, 0])


def test_the_named_frames_are_decoded_in_any_order() -> None:
    data = video_bytes(seconds=4, fps=10)
    decoded = decode_frames(data, format="mp4", limits=LIMITS, pick=lambda info: [37, 3, 20, 3])
    assert sorted(decoded.frames) == [3, 20, 37]
    for index, frame in decoded.frames.items():
        assert frame.dtype == np.uint8 and frame.shape == (48, 64, 3)
        assert abs(_level(frame) - frame_level(index)) <= 3
        assert decoded.times_s[index] == pytest.approx(index / 10)
    assert decoded.info.frame_count == 40 and decoded.info.fps == 10 and decoded.info.duration_s == 4


def test_a_long_video_is_sought_not_decoded_whole() -> None:
    # 5 minutes at 10 fps with a keyframe every 20 frames: 3000 frames in the file
    data = video_bytes(seconds=300, fps=10, gop=20)
    picks = [0, 19, 740, 759, 1490, 1509, 2240, 2259, 2980, 2999]
    decoded = decode_frames(data, format="mp4", limits=LIMITS, pick=lambda info: picks)
    assert decoded.info.frame_count == 3000
    for index in picks:
        assert abs(_level(decoded.frames[index]) - frame_level(index)) <= 3, index
    # each of 5 seeks decodes at most a keyframe interval plus the clip: far below 3000
    assert decoded.decoded <= 5 * (20 + 20 + 2)


@pytest.mark.parametrize(
    ("codec", "container", "fmt", "pix_fmt"),
    [
        ("libx264", "mp4", "mp4", "yuv420p10le"),
        ("libx264", "mp4", "mp4", "yuv444p"),
        ("libvpx-vp9", "webm", "webm", "yuv420p"),
    ],
)
def test_ten_bit_444_and_vp9_decode_to_8_bit_rgb(codec: str, container: str, fmt: str, pix_fmt: str) -> None:
    data = video_bytes(seconds=2, fps=10, codec=codec, container=container, pix_fmt=pix_fmt)
    decoded = decode_frames(data, format=fmt, limits=LIMITS, pick=_first_and_last)
    last = decoded.info.frame_count - 1
    assert abs(_level(decoded.frames[last]) - frame_level(last)) <= 4
    assert decoded.frames[0].dtype == np.uint8


def test_odd_frame_sizes_decode() -> None:
    data = video_bytes(seconds=1, fps=10, width=37, height=23, pix_fmt="yuv444p")
    decoded = decode_frames(data, format="mp4", limits=LIMITS, pick=_first_and_last)
    assert decoded.frames[0].shape == (23, 37, 3)


@pytest.mark.parametrize(("rotation", "corner"), [(-90, (0, -1)), (90, (-1, 0)), (180, (-1, -1))])
def test_the_display_matrix_is_applied(rotation: int, corner: tuple[int, int]) -> None:
    data = video_bytes(seconds=1, fps=10, width=64, height=48, rotation=rotation)
    frame = decode_frames(data, format="mp4", limits=LIMITS, pick=lambda info: [0]).frames[0]
    assert frame.shape == ((64, 48, 3) if rotation % 180 else (48, 64, 3))
    # the white square is coded top-left: after the rotation it sits in `corner`
    row = 2 if corner[0] == 0 else frame.shape[0] - 3
    col = 2 if corner[1] == 0 else frame.shape[1] - 3
    assert frame[row, col, 0] > 240
    assert frame[2, 2, 0] < 60


def test_a_variable_frame_rate_video_gives_the_frame_shown_at_each_time() -> None:
    # 10 frames at 0.0..0.9 s, then 10 at 2.0..2.9 s (a pause): frame index i means the frame
    # shown at i / average fps (the reference would take the i-th stored frame)
    times = [t / 100 for t in [*range(0, 100, 10), *range(200, 300, 10)]]
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 100)
        for i, pts in enumerate([*range(0, 100, 10), *range(200, 300, 10)]):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), frame_level(i), np.uint8), format="rgb24")
            frame.pts = pts
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    decoded = decode_frames(buf.getvalue(), format="mp4", limits=LIMITS, pick=lambda info: [0, 5, 12])
    fps = decoded.info.fps
    for index in (5, 12):
        shown = next(i for i, t in enumerate(times) if t >= index / fps - 0.5 / fps)
        assert decoded.times_s[index] == pytest.approx(times[shown])
        assert abs(_level(decoded.frames[index]) - frame_level(shown)) <= 3


def test_audio_only_mp4_has_no_video_stream_and_a_video_with_8_audio_tracks_decodes() -> None:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        track = out.add_stream("aac", rate=16000)
        track.layout = "mono"
        for _ in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
            frame.sample_rate = 16000
            for packet in track.encode(frame):
                out.mux(packet)
        for packet in track.encode():
            out.mux(packet)
    assert not has_video_stream(buf.getvalue(), "mp4")
    many = video_bytes(seconds=2, fps=10, audio_streams=8)
    assert has_video_stream(many, "mp4")
    decoded = decode_frames(many, format="mp4", limits=LIMITS, pick=_first_and_last)
    assert decoded.info.has_audio and len(decoded.frames) == 2


def _reason(data: bytes, limits: VideoLimits = LIMITS, fmt: str = "mp4") -> str:
    with pytest.raises(PermanentError) as caught:
        decode_frames(data, format=fmt, limits=limits, pick=_first_and_last)
    assert caught.value.message
    return caught.value.reason


def test_limits_end_in_their_own_reasons() -> None:
    small = video_bytes(seconds=3, fps=10)
    assert _reason(small, VideoLimits(2.0, 40_000_000, 240, 3000, 60)) == "video_too_long"
    assert _reason(small, VideoLimits(3600, 64 * 48 - 1, 240, 3000, 60)) == "video_too_large"
    assert _reason(small, VideoLimits(3600, 40_000_000, 240, 3000, 1e-9)) == "video_decode_timeout"
    thousand_fps = video_bytes(frames=20, fps=1000)
    assert _reason(thousand_fps) == "video_frame_rate"
    # one keyframe for 60 s: reaching the last frame decodes every frame
    sparse = video_bytes(
        seconds=60, fps=10, gop=1000, options={"x264-params": "keyint=1000:min-keyint=1000:scenecut=0"}
    )
    assert _reason(sparse, VideoLimits(3600, 40_000_000, 240, 200, 60)) == "video_decode_too_costly"


def test_damaged_containers_end_as_corrupt_or_truncated() -> None:
    data = video_bytes(seconds=3, fps=10)  # moov at the end (no faststart)
    assert _reason(data[: len(data) // 2]) == "corrupt_video"  # moov atom missing
    assert _reason(b"") == "empty_file"
    assert _reason(data[:200]) == "corrupt_video"
    webm = video_bytes(seconds=6, fps=10, codec="libvpx-vp9", container="webm")
    # a WebM cut short: its header promises 6 s, the frames end early
    assert _reason(webm[: len(webm) // 3], fmt="webm") in ("truncated_video", "corrupt_video")


def test_a_video_stream_without_frames_is_empty() -> None:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for packet in stream.encode():
            out.mux(packet)
    data = buf.getvalue()
    if has_video_stream(data, "mp4"):
        assert _reason(data) in ("empty_video", "corrupt_video")


def test_corrupt_keyframes_never_crash() -> None:
    data = bytearray(video_bytes(seconds=3, fps=10, gop=10))
    rng = np.random.default_rng(7)
    for offset in rng.integers(64, len(data) - 2000, 200):
        data[offset] ^= 0xFF
    try:
        decoded = decode_frames(bytes(data), format="mp4", limits=LIMITS, pick=_first_and_last)
    except PermanentError as exc:
        assert exc.reason.startswith(("corrupt", "truncated", "empty"))
    else:
        assert all(frame.dtype == np.uint8 for frame in decoded.frames.values())


def test_a_keyframe_between_two_wanted_frames_is_sought_to_instead_of_decoding_on() -> None:
    data = video_bytes(
        seconds=4, fps=10, gop=5, options={"x264-params": "keyint=5:min-keyint=5:scenecut=0"}
    )  # a keyframe every 0.5 s
    decoded = decode_frames(data, format="mp4", limits=LIMITS, pick=lambda info: [0, 19])
    assert abs(_level(decoded.frames[19]) - frame_level(19)) <= 3
    # frame 0, then a seek to the keyframe at frame 15 and 15..19: not all 20
    assert decoded.decoded <= 8


def _with_header_duration(data: bytes, box: bytes, seconds: float) -> bytes:
    """`data` (an MP4) whose `box` (mvhd or mdhd, version 0) claims `seconds`."""
    at = data.index(box) + 4  # version/flags, creation, modification, timescale, duration
    assert data[at] == 0, "version 0 header expected"
    timescale = int.from_bytes(data[at + 12 : at + 16], "big")
    claimed = int(seconds * timescale).to_bytes(4, "big")
    return data[: at + 16] + claimed + data[at + 20 :]


def test_a_ten_hour_header_over_one_second_of_frames_costs_one_second() -> None:
    # FFmpeg takes an MP4's duration from its sample tables, not the header boxes: the lie
    # changes nothing (no 10-hour clip placement, no seek past the data)
    data = video_bytes(seconds=1, fps=10)
    for box in (b"mvhd", b"mdhd"):
        data = _with_header_duration(data, box, 10 * 3600)
    decoded = decode_frames(data, format="mp4", limits=LIMITS, pick=_first_and_last)
    assert decoded.info.duration_s == pytest.approx(1.0) and decoded.decoded <= 10
    assert abs(_level(decoded.frames[9]) - frame_level(9)) <= 3

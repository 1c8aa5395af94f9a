"""Video upload bytes -> the few RGB frames ImageBind looks at, with PyAV, seeking to each.

- **Only what is needed is decoded.** The caller names frame indices (ImageBind: 10 frames,
  two per clip); for each, the container is sought to the nearest keyframe at or before the
  frame's time and decoded forward to it, so the cost is bounded by the keyframe interval,
  not the file's length. A frame is reached by decoding on from the previous one unless
  the container's index shows a keyframe in between (then a seek skips more); without an
  index, frames within `FORWARD_DECODE_S` are decoded on to.
- **Frame index -> time** is ``i / fps`` (``fps`` = the stream's average rate, as decord
  reports it to the reference): exact for constant frame rate. For variable frame rate the
  reference takes the i-th *stored* frame, we the frame shown at i / fps, which is what the
  clip's time window means; the two differ only where the rate varies.
- **The frame count** is the container's (MP4/MOV store it), otherwise duration × rate
  (WebM/Matroska do not store one; decord counts packets, which needs a pass over the file).
- **Rotation** (the display matrix: phone videos) is applied to the decoded frames, as
  EXIF orientation is applied to photos; mirrored matrices are not (rare, and the mirror
  changes no embedding meaningfully). The reference (decord) ignores rotation.
- **Every pixel format FFmpeg decodes** (10-bit, 4:4:4, odd sizes) is converted to 8-bit
  RGB by FFmpeg's swscale.
- **Limits** (`VideoLimits`), each a `PermanentError` with its own reason, checked before
  decoding where the headers tell and while decoding where they might lie: duration, pixels
  per frame, frame rate, frames decoded, decode time.
- The demuxer is always named (from sniffing): FFmpeg never probes arbitrary bytes.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import av
import numpy as np

from shared.config import LimitSettings
from shared.errors import CorruptMedia, LimitExceeded, UnsupportedMedia
from shared.media.sniff import FORMATS, VIDEO_CONTAINERS

__all__ = [
    "VIDEO_CONTAINERS",
    "DecodedFrames",
    "VideoInfo",
    "VideoLimits",
    "container_stream_kinds",
    "decode_frames",
    "has_video_stream",
    "poster_frame",
    "video_limits",
]
# A frame this close after the last decoded one is reached by decoding on rather than
# seeking (covers the second frame of a 2 s clip).
FORWARD_DECODE_S = 2.5
# Index entries walked back looking for a keyframe before giving up on the index.
MAX_INDEX_WALK = 10_000
# How far the last frame of a stream may lie before a wanted time before the file counts as
# shorter than its header says (frames are shown until the next one: a frame a little
# before the wanted time *is* the frame at that time).
_END_SLACK_S = 1.0


@dataclass(frozen=True, slots=True)
class VideoLimits:
    """What one video may cost. `max_pixels`: coded width × height of a frame."""

    max_duration_s: float
    max_pixels: int
    max_fps: float
    max_frames_decoded: int
    decode_budget_s: float


def video_limits(limits: LimitSettings) -> VideoLimits:
    """The deployment's video limits (``OMNIBIND_LIMITS__*VIDEO*``)."""
    return VideoLimits(
        max_duration_s=limits.max_video_s,
        max_pixels=limits.max_video_pixels,
        max_fps=limits.max_video_fps,
        max_frames_decoded=limits.max_video_frames_decoded,
        decode_budget_s=limits.video_decode_budget_s,
    )


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """The first video stream as the clip sampler sees it.

    `width`/`height` are the coded frame size (before rotation); `frame_count` / `fps` =
    `duration_s`, as the reference computes it.
    """

    width: int
    height: int
    fps: float
    frame_count: int
    has_audio: bool
    format: str

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps


@dataclass(frozen=True, slots=True)
class DecodedFrames:
    """Frames by index: uint8 RGB (height, width, 3), rotated for display; `times_s` the
    presentation time of each frame taken; `decoded` how many frames were decoded in all."""

    info: VideoInfo
    frames: dict[int, np.ndarray]
    times_s: dict[int, float]
    decoded: int


def has_video_stream(data: bytes, format: str) -> bool:
    """Whether the container holds a video stream that is not a cover picture.

    False for formats that never carry video and for containers FFmpeg cannot open (the
    audio path then reports what is wrong with them).
    """
    if format not in VIDEO_CONTAINERS:
        return False
    try:
        with _open(data, format) as container:
            return _video_stream(container) is not None
    except CorruptMedia:
        return False


# ISO base media major brands that declare an audio-only file (iTunes audio, audio books,
# Flash audio): such a file that FFmpeg cannot open is reported as audio.
_AUDIO_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "})


def container_stream_kinds(data: bytes, format: str) -> frozenset[str]:
    """The kinds of stream a container holds: ``video`` (not counting cover pictures),
    ``audio``, ``subtitle``, ``data``, ``attachment``.

    Raises `CorruptMedia` when FFmpeg cannot open it, with a video reason unless the file
    says it is audio only (an MP4 whose major brand is an audio brand: ``corrupt_audio``):
    ``truncated_video`` for an MP4 without its index (the ``moov`` atom, written last by
    most encoders, so a cut upload loses it), ``corrupt_video`` otherwise.
    """
    try:
        with _open(data, format) as container:
            kinds: set[str] = {stream.type for stream in container.streams if stream.type != "video"}
            if _video_stream(container) is not None:
                kinds.add("video")
            return frozenset(kinds)
    except CorruptMedia as exc:
        if format == "mp4" and data[8:12] in _AUDIO_BRANDS:
            raise CorruptMedia(exc.message, reason="corrupt_audio") from exc
        if format == "mp4" and data and b"moov" not in data:
            raise CorruptMedia(
                f"{exc.message} (the index, the moov atom, is missing: the file was cut before its end)",
                reason="truncated_video",
            ) from exc
        raise


def decode_frames(
    data: bytes, *, format: str, limits: VideoLimits, pick: Callable[[VideoInfo], Sequence[int]]
) -> DecodedFrames:
    """Decode the frames `pick(info)` names (indices into the stream's frames, in any order).

    Raises `LimitExceeded` (``video_too_long``, ``video_too_large``, ``video_frame_rate``,
    ``video_decode_too_costly``, ``video_decode_timeout``), `UnsupportedMedia`
    (``no_video_stream``, ``unsupported_codec``), `CorruptMedia` (``corrupt_video``,
    ``empty_video``, ``truncated_video``).
    """
    started = time.monotonic()
    with _open(data, format) as container:
        stream = _video_stream(container)
        if stream is None:
            raise UnsupportedMedia(f"the {format} file has no video stream", reason="no_video_stream")
        info = _probe(container, stream, format, limits)
        wanted = sorted({int(i) for i in pick(info)})
        reader = _FrameReader(container, stream, info, limits, started)
        frames: dict[int, np.ndarray] = {}
        times: dict[int, float] = {}
        for index in wanted:
            frame, shown_s = reader.frame_at(min(index, info.frame_count - 1) / info.fps)
            # The display matrix travels on each decoded frame (FFmpeg copies the stream's).
            frames[index] = rotate(frame.to_ndarray(format="rgb24"), round(frame.rotation))
            times[index] = shown_s
    return DecodedFrames(info, frames, times, reader.decoded)


def poster_frame(data: bytes, *, format: str, limits: VideoLimits) -> np.ndarray:
    """The frame a video's poster shows: the middle one (the first is often black or a
    title), uint8 RGB rotated for display. Raises what `decode_frames` raises."""
    decoded = decode_frames(data, format=format, limits=limits, pick=lambda info: [info.frame_count // 2])
    return next(iter(decoded.frames.values()))


def rotate(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """(H, W, 3) as displayed under a counter-clockwise `rotation` in degrees (FFmpeg's
    ``av_display_rotation_get``), rounded to a quarter turn."""
    quarter_turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=quarter_turns)) if quarter_turns else rgb


def _open(data: bytes, format: str) -> av.container.InputContainer:
    info = FORMATS.get(format)
    if info is None or info.ffmpeg_demuxer is None or format not in VIDEO_CONTAINERS:
        raise UnsupportedMedia(f"{format} content is not a video container", reason="unsupported_format")
    if not data:
        raise CorruptMedia("the file is empty", reason="empty_file")
    try:
        return av.open(io.BytesIO(data), mode="r", format=info.ffmpeg_demuxer)
    except (av.FFmpegError, ValueError) as exc:
        raise CorruptMedia(f"cannot read the {format} container: {exc}", reason="corrupt_video") from exc


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    for stream in container.streams.video:
        # A cover picture of a music file is a one-frame "video" stream marked attached_pic.
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _probe(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, format: str, limits: VideoLimits
) -> VideoInfo:
    context = stream.codec_context
    if context is None:
        raise UnsupportedMedia(f"no decoder for the video codec of this {format} file", reason="unsupported_codec")
    width, height = int(context.width or 0), int(context.height or 0)
    if width <= 0 or height <= 0:
        raise CorruptMedia(f"the {format} video stream declares no frame size", reason="corrupt_video")
    if width * height > limits.max_pixels:
        raise LimitExceeded(
            f"video frames are {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}",
            reason="video_too_large",
        )
    fps = _frame_rate(stream)
    if fps > limits.max_fps:
        raise LimitExceeded(
            f"video runs at {fps:g} frames per second; the limit is {limits.max_fps:g}", reason="video_frame_rate"
        )
    duration_s = _declared_duration_s(container, stream)
    if duration_s is not None and duration_s > limits.max_duration_s:
        raise LimitExceeded(
            f"video lasts {duration_s:.1f} s; the limit is {limits.max_duration_s:g} s", reason="video_too_long"
        )
    count = int(stream.frames or 0)
    if count <= 0:
        count = max(1, round((duration_s or 0.0) * fps))
    if count / fps > limits.max_duration_s:
        raise LimitExceeded(
            f"video has {count} frames at {fps:g} fps; the limit is {limits.max_duration_s:g} s",
            reason="video_too_long",
        )
    return VideoInfo(width, height, fps, count, bool(container.streams.audio), format)


def _frame_rate(stream: av.video.stream.VideoStream) -> float:
    """The average frame rate (what decord gives the reference), else FFmpeg's guess."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    raise CorruptMedia("the video stream declares no frame rate", reason="corrupt_video")


def _declared_duration_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


class _FrameReader:
    """Finds the frame shown at a time: seek (or decode on) and decode forward, counting
    decoded frames and time against the limits."""

    def __init__(
        self,
        container: av.container.InputContainer,
        stream: av.video.stream.VideoStream,
        info: VideoInfo,
        limits: VideoLimits,
        started: float,
    ) -> None:
        self._container = container
        self._stream = stream
        self._info = info
        self._limits = limits
        self._started = started
        self._time_base = float(stream.time_base) if stream.time_base is not None else 1.0 / info.fps
        self._start_s = (stream.start_time or 0) * self._time_base
        self._frames: Iterator[av.VideoFrame] | None = None
        self._current: tuple[av.VideoFrame, float] | None = None
        self._exhausted = False
        self.decoded = 0

    def frame_at(self, target_s: float) -> tuple[av.VideoFrame, float]:
        """The frame shown at `target_s` (seconds from the stream's start) and its time."""
        half_frame = 0.5 / self._info.fps
        current = self._current
        if (
            self._frames is None
            or current is None
            or target_s < current[1] - half_frame
            or self._seek_pays(current[1], target_s)
        ):
            self._seek(target_s)
            current = None
        while (current is None or current[1] < target_s - half_frame) and not self._exhausted:
            following = self._next()
            if following is None:
                break
            current = following
        if current is None:
            raise CorruptMedia(
                f"no video frame decodes at or after {target_s:.2f} s",
                reason="empty_video" if target_s == 0 else "truncated_video",
            )
        if current[1] < target_s - max(_END_SLACK_S, 2 / self._info.fps):
            raise CorruptMedia(
                f"the video's headers promise {self._info.duration_s:.2f} s but its frames end at {current[1]:.2f} s: "
                "it is truncated or damaged",
                reason="truncated_video",
            )
        self._current = current
        return current

    def _seek_pays(self, current_s: float, target_s: float) -> bool:
        """Whether seeking reaches `target_s` with less decoding than going on from
        `current_s`: when a keyframe lies between them (the container's index says; MP4 has
        every sample, Matroska its cues). Without an index: when the target is more than
        `FORWARD_DECODE_S` ahead."""
        keyframe_s = self._keyframe_at_or_before(target_s)
        if keyframe_s is None:
            return target_s - current_s > FORWARD_DECODE_S
        return keyframe_s > current_s + 0.5 / self._info.fps

    def _keyframe_at_or_before(self, target_s: float) -> float | None:
        """Time of the last indexed keyframe at or before `target_s` (decode timestamps, a
        frame or two before the shown ones: good enough to choose), None without an index.
        A binary search plus a walk back over at most one keyframe interval: no pass over
        the index of a long file."""
        entries = self._stream.index_entries
        count = len(entries)
        if count == 0:
            return None
        ticks = (target_s + self._start_s) / self._time_base
        low, high = 0, count
        while low < high:  # the first entry after `ticks`
            middle = (low + high) // 2
            if entries[middle].timestamp <= ticks:
                low = middle + 1
            else:
                high = middle
        index, walked = low - 1, 0
        while index >= 0 and not entries[index].is_keyframe and walked < MAX_INDEX_WALK:
            index, walked = index - 1, walked + 1
        if index < 0 or walked >= MAX_INDEX_WALK:
            return None
        return float(entries[index].timestamp * self._time_base - self._start_s)

    def _seek(self, target_s: float) -> None:
        offset = int((target_s + self._start_s) / self._time_base)
        try:
            self._container.seek(offset, stream=self._stream, backward=True, any_frame=False)
        except av.FFmpegError as exc:
            # A seek can fail on files without an index; decoding from the start still works
            # (and the frame limit bounds its cost).
            if target_s > 0:
                raise CorruptMedia(f"cannot seek in the video: {exc}", reason="corrupt_video") from exc
        self._frames = self._container.decode(self._stream)
        self._exhausted = False
        self._current = None

    def _next(self) -> tuple[av.VideoFrame, float] | None:
        assert self._frames is not None
        try:
            frame = next(self._frames, None)
        except av.error.DecoderNotFoundError as exc:
            raise UnsupportedMedia(f"no decoder for this video's codec: {exc}", reason="unsupported_codec") from exc
        except (av.FFmpegError, ValueError) as exc:
            raise CorruptMedia(f"cannot decode the video: {exc}", reason="corrupt_video") from exc
        if frame is None:
            self._exhausted = True
            return None
        self.decoded += 1
        self._check_budget()
        if frame.pts is None:
            previous = self._current[1] if self._current is not None else -1 / self._info.fps
            return frame, previous + 1 / self._info.fps
        return frame, frame.pts * self._time_base - self._start_s

    def _check_budget(self) -> None:
        limits = self._limits
        if self.decoded > limits.max_frames_decoded:
            raise LimitExceeded(
                f"reaching the sampled frames took more than {limits.max_frames_decoded} decoded frames "
                "(keyframes too far apart)",
                reason="video_decode_too_costly",
            )
        elapsed_s = time.monotonic() - self._started
        if elapsed_s > limits.decode_budget_s:
            raise LimitExceeded(
                f"decoding the sampled frames took more than {limits.decode_budget_s:g} s",
                reason="video_decode_timeout",
            )

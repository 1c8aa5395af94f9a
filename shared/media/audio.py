"""Audio upload bytes -> float32 samples, with PyAV (FFmpeg bundled in the wheel).

- The demuxer is always named (from sniffing): FFmpeg never probes arbitrary bytes, so a
  playlist-like upload cannot make it open other files or URLs.
- The first audio stream is decoded; a video container without one is refused.
- Duration limits hold twice: a declared duration well over the limit is refused before
  decoding, and decoding stops as soon as the decoded samples pass the limit (declared
  durations can lie).
- Samples are converted to float32 by FFmpeg (int16 / 32768, as soundfile and torchaudio
  do) and reduced to what ImageBind's reference uses: channel 0, plus the per-sample mean
  over all channels for multichannel audio (see `shared.imagebind.audio`).
- Truncated or damaged files end as `CorruptMedia`: a decoder error, or fewer samples than
  a reliable declared duration promises (WAV header, FLAC, Ogg, MP4, Matroska).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import av
import numpy as np

from shared.errors import CorruptMedia, LimitExceeded, UnsupportedMedia
from shared.events import Modality
from shared.media.sniff import FORMATS, sniff

# A declared duration is refused before decoding only this far over the limit: MP3 and
# ADTS durations are estimates from the bitrate.
DECLARED_DURATION_SLACK = 1.10
# Formats whose declared duration is exact (a header count, an index, a last timestamp),
# so falling short of it means the file was cut or damaged.
_EXACT_DURATION_FORMATS = frozenset({"wav", "flac", "ogg", "mp4", "webm", "matroska"})
_TRUNCATION_TOLERANCE = 0.02
_TRUNCATION_TOLERANCE_S = 0.05
# Windowed decoding (`decode_audio_windows`): a seek goes this much before the first sample
# wanted, and the stream's decoded length is found by decoding this much before its end.
_SEEK_EARLY_S = 0.25
_TAIL_S = 2.0


@dataclass(frozen=True)
class DecodedAudio:
    """Decoded samples as the reference preprocessing needs them.

    `channel0`: float32 (samples,); `channel_mean`: float32 (samples,) mean over all
    channels, None for mono; `channels`: how many the stream had.
    """

    channel0: np.ndarray
    channel_mean: np.ndarray | None
    sample_rate_hz: int
    channels: int

    @property
    def duration_s(self) -> float:
        return self.channel0.shape[0] / self.sample_rate_hz


def decode_audio(
    data: bytes,
    *,
    max_duration_s: float,
    format: str | None = None,
    output_rate_hz: Callable[[int], int] | None = None,
) -> DecodedAudio:
    """Decode the first audio stream of an upload.

    Takes the raw bytes, the longest duration accepted, optionally the sniffed format name
    (sniffed here otherwise) and a function from the stream's sample rate to the rate to
    deliver (FFmpeg converts when they differ; default: keep the stream's rate). Returns
    `DecodedAudio`.

    Raises `LimitExceeded` (``audio_too_long``); `UnsupportedMedia` (``unsupported_format``
    for non-audio content, ``no_audio_stream``, ``unsupported_codec``); `CorruptMedia`
    (``empty_file``, ``corrupt_audio`` when FFmpeg cannot read it, ``truncated_audio``,
    ``empty_audio`` when nothing decodes).
    """
    if format is None:
        format = sniff(data).format
    with _open_audio(data, format) as container:
        stream = _audio_stream(container, format)
        declared_s = _declared_duration_s(container, stream)
        if declared_s is not None and declared_s > max_duration_s * DECLARED_DURATION_SLACK:
            raise LimitExceeded(
                f"audio lasts {declared_s:.1f} s; the limit is {max_duration_s:g} s", reason="audio_too_long"
            )
        decoded = _decode_stream(
            container, stream, max_duration_s=max_duration_s, format=format, output_rate_hz=output_rate_hz
        )
    if decoded.channel0.shape[0] == 0:
        raise CorruptMedia(f"no audio samples could be decoded from the {format} file", reason="empty_audio")
    exact_s = wav_declared_duration_s(data) if format == "wav" else declared_s
    if format in _EXACT_DURATION_FORMATS and exact_s is not None:
        check_not_truncated(decoded.duration_s, exact_s, format)
    return decoded


def _open_audio(data: bytes, format: str) -> av.container.InputContainer:
    """The container, opened with the sniffed format's demuxer (FFmpeg never probes)."""
    info = FORMATS[format]
    if info.modality is not Modality.AUDIO or info.ffmpeg_demuxer is None:
        raise UnsupportedMedia(f"{format} content is not audio", reason="unsupported_format")
    try:
        return av.open(io.BytesIO(data), mode="r", format=info.ffmpeg_demuxer)
    except av.FFmpegError as exc:
        raise CorruptMedia(f"cannot read the {format} container: {exc}", reason="corrupt_audio") from exc


def _audio_stream(container: av.container.InputContainer, format: str) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise UnsupportedMedia(f"the {format} file has no audio stream (streams: {kinds})", reason="no_audio_stream")
    stream = container.streams.audio[0]
    if stream.codec_context is None:
        raise UnsupportedMedia(f"no decoder for the audio codec of this {format} file", reason="unsupported_codec")
    return stream


def _declared_duration_s(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def wav_declared_duration_s(data: bytes) -> float | None:
    """Duration that a RIFF/WAVE header's ``data`` chunk size promises (FFmpeg reports the
    size of what is there instead, which hides truncation). None when the header does not
    say (streaming writers put 0 or 0xFFFFFFFF, RF64 keeps it elsewhere)."""
    if data[:4] != b"RIFF":
        return None
    offset, byte_rate = 12, 0
    while offset + 8 <= len(data):
        chunk_id, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
        if chunk_id == b"fmt " and size >= 12:
            byte_rate = int.from_bytes(data[offset + 16 : offset + 20], "little")
        elif chunk_id == b"data":
            return size / byte_rate if byte_rate and size not in (0, 0xFFFFFFFF) else None
        offset += 8 + size + (size & 1)  # chunks are word-aligned
    return None


def check_not_truncated(decoded_s: float, declared_s: float, format: str) -> None:
    if decoded_s < declared_s * (1 - _TRUNCATION_TOLERANCE) - _TRUNCATION_TOLERANCE_S:
        raise CorruptMedia(
            f"the {format} file promises {declared_s:.2f} s of audio but only {decoded_s:.2f} s decode: "
            "it is truncated or damaged",
            reason="truncated_audio",
        )


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    *,
    max_duration_s: float,
    format: str,
    output_rate_hz: Callable[[int], int] | None,
) -> DecodedAudio:
    collector = _PcmCollector(max_duration_s, output_rate_hz)
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                collector.add(frame)
        collector.drain()
    except av.error.DecoderNotFoundError as exc:
        raise UnsupportedMedia(f"no decoder for this {format} file's codec: {exc}", reason="unsupported_codec") from exc
    except (av.FFmpegError, ValueError) as exc:
        # ValueError: PyAV's resampler refuses frames whose layout or rate changes mid-stream.
        raise CorruptMedia(f"cannot decode the {format} audio: {exc}", reason="corrupt_audio") from exc
    return collector.result(fallback_rate_hz=stream.rate or 1)


class _PcmCollector:
    """Converts decoded frames to float32 planar at the chosen rate (FFmpeg's resampler,
    set up from the first frame) and keeps channel 0 and the channel mean, counting samples
    against the duration limit as they arrive."""

    def __init__(self, max_duration_s: float, output_rate_hz: Callable[[int], int] | None) -> None:
        self._max_duration_s = max_duration_s
        self._output_rate_hz = output_rate_hz
        self._resampler: av.AudioResampler | None = None
        self._rate_hz = 0
        self._channels = 1
        self._max_samples = 0
        self._samples = 0
        self._first: list[np.ndarray] = []
        self._means: list[np.ndarray] = []

    def add(self, frame: av.AudioFrame, keep: tuple[int, int] | None = None) -> None:
        """Convert `frame` and keep its samples (only [keep[0], keep[1]) of them when given:
        the output rate must then be the frame's own, so samples map one to one)."""
        if self._resampler is None:
            self._rate_hz = self._output_rate_hz(frame.sample_rate) if self._output_rate_hz else frame.sample_rate
            self._resampler = av.AudioResampler(format="fltp", rate=self._rate_hz)
            self._channels = frame.layout.nb_channels
            self._max_samples = int(self._max_duration_s * self._rate_hz)
        planes: list[np.ndarray] = [planar.to_ndarray() for planar in self._resampler.resample(frame)]
        if keep is not None and planes:
            planes = [np.concatenate(planes, axis=1)[:, keep[0] : keep[1]]]
        for plane in planes:
            self._keep(plane)

    @property
    def empty(self) -> bool:
        return self._samples == 0

    def drain(self) -> None:
        if self._resampler is not None:
            for planar in self._resampler.resample(None):
                self._keep(planar.to_ndarray())

    def _keep(self, planes: np.ndarray) -> None:
        self._first.append(np.array(planes[0], dtype=np.float32))
        if planes.shape[0] > 1:
            self._means.append(planes.mean(axis=0, dtype=np.float64).astype(np.float32))
        self._samples += planes.shape[1]
        if self._samples > self._max_samples:
            raise LimitExceeded(
                f"audio lasts more than {self._max_duration_s:g} s (the limit)", reason="audio_too_long"
            )

    def result(self, *, fallback_rate_hz: int) -> DecodedAudio:
        channel0 = np.concatenate(self._first) if self._first else np.zeros(0, dtype=np.float32)
        channel_mean = np.concatenate(self._means) if self._means else None
        return DecodedAudio(channel0, channel_mean, self._rate_hz or fallback_rate_hz, self._channels)


@dataclass(frozen=True)
class AudioTrackInfo:
    """The first audio stream as its headers declare it: `samples` = declared duration ×
    rate (exact for MP4/Matroska, whose durations come from their sample tables)."""

    rate_hz: int
    channels: int
    samples: int


def decode_audio_windows(
    data: bytes,
    *,
    format: str,
    windows: Callable[[AudioTrackInfo], Sequence[tuple[int, int]]],
) -> tuple[AudioTrackInfo, list[DecodedAudio]]:
    """Decode only the sample ranges [start, stop) that `windows(info)` names (stream samples,
    in the stream's own rate), seeking to each: the cost is the windows', not the track's.

    Each window comes back trimmed to the exact samples (a frame's first sample is its
    timestamp × rate), shorter only where the stream ends. A codec whose frames depend on the
    one before (AAC's overlapping transform) decodes the first frame after a seek less
    exactly: callers ask for a margin before what they need. Raises what `decode_audio`
    raises (``corrupt_audio`` also when the container declares no duration or rate).
    """
    with _open_audio(data, format) as container:
        stream = _audio_stream(container, format)
        declared_s = _declared_duration_s(container, stream)
        rate = int(stream.rate or 0)
        if declared_s is None or rate <= 0:
            raise CorruptMedia(f"the {format} audio stream declares no duration or rate", reason="corrupt_audio")
        try:
            track = AudioTrackInfo(rate, int(stream.channels or 1), _decoded_length(container, stream, declared_s))
            decoded = [
                _decode_window(container, stream, start, stop) if start > 0 else _decode_head(data, format, stop)
                for start, stop in windows(track)
            ]
        except av.error.DecoderNotFoundError as exc:
            message = f"no decoder for this {format} file's codec: {exc}"
            raise UnsupportedMedia(message, reason="unsupported_codec") from exc
        except (av.FFmpegError, ValueError) as exc:
            raise CorruptMedia(f"cannot decode the {format} audio: {exc}", reason="corrupt_audio") from exc
    return track, decoded


def _decoded_length(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, declared_s: float
) -> int:
    """How many samples decoding the whole stream gives: the end of its last frame, found by
    decoding its last seconds only (the declared duration can differ from what decodes by a
    frame of encoder padding, and the clip placement depends on the exact length)."""
    rate = int(stream.rate)
    tail_start = max(round((declared_s - _TAIL_S) * rate), 0)
    end = _decode_window(container, stream, tail_start, None).channel0.shape[0]
    return tail_start + end


def _decode_head(data: bytes, format: str, stop: int | None) -> DecodedAudio:
    """Samples [0, stop) from a fresh container: a decoder flushed by a seek back to the start
    does not give the first frame as a fresh one does (AAC: its first ~1000 samples differ)."""
    with _open_audio(data, format) as container:
        return _decode_window(container, container.streams.audio[0], 0, stop, seek=False)


def _decode_window(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    start: int,
    stop: int | None,
    *,
    seek: bool = True,
) -> DecodedAudio:
    """Samples [start, stop) of the stream (to its end for None), sample-exact."""
    rate = int(stream.rate)
    time_base = float(stream.time_base) if stream.time_base is not None else 1.0 / rate
    offset = (stream.start_time or 0) * time_base
    # Sought a little early: a demuxer may land on the packet just after the time asked for.
    target_s = max(start / rate - _SEEK_EARLY_S, 0.0) + offset
    if seek:
        container.seek(int(target_s / time_base), stream=stream, backward=True, any_frame=False)
    collector = _PcmCollector(((stop if stop is not None else start + _TAIL_S * 2 * rate) - start) / rate + 1.0, None)
    position: int | None = None  # stream sample index of the next decoded sample
    for frame in container.decode(stream):
        if frame.pts is not None:
            position = round(frame.pts * time_base * rate - offset * rate)
        if position is None:
            raise ValueError("audio frames without timestamps cannot be sought")
        first, position = position, position + frame.samples
        if position <= start:
            continue
        if first > start and collector.empty:
            raise ValueError(f"seeking to sample {start} landed after it, at {first}")
        collector.add(
            frame, keep=(max(start - first, 0), frame.samples if stop is None else min(stop - first, frame.samples))
        )
        if stop is not None and position >= stop:
            break
    collector.drain()
    return collector.result(fallback_rate_hz=rate)

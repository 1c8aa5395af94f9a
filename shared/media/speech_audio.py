"""Audio upload bytes -> Whisper's input: 16 kHz mono float32, the first `max_s` seconds.

Unlike `shared.media.audio` (which refuses audio over the upload limit), this one cuts: the
speech stage transcribes at most the configured minutes of an upload and reports the rest
as not transcribed. Decoding stops at the cap, so a 3-hour file costs its first minutes.
The demuxer is named from sniffing, as in `shared.media.audio` (FFmpeg never probes).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

from shared.errors import CorruptMedia, UnsupportedMedia
from shared.media.audio import check_not_truncated, wav_declared_duration_s
from shared.media.sniff import FORMATS, sniff

WHISPER_RATE_HZ = 16_000


@dataclass(frozen=True)
class SpeechAudio:
    """`samples`: float32 (n,) mono at 16 kHz; `duration_s`: the whole track's length (the
    declared one when decoding stopped at the cap)."""

    samples: np.ndarray
    duration_s: float

    @property
    def decoded_s(self) -> float:
        return self.samples.shape[0] / WHISPER_RATE_HZ


def decode_for_speech(data: bytes, *, max_s: float, format: str | None = None) -> SpeechAudio:
    """The first `max_s` seconds of the upload's first audio stream, as Whisper reads it.

    Raises `UnsupportedMedia` (``unsupported_format``, ``no_audio_stream``,
    ``unsupported_codec``) and `CorruptMedia` (``corrupt_audio``, ``empty_audio``,
    ``truncated_audio``)."""
    if not data:
        raise CorruptMedia("the upload is empty", reason="empty_file")
    if format is None:
        format = sniff(data).format
    demuxer = FORMATS[format].ffmpeg_demuxer
    if demuxer is None:
        raise UnsupportedMedia(f"{format} content has no audio to transcribe", reason="unsupported_format")
    limit = int(max_s * WHISPER_RATE_HZ)
    try:
        with av.open(io.BytesIO(data), mode="r", format=demuxer) as container:
            if not container.streams.audio:
                raise UnsupportedMedia(f"the {format} file has no audio stream", reason="no_audio_stream")
            stream = container.streams.audio[0]
            declared = _declared_s(container, stream)
            chunks, stopped = _decode_until(container, stream, limit)
    except av.error.DecoderNotFoundError as exc:
        raise UnsupportedMedia(f"no decoder for this {format} file's codec: {exc}", reason="unsupported_codec") from exc
    except (av.FFmpegError, ValueError) as exc:
        raise CorruptMedia(f"cannot decode the {format} audio: {exc}", reason="corrupt_audio") from exc
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, dtype=np.float32)
    if samples.shape[0] == 0:
        raise CorruptMedia(f"no audio samples could be decoded from the {format} file", reason="empty_audio")
    samples = samples[:limit]
    decoded_s = samples.shape[0] / WHISPER_RATE_HZ
    if not stopped and format == "wav" and (promised := wav_declared_duration_s(data)) is not None:
        check_not_truncated(decoded_s, promised, format)  # as the CPU stage checks it
    duration = max(declared or 0.0, decoded_s) if stopped else decoded_s
    return SpeechAudio(samples, round(duration, 3))


def _decode_until(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, limit: int
) -> tuple[list[np.ndarray], bool]:
    """Mono 16 kHz float32 chunks of `stream` until `limit` samples; (chunks, stopped early)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=WHISPER_RATE_HZ)
    chunks: list[np.ndarray] = []
    kept = 0
    for frame in container.decode(stream):
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray().reshape(-1))
            kept += chunks[-1].shape[0]
        if kept >= limit:
            return chunks, True
    chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    return chunks, False


def _declared_s(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None

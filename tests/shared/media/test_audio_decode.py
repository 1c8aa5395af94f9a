from __future__ import annotations

import io
import struct
import wave

import av
import numpy as np
import pytest

from shared.errors import CorruptMedia, LimitExceeded, UnsupportedMedia
from shared.media.audio import decode_audio
from tests.shared.media.samples import read_sample, sample_names
from tests.support.media import wav_bytes_from_float


def _mp4(*, with_audio: bool) -> bytes:
    """A tiny MP4 with a video stream, and an AAC stream if asked."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        video = container.add_stream("mpeg4", rate=5)
        video.width, video.height, video.pix_fmt = 16, 16, "yuv420p"
        audio = container.add_stream("aac", rate=16000, layout="mono") if with_audio else None
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 60 * i, np.uint8), format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        if audio is not None:
            tone = (0.3 * np.sin(np.arange(16000) * 0.2)).astype(np.float32)[None]
            for start in range(0, 16000, 1024):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(tone[:, start : start + 1024]), format="fltp", layout="mono"
                )
                frame.sample_rate, frame.pts = 16000, start
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode(None):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize("name", sample_names("encoded_audio"))
def test_every_encoded_sample_decodes_to_about_one_second(name: str) -> None:
    audio = decode_audio(read_sample(name), max_duration_s=60)
    assert audio.channel0.dtype == np.float32
    assert 0.95 <= audio.duration_s <= 1.1
    assert (audio.channel_mean is None) == (audio.channels == 1)
    assert 0.05 < float(np.sqrt(np.mean(audio.channel0**2))) < 0.6  # a signal, not silence or clipping


def test_wav_samples_are_int16_over_32768_like_soundfile() -> None:
    pcm = np.array([[0, 1, -1, 16384, -32768, 32767]], dtype="<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm.tobytes())
    audio = decode_audio(buf.getvalue(), max_duration_s=1)
    assert np.array_equal(audio.channel0, pcm[0].astype(np.float32) / 32768)
    assert audio.sample_rate_hz == 8000


def test_stereo_keeps_channel_zero_and_the_channel_mean() -> None:
    left, right = np.full(800, 0.5), np.full(800, -0.25)
    audio = decode_audio(wav_bytes_from_float(np.stack([left, right]), 8000), max_duration_s=1)
    assert audio.channels == 2
    assert np.allclose(audio.channel0, 0.5, atol=1e-4)
    assert audio.channel_mean is not None and np.allclose(audio.channel_mean, 0.125, atol=1e-4)


def test_declared_duration_over_the_limit_is_refused_before_decoding() -> None:
    with pytest.raises(LimitExceeded) as err:
        decode_audio(wav_bytes_from_float(np.zeros((1, 8000 * 30)), 8000), max_duration_s=10)
    assert err.value.reason == "audio_too_long"
    assert "30.0 s" in err.value.message  # the declared duration, known before decoding


def test_decoding_stops_once_past_the_limit() -> None:
    # Declared 1 s is within the 10% slack of 0.95 s, so only counting samples catches it.
    with pytest.raises(LimitExceeded) as err:
        decode_audio(read_sample("tone_16k_1s_mono.wav"), max_duration_s=0.95)
    assert err.value.reason == "audio_too_long"
    assert "more than" in err.value.message


def test_truncated_wav_is_corrupt() -> None:
    data = read_sample("exact_16k_2s_mono.wav")
    with pytest.raises(CorruptMedia) as err:
        decode_audio(data[: len(data) // 2], max_duration_s=60)
    assert err.value.reason == "truncated_audio"


@pytest.mark.parametrize("name", ["clip_22050_1s.flac", "clip_48k_1s_opus.ogg", "clip_44100_1s_aac.m4a"])
def test_truncated_compressed_audio_is_corrupt(name: str) -> None:
    data = read_sample(name)
    with pytest.raises(CorruptMedia) as err:
        decode_audio(data[: int(len(data) * 0.6)], max_duration_s=60)
    assert err.value.reason in {"corrupt_audio", "truncated_audio"}


@pytest.mark.parametrize("name", ["clip_48k_1s_opus.ogg", "clip_48k_1s_opus.webm", "clip_44100_1s.mp3"])
def test_damaged_audio_is_corrupt(name: str) -> None:
    data = bytearray(read_sample(name))
    third = len(data) // 3
    data[third : third + 300] = bytes((b * 31 + 7) % 256 for b in data[third : third + 300])
    with pytest.raises(CorruptMedia) as err:
        decode_audio(bytes(data), max_duration_s=60)
    assert err.value.reason in {"corrupt_audio", "truncated_audio"}


def test_header_only_file_is_corrupt() -> None:
    with pytest.raises(CorruptMedia) as err:
        decode_audio(read_sample("clip_22050_1s.flac")[:60], max_duration_s=60)
    assert err.value.reason == "corrupt_audio"


def test_wav_without_samples_is_empty_audio() -> None:
    with pytest.raises(CorruptMedia) as err:
        decode_audio(wav_bytes_from_float(np.zeros((1, 0)), 16000), max_duration_s=60)
    assert err.value.reason in {"empty_audio", "corrupt_audio"}


def test_unknown_codec_is_unsupported() -> None:
    data = bytearray(read_sample("tone_16k_1s_mono.wav"))
    data[20:22] = struct.pack("<H", 0x1234)  # WAVE format tag no decoder knows
    with pytest.raises(UnsupportedMedia) as err:
        decode_audio(bytes(data), max_duration_s=60)
    assert err.value.reason == "unsupported_codec"


def test_video_without_audio_is_unsupported() -> None:
    with pytest.raises(UnsupportedMedia) as err:
        decode_audio(_mp4(with_audio=False), max_duration_s=60)
    assert err.value.reason == "no_audio_stream"


def test_video_with_audio_gives_its_audio() -> None:
    audio = decode_audio(_mp4(with_audio=True), max_duration_s=60)
    assert audio.sample_rate_hz == 16000
    assert audio.duration_s == pytest.approx(1.0, abs=0.1)


def test_images_and_text_are_not_audio() -> None:
    with pytest.raises(UnsupportedMedia) as err:
        decode_audio(read_sample("tiny_37x23.png"), max_duration_s=60)
    assert err.value.reason == "unsupported_format"
    with pytest.raises(UnsupportedMedia):
        decode_audio(b"#EXTM3U\n#EXT-X-TARGETDURATION:1\nfile:///etc/passwd\n", max_duration_s=60)


def test_output_rate_is_converted_by_ffmpeg_when_asked() -> None:
    audio = decode_audio(read_sample("noise_8k_1s_mono.wav"), max_duration_s=60, output_rate_hz=lambda _: 16000)
    assert audio.sample_rate_hz == 16000
    assert audio.channel0.shape[0] == pytest.approx(16000, abs=64)

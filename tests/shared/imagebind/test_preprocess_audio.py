"""Audio preprocessing equals the reference (golden fixtures from Meta's `imagebind.data`),
and what the golden files cannot show: clip placement, modes, short and odd inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from shared.imagebind.audio import (
    clip_ranges,
    decode_rate_hz,
    full_mode_clip_count,
    melspec_clips,
    preprocess_audio,
    waveform_to_clips,
)
from shared.imagebind.constants import AUDIO_MEAN, AUDIO_STD
from shared.imagebind.fbank import fbank, num_frames
from shared.imagebind.resample import kernel_is_affordable, resample
from tests.shared.media.samples import GOLDEN, read_sample, sample_names
from tests.support.media import wav_bytes_from_float

CLIP_SHAPE = (1, 128, 204)
# The reference computes fbank in float32; see docs/preprocessing.md for the measured margin.
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def golden_audio() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "audio.npz") as npz:
        return {name: npz[name] for name in npz.files}


def _noise(rate_hz: int, seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((channels, int(rate_hz * seconds)))).astype(np.float32)


@pytest.mark.parametrize("name", sample_names("wav"))
def test_audio_matches_the_reference(name: str, golden_audio: dict[str, np.ndarray]) -> None:
    ours = preprocess_audio(read_sample(name), max_duration_s=60)
    assert ours.dtype == np.float32 and ours.shape == (3, *CLIP_SHAPE)
    assert float(np.abs(ours - golden_audio[name]).max()) <= TOLERANCE


def test_every_golden_audio_is_covered(golden_audio: dict[str, np.ndarray]) -> None:
    assert sorted(golden_audio) == sample_names("wav")


@pytest.mark.parametrize("name", sample_names("encoded_audio"))
def test_every_container_and_codec_gives_model_input(name: str) -> None:
    clips = preprocess_audio(read_sample(name), max_duration_s=60)
    assert clips.shape == (3, *CLIP_SHAPE) and np.isfinite(clips).all()


def test_clip_placement_follows_the_official_sampler() -> None:
    # 10 s: starts 0, 4, 8 s (PyPI pytorchvideo 0.1.5 would give 0, 2.67, 5.33 s).
    assert clip_ranges(160_000, 3) == [(0, 32_000), (64_000, 96_000), (128_000, 160_000)]
    # 5 s: overlapping clips at 0, 1.5, 3 s, the last ending at the end.
    assert clip_ranges(80_000, 3) == [(0, 32_000), (24_000, 56_000), (48_000, 80_000)]


def test_short_files_give_the_same_whole_file_clip_three_times() -> None:
    assert clip_ranges(20_000, 3) == [(0, 20_000)] * 3
    assert clip_ranges(32_000, 3) == [(0, 32_000)] * 3


def test_clip_starts_truncate_exact_fractions_as_the_reference_slices() -> None:
    # 4 samples over 2 s: exact starts would be 0, 2, 4 samples, but d - 2 is a float just
    # under 0.00025 s and int() truncates, as in pytorchvideo + the reference's slicing.
    assert [start for start, _ in clip_ranges(32_004, 3)] == [0, 1, 3]


@pytest.mark.parametrize(("seconds", "clips"), [(0.5, 1), (2.0, 1), (2.01, 2), (7.0, 4), (60.0, 30)])
def test_full_mode_covers_the_file_with_ceil_d_over_2_clips(seconds: float, clips: int) -> None:
    assert full_mode_clip_count(seconds) == clips
    waveform = _noise(16000, seconds)
    assert waveform_to_clips(waveform, 16000, mode="full").shape == (clips, *CLIP_SHAPE)
    ranges = clip_ranges(waveform.shape[1], clips)
    # float (d - 2) can land a hair under an integer sample: the last clip may end 1 early
    assert ranges[0][0] == 0 and ranges[-1][1] >= waveform.shape[1] - 1
    assert all(b[0] <= a[1] for a, b in itertools.pairwise(ranges))  # no gaps


def test_reference_mode_always_gives_three_clips_even_for_long_audio() -> None:
    assert waveform_to_clips(_noise(16000, 9.0), 16000).shape == (3, *CLIP_SHAPE)


def test_full_mode_equals_reference_mode_where_clips_do_not_overlap() -> None:
    # 6 s: both place clips at 0, 2, 4 s; no overlap, so in-place de-meaning changes nothing.
    waveform = _noise(16000, 6.0) + 0.05
    np.testing.assert_allclose(
        waveform_to_clips(waveform, 16000, mode="full"), waveform_to_clips(waveform, 16000), atol=1e-5
    )


def test_under_one_window_is_padded_instead_of_crashing() -> None:
    for samples in (1, 100, 399):
        clips = waveform_to_clips(_noise(16000, samples / 16000), 16000)
        assert clips.shape == (3, *CLIP_SHAPE) and np.isfinite(clips).all()
        # one real frame, then the reference's zero padding (normalised)
        assert np.allclose(clips[0, 0, :, 1:], (0 - AUDIO_MEAN) / AUDIO_STD)


def test_stereo_is_heard_through_channel_zero() -> None:
    left = _noise(16000, 1.5, seed=1)
    stereo = np.concatenate([left, _noise(16000, 1.5, seed=2)])
    np.testing.assert_allclose(waveform_to_clips(stereo, 16000), waveform_to_clips(left, 16000), atol=1e-4)


def test_in_place_demeaning_of_overlapping_clips_is_reproduced() -> None:
    # With a DC offset, the reference's clip 2 sees clip 1's mean already subtracted from
    # their overlap; de-meaning each clip on its own copy (full mode) does not.
    waveform = _noise(16000, 5.0) + 0.2
    reference_mode = melspec_clips(waveform[0], 16000, mode="reference")
    independent = melspec_clips(waveform[0], 16000, mode="full")  # same 3 clips at 0, 1.5, 3 s
    assert np.abs(reference_mode[0] - independent[0]).max() < 1e-5
    assert np.abs(reference_mode[1] - independent[1]).max() > 0.01


def test_melspec_clips_leaves_the_callers_waveform_alone() -> None:
    waveform = _noise(16000, 3.0)[0] + 0.1
    before = waveform.copy()
    melspec_clips(waveform, 16000)
    assert np.array_equal(waveform, before)


def test_empty_waveform_and_unknown_mode_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        melspec_clips(np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match="mode"):
        melspec_clips(np.zeros(10, np.float32), 16000, mode="everything")  # type: ignore[arg-type]


def test_rates_without_a_small_ratio_go_through_ffmpeg_first() -> None:
    assert decode_rate_hz(44100) == 44100 and decode_rate_hz(11025) == 11025
    assert not kernel_is_affordable(44056, 16000)
    assert decode_rate_hz(44056) == 48000
    clips = preprocess_audio(wav_bytes_from_float(_noise(44056, 1.0), 44056), max_duration_s=60)
    assert clips.shape == (3, *CLIP_SHAPE) and np.isfinite(clips).all()


@pytest.mark.parametrize("orig_hz", [8000, 22050, 44100, 48000])
def test_resampling_keeps_a_tone_and_has_torchaudios_length(orig_hz: int) -> None:
    t = np.arange(orig_hz) / orig_hz
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    out = resample(tone, orig_hz, 16000)
    assert out.shape == (math.ceil(16000 * orig_hz / orig_hz),)
    expected = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    assert np.abs(out[200:-200] - expected[200:-200]).max() < 2e-3  # away from the zero-padded edges


def test_fbank_frame_count_and_shape() -> None:
    assert num_frames(32_000) == 198 and num_frames(399) == 0 and num_frames(400) == 1
    assert fbank(np.zeros(32_000)).shape == (198, 128)
    with pytest.raises(ValueError):
        fbank(np.zeros(399))


@pytest.mark.parametrize(("rate_hz", "layout"), [(16000, "mono"), (44100, "stereo"), (48000, "stereo")])
def test_a_long_audio_track_read_by_seeking_equals_the_whole_track(rate_hz: int, layout: str) -> None:
    from shared.imagebind.audio import SEEK_MIN_S, preprocess_audio_track
    from tests.support.media import video_with_sound

    data = video_with_sound(seconds=SEEK_MIN_S + 10, rate_hz=rate_hz, layout=layout)
    whole = preprocess_audio(data, max_duration_s=3600, format="mp4")
    sought = preprocess_audio_track(data, format="mp4", max_duration_s=3600)
    # the same clips (placed from the decoded length, resampled on the whole track's grid)
    np.testing.assert_allclose(sought, whole, rtol=0, atol=1e-6)


def test_only_the_clip_windows_of_a_long_track_are_decoded_and_no_audio_limit_applies() -> None:
    from shared.errors import LimitExceeded
    from shared.imagebind.audio import SEEK_MARGIN_S, _clip_windows, preprocess_audio_track
    from shared.media.audio import decode_audio_windows
    from tests.support.media import video_with_sound

    data = video_with_sound(seconds=600, rate_hz=16000)  # 10 minutes
    track, windows = decode_audio_windows(data, format="mp4", windows=_clip_windows)
    assert track.samples >= 600 * 16000
    decoded = sum(window.channel0.shape[0] for window in windows)
    assert len(windows) == 3 and decoded <= 3 * (2 + 2 * SEEK_MARGIN_S) * 16000
    # the last clip ends at the end of the track (the official placement)
    assert _clip_windows(track)[-1][1] == track.samples
    clips = preprocess_audio_track(data, format="mp4", max_duration_s=60)
    assert clips.shape == (3, 1, 128, 204) and np.isfinite(clips).all()
    with pytest.raises(LimitExceeded):  # "full" mode still decodes it whole, within the limit
        preprocess_audio_track(data, format="mp4", max_duration_s=60, mode="full")

"""What the cpu stage makes of a decoded upload, per model family (torch-free).

The wire arrays stay compact (uint8 images, int32 tokens, float16 audio) and are what the
family's gpu backend expects (`shared.models.port.EmbeddingBackend.prepare`):

- imagebind: image uint8 (3, 224, 224), bicubic short-side resize + centre crop; text int32
  (77,) CLIP BPE; audio float16 (clips, 1, 128, 204) fbank clips; video uint16 (15, 3, 2, 224,
  224) clips (`shared.imagebind.video`);
- perception: image uint8 (3, S, S), the same crop at the catalogue's wire size S (normalised
  and resized to the tower's input on the gpu); text int32 (n,) by the model's tokenizer.json,
  padded; audio float16 (samples,) mono 48 kHz waveform, at most `max_audio_s`, reflect-padded
  to whole 40 ms hops; video uint8 (F, 3, S, S): the card's `video_frames` frames sampled
  uniformly over the video (frame i of n: int(i * (n - 1) / (F - 1)), as transformers'
  `PeVideoVideoProcessor` samples), each cropped as an image.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from PIL import Image

from shared.config import ModelSettings
from shared.imagebind.audio import preprocess_audio, preprocess_audio_track
from shared.imagebind.image import resize_and_center_crop
from shared.imagebind.text import tokenize
from shared.imagebind.video import preprocess_video
from shared.media.audio import decode_audio
from shared.media.video import DecodedFrames, VideoInfo, VideoLimits, decode_frames
from shared.models.catalog import ModelCard, card_for

AudioMode = Literal["reference", "full"]
PE_AUDIO_HOP = 1920  # samples per audio frame of PE-AV's DAC front end at 48 kHz (its feature extractor pads to it)


class Preprocessor(Protocol):
    """Decoded media -> the model-ready wire array of one family."""

    def image(self, image: Image.Image, *, max_pixels: int) -> np.ndarray: ...

    def text(self, text: str) -> np.ndarray: ...

    def audio(self, data: bytes, *, max_duration_s: float, mode: AudioMode, format: str | None) -> np.ndarray: ...

    def audio_track(self, data: bytes, *, max_duration_s: float, mode: AudioMode, format: str) -> np.ndarray:
        """A video's first audio track, as this family embeds audio."""
        ...

    def video(self, data: bytes, *, format: str, limits: VideoLimits) -> tuple[np.ndarray, DecodedFrames]:
        """The video's wire array and the frames decoded for it (kept for the detectors and
        per-frame moderation). Raises what `shared.media.video.decode_frames` raises."""
        ...


class ImageBindPreprocessor:
    """ImageBind's reference preprocessing (`shared.imagebind.{image,text,audio}`)."""

    def image(self, image: Image.Image, *, max_pixels: int) -> np.ndarray:
        return resize_and_center_crop(image, max_resized_pixels=max_pixels)

    def text(self, text: str) -> np.ndarray:
        return tokenize([text])[0].astype(np.int32)

    def audio(self, data: bytes, *, max_duration_s: float, mode: AudioMode, format: str | None) -> np.ndarray:
        clips = preprocess_audio(data, max_duration_s=max_duration_s, mode=mode, format=format)
        return clips.astype(np.float16)

    def audio_track(self, data: bytes, *, max_duration_s: float, mode: AudioMode, format: str) -> np.ndarray:
        """A video's audio track: its clips read by seeking when long (`preprocess_audio_track`)."""
        clips = preprocess_audio_track(data, max_duration_s=max_duration_s, mode=mode, format=format)
        return clips.astype(np.float16)

    def video(self, data: bytes, *, format: str, limits: VideoLimits) -> tuple[np.ndarray, DecodedFrames]:
        prepared = preprocess_video(data, format=format, limits=limits)
        return prepared.clips, prepared.frames


@dataclass(frozen=True)
class PerceptionPreprocessor:
    """PE-AV's inputs: square crops (normalised on the gpu), its own tokenizer, 48 kHz audio."""

    card: ModelCard
    tokenizer_path: Path

    @functools.cached_property
    def _tokenizer(self):  # type: ignore[no-untyped-def]  # tokenizers ships no stubs
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        pad_id = pad_token_id(tokenizer)
        tokenizer.enable_truncation(max_length=self.card.text_tokens)
        tokenizer.enable_padding(length=self.card.text_tokens, pad_id=pad_id)
        return tokenizer

    def image(self, image: Image.Image, *, max_pixels: int) -> np.ndarray:
        return resize_and_center_crop(image, max_resized_pixels=max_pixels, size=self.card.wire_image_size)

    def text(self, text: str) -> np.ndarray:
        return np.asarray(self._tokenizer.encode(text).ids, dtype=np.int32)

    def audio(self, data: bytes, *, max_duration_s: float, mode: AudioMode, format: str | None) -> np.ndarray:
        rate = self.card.audio_rate_hz
        decoded = decode_audio(data, max_duration_s=max_duration_s, format=format, output_rate_hz=lambda _: rate)
        mono = decoded.channel_mean if decoded.channel_mean is not None else decoded.channel0
        wave = np.asarray(mono, dtype=np.float32)[: int(self.card.max_audio_s * rate)]
        return pad_to_hop(wave, PE_AUDIO_HOP).astype(np.float16)

    def audio_track(self, data: bytes, *, max_duration_s: float, mode: AudioMode, format: str) -> np.ndarray:
        # The waveform of an audio upload: PE-AV reads at most `max_audio_s` of it in any case.
        return self.audio(data, max_duration_s=max_duration_s, mode=mode, format=format)

    def video(self, data: bytes, *, format: str, limits: VideoLimits) -> tuple[np.ndarray, DecodedFrames]:
        count = self.card.video_frames

        def pick(info: VideoInfo) -> list[int]:
            return uniform_frames(info.frame_count, count)

        decoded = decode_frames(data, format=format, limits=limits, pick=pick)
        # A video shorter than `count` frames repeats some: every video has the same shape.
        frames = [
            resize_and_center_crop(
                Image.fromarray(decoded.frames[index]),
                max_resized_pixels=limits.max_pixels,
                size=self.card.wire_image_size,
            )
            for index in uniform_frames(decoded.info.frame_count, count)
        ]
        return np.stack(frames), decoded  # (F, 3, S, S) uint8


def uniform_frames(frame_count: int, count: int) -> list[int]:
    """`count` frame indices spread evenly from the first frame to the last, as transformers'
    `PeVideoVideoProcessor.sample_frames` picks them (int(i * (n - 1) / (count - 1)))."""
    if count == 1:
        return [0]
    return [int(i * (frame_count - 1) / (count - 1)) for i in range(count)]


def pad_token_id(tokenizer) -> int:  # type: ignore[no-untyped-def]
    """The tokenizer's padding id: its own setting, else [PAD] / <pad>, else 0."""
    if tokenizer.padding is not None:
        return int(tokenizer.padding["pad_id"])
    for token in ("[PAD]", "<pad>"):
        found = tokenizer.token_to_id(token)
        if found is not None:
            return int(found)
    return 0


def pad_to_hop(wave: np.ndarray, hop: int) -> np.ndarray:
    """Reflect-pad to a whole number of hops, as transformers' PeAudioFeatureExtractor does
    (a wave shorter than the pad is zero-padded: reflection needs more samples than it adds)."""
    short = (-len(wave)) % hop
    if not short:
        return wave
    if len(wave) > short:
        return np.pad(wave, (0, short), mode="reflect")
    return np.pad(wave, (0, short), mode="constant")


@functools.lru_cache(maxsize=8)
def _preprocessor(settings_json: str) -> Preprocessor:
    settings = ModelSettings.model_validate_json(settings_json)
    card = card_for(settings.name)
    if card.family == "imagebind":
        return ImageBindPreprocessor()
    from shared.models.perception_files import tokenizer_file

    return PerceptionPreprocessor(card, tokenizer_file(settings))


def preprocessor_for(settings: ModelSettings) -> Preprocessor:
    """The configured family's preprocessing (one per settings, cached; PE-AV finds or
    fetches its tokenizer.json on first use). Raises `CheckpointError` when it cannot."""
    return _preprocessor(settings.model_dump_json())

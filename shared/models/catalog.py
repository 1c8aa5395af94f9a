"""Every model omnibind can load, by its `OMNIBIND_MODEL__NAME`: family, record label, and
licence, stated where the model is chosen (issue #19). Pure data, no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["imagebind", "perception"]

IMAGEBIND_LICENCE = "CC BY-NC-SA 4.0 (research / non-commercial use only)"
PERCEPTION_LICENCE = "Apache-2.0 (commercial use allowed)"
RANDOM_LICENCE = "none: random weights made locally for tests (meaningless vectors)"


@dataclass(frozen=True)
class ModelCard:
    """One loadable model.

    `label` is what records and logs call it (the tiny random ones say so); `repo` is the
    hub repository of the PE-AV weights (None: ImageBind's own download, or made locally).
    `wire_image_size` is the side of the square uint8 image the cpu stage sends (the gpu
    backend resizes to its tower's input when that differs); `audio_rate_hz` and
    `max_audio_s` describe the waveform PE-AV takes; `text_tokens` the padded token count;
    `video_frames` how many frames of a video PE-AV embeds (sampled uniformly over its length,
    as transformers' `PeVideoVideoProcessor` samples a fixed number of frames).
    """

    name: str
    family: Family
    label: str
    licence: str
    commercial: bool
    repo: str | None = None
    wire_image_size: int = 224
    audio_rate_hz: int = 48_000
    max_audio_s: float = 30.0
    text_tokens: int = 64
    video_frames: int = 16
    random: bool = False


CATALOG: dict[str, ModelCard] = {
    card.name: card
    for card in (
        ModelCard("huge", "imagebind", "imagebind-huge", IMAGEBIND_LICENCE, commercial=False),
        ModelCard("tiny", "imagebind", "imagebind-tiny-random", RANDOM_LICENCE, commercial=False, random=True),
        # PE-AV (transformers' PeAudioVideoModel). The large video tower is PE-Core L/14 at 336 px
        # (transformers' default config); smaller towers get 336 px too and are resized on the gpu.
        ModelCard("pe-av-small", "perception", "pe-av-small", PERCEPTION_LICENCE, True, "facebook/pe-av-small", 336),
        ModelCard("pe-av-base", "perception", "pe-av-base", PERCEPTION_LICENCE, True, "facebook/pe-av-base", 336),
        ModelCard("pe-av-large", "perception", "pe-av-large", PERCEPTION_LICENCE, True, "facebook/pe-av-large", 336),
        ModelCard(
            "pe-av-tiny",
            "perception",
            "pe-av-tiny-random",
            RANDOM_LICENCE,
            commercial=False,
            wire_image_size=32,
            max_audio_s=4.0,
            text_tokens=16,
            video_frames=4,
            random=True,
        ),
    )
}


def card_for(name: str) -> ModelCard:
    """The catalogue entry of `OMNIBIND_MODEL__NAME`; KeyError naming the choices."""
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; choose one of {sorted(CATALOG)}") from None

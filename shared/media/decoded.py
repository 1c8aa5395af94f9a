"""An upload as the decoders left it, for what looks at content rather than at model inputs
(the moderation detectors): the image, the text, a video's sampled frames."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.events import Modality

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True, slots=True)
class DecodedMedia:
    """The decoded upload (RGB image or text; for a video its sampled frames as (time in
    seconds, uint8 RGB array (H, W, 3)) and notes about what was left out)."""

    modality: Modality
    image: Image.Image | None = None
    text: str | None = None
    frames: tuple[tuple[float, Any], ...] = ()
    notes: tuple[str, ...] = ()

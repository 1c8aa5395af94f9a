"""Dedicated CPU detectors: real models that ship inside their packages.

- ``nudenet`` (images): NudeNet's ONNX detector (`shared.moderation.detectors.nudenet`);
  reports, per body-part label, the highest confidence of any detected box. An image
  detector also runs on a video's sampled frames: per label the worst frame wins, and its
  time goes with the score (`DetectorResult.at_s`), so the reason can say where it is.
- ``profanity`` (text): alt-profanity-check's linear classifier
  (`shared.moderation.detectors.profanity`); reports ``offensive``, a probability.

Each is optional (``OMNIBIND_MODERATION__NUDENET`` / ``__PROFANITY``), imported only by a
process that has it enabled, and loaded once per process on first use. A detector that
raises is reported as a failed `DetectorResult` (its error noted in the decision), never as
a failed upload.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.errors import ConfigError
from shared.events import Modality
from shared.media.decoded import DecodedMedia

log = logging.getLogger(__name__)

# name -> (module, class, modality it applies to, pip requirement that provides it)
_REGISTRY: dict[str, tuple[str, str, Modality, str]] = {
    "nudenet": ("shared.moderation.detectors.nudenet", "NudeNetDetector", Modality.IMAGE, "nudenet"),
    "profanity": ("shared.moderation.detectors.profanity", "ProfanityDetector", Modality.TEXT, "profanity_check"),
}
_PIP_NAMES = {"nudenet": "nudenet", "profanity_check": "alt-profanity-check"}


@dataclass(frozen=True, slots=True)
class DetectorResult:
    """One detector's output for one upload: label -> score in [0, 1], or the error. For a
    video, `at_s`: label -> time in seconds of the frame that gave the score."""

    name: str
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    at_s: dict[str, float] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "scores": dict(self.scores), "error": self.error}
        if self.at_s:
            doc["at_s"] = dict(self.at_s)
        return doc

    @classmethod
    def from_wire(cls, doc: dict[str, Any]) -> DetectorResult:
        scores = {str(k): float(v) for k, v in (doc.get("scores") or {}).items()}
        at_s = {str(k): float(v) for k, v in (doc.get("at_s") or {}).items()}
        return cls(name=str(doc["name"]), scores=scores, error=doc.get("error"), at_s=at_s)


class Detector(Protocol):
    name: str

    def detect(self, media: DecodedMedia) -> dict[str, float]:
        """Label -> score in [0, 1] for one upload of the detector's modality."""
        ...


def detector_modality(name: str) -> Modality:
    return _REGISTRY[name][2]


def applies_to(name: str, modality: Modality) -> bool:
    """Whether detector `name` runs on uploads of `modality`: its own, and for an image
    detector also videos (on their sampled frames)."""
    own = detector_modality(name)
    return own is modality or (own is Modality.IMAGE and modality is Modality.VIDEO)


def check_available(name: str) -> None:
    """Raise `ConfigError` when detector `name` is unknown or its package is not installed
    (checked without importing it)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown detector {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    package = _REGISTRY[name][3]
    if importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"detector {name!r} is enabled but its package is not installed: "
            f"pip install {_PIP_NAMES[package]} (or omnibind[detectors])"
        )


def load_detector(name: str) -> Detector:
    module_name, class_name, _, _ = _REGISTRY[name]
    module = importlib.import_module(module_name)
    detector: Detector = getattr(module, class_name)()
    return detector


class DetectorSet:
    """The enabled detectors of one process, each loaded on first use (thread-safe)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        for name in names:
            check_available(name)
        self.names = names
        self._loaded: dict[str, Detector] = {}
        self._lock = threading.Lock()

    def for_modality(self, modality: Modality) -> tuple[str, ...]:
        """Names of the enabled detectors that apply to uploads of `modality`."""
        return tuple(name for name in self.names if applies_to(name, modality))

    def run(self, media: DecodedMedia) -> tuple[DetectorResult, ...]:
        """Every applicable detector's result; one that raises gives a result with `error`."""
        return tuple(self._run_one(name, media) for name in self.for_modality(media.modality))

    def _detector(self, name: str) -> Detector:
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = load_detector(name)
            return self._loaded[name]

    def _run_one(self, name: str, media: DecodedMedia) -> DetectorResult:
        try:
            if media.modality is Modality.VIDEO:
                return _worst_frames(name, self._detector(name), media.frames)
            return DetectorResult(name, self._detector(name).detect(media))
        except Exception as exc:  # a detector must never fail the upload: its error is recorded
            log.warning("detector %s failed: %s: %s", name, type(exc).__name__, exc)
            return DetectorResult(name, error=f"{type(exc).__name__}: {exc}"[:500])


def _worst_frames(name: str, detector: Detector, frames: tuple[tuple[float, Any], ...]) -> DetectorResult:
    """An image detector on each of a video's sampled frames (uint8 RGB (H, W, 3)): per
    label the highest score, with the time of its frame (the earliest on a tie)."""
    from PIL import Image

    scores: dict[str, float] = {}
    at_s: dict[str, float] = {}
    for time_s, rgb in sorted(frames, key=lambda frame: frame[0]):
        image = Image.fromarray(rgb)
        for label, score in detector.detect(DecodedMedia(Modality.IMAGE, image=image)).items():
            if score > scores.get(label, -1.0):
                scores[label], at_s[label] = score, float(time_s)
    return DetectorResult(name, scores, at_s=at_s)

"""What each detector reports, known without importing the detector (policies are validated
against these lists in processes that never run a detector)."""

from __future__ import annotations

NUDENET_LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
PROFANITY_LABELS: tuple[str, ...] = ("offensive",)

DETECTOR_LABELS: dict[str, tuple[str, ...]] = {
    "nudenet": NUDENET_LABELS,
    "profanity": PROFANITY_LABELS,
}

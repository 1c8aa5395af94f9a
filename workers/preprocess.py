"""The CPU stage's logic: blob bytes -> model-ready arrays (pure but for `fetch_blob`).

Types are sniffed from content, never from names or declared content types (a mismatch is
recorded, not trusted). Arrays leave in their compact wire form: uint8 images, int32 tokens,
float16 audio features.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np

from shared.config import LimitSettings
from shared.errors import LimitExceeded, PermanentError, UnsupportedMedia
from shared.events import Modality, UploadEvent
from shared.media.image import decode_image
from shared.media.screening import check_declared_modality, check_not_polyglot, explain_unsupported
from shared.media.sniff import Sniffed, sniff
from shared.media.text import check_text_length, decode_text
from shared.messages import MediaFacts, PreparedUpload, Query
from shared.models.preprocessing import ImageBindPreprocessor, Preprocessor
from shared.moderation.detectors import DecodedMedia
from shared.objects.store import ObjectStore

AudioMode = Literal["reference", "full"]
IMAGEBIND = ImageBindPreprocessor()


class ModalityMismatch(PermanentError):
    reason = "modality_mismatch"


def fetch_blob(objects: ObjectStore, event: UploadEvent, *, max_bytes: int) -> tuple[UploadEvent, bytes]:
    """The upload's bytes, and the event with its object ref completed (etag, version, size)
    so the record points at exactly the bytes that were embedded."""
    if event.object is None:
        assert event.text is not None  # guaranteed by UploadEvent's validator
        return event, event.text.encode("utf-8")
    ref = objects.stat(event.object)
    if ref.size is not None and ref.size > max_bytes:
        raise LimitExceeded(f"object is {ref.size} bytes; the limit is {max_bytes}", reason="too_large")
    pinned = ref if ref.version_id else event.object
    data = objects.get(pinned, max_bytes=max_bytes)
    merged = ref.model_copy(update={"content_type": event.object.content_type or ref.content_type})
    return event.model_copy(update={"object": merged}), data


def prepare_upload(
    event: UploadEvent,
    data: bytes,
    limits: LimitSettings,
    *,
    audio_mode: AudioMode = "reference",
    preprocessor: Preprocessor = IMAGEBIND,
) -> PreparedUpload:
    """Sniff, validate and decode one upload into `preprocessor`'s model-ready array (the
    configured family's: `shared.models.preprocessing.preprocessor_for`). Raises
    `PermanentError`s with specific reasons."""
    return prepare_upload_and_media(event, data, limits, audio_mode=audio_mode, preprocessor=preprocessor)[0]


def prepare_upload_and_media(
    event: UploadEvent,
    data: bytes,
    limits: LimitSettings,
    *,
    audio_mode: AudioMode = "reference",
    preprocessor: Preprocessor = IMAGEBIND,
) -> tuple[PreparedUpload, DecodedMedia]:
    """`prepare_upload`, plus the decoded media (RGB image, text) for the CPU detectors."""
    if len(data) > limits.max_bytes:
        raise LimitExceeded(f"upload is {len(data)} bytes; the limit is {limits.max_bytes}", reason="too_large")
    if event.text is not None:
        check_text_length(event.text, max_chars=limits.max_text_chars)
        facts = MediaFacts(sha256=hashlib.sha256(data).hexdigest(), size=len(data), content_type="text/plain")
        media = DecodedMedia(Modality.TEXT, text=event.text)
        return PreparedUpload(event, Modality.TEXT, preprocessor.text(event.text), facts), media
    declared = event.object.content_type if event.object else None
    sniffed = _sniff(data, declared)
    _check_modality(event.modality, sniffed)
    check_declared_modality(declared, sniffed)
    check_not_polyglot(data, sniffed)
    facts = MediaFacts(
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        content_type=sniffed.mime,
        declared_content_type=declared,
        type_mismatch=sniffed.mismatch,
    )
    array, media = _decode(sniffed, data, limits, audio_mode, preprocessor)
    return PreparedUpload(event, sniffed.modality, array, facts), media


def prepare_query(
    query: Query, limits: LimitSettings, preprocessor: Preprocessor = IMAGEBIND
) -> tuple[Modality, np.ndarray]:
    """A search query -> (modality, model-ready array), with the same checks as uploads."""
    if query.text is not None:
        check_text_length(query.text, max_chars=limits.max_text_chars)
        return Modality.TEXT, preprocessor.text(query.text)
    if not query.data:
        raise PermanentError("a query needs text or file bytes", reason="empty_query")
    sniffed = _sniff(query.data)
    _check_modality(query.modality, sniffed)
    return sniffed.modality, _decode(sniffed, query.data, limits, "reference", preprocessor)[0]


def _sniff(data: bytes, declared: str | None = None) -> Sniffed:
    """`sniff`, with a precise reason for content that is nearly text."""
    try:
        return sniff(data, declared)
    except UnsupportedMedia as exc:
        raise explain_unsupported(data, exc) from exc


def _check_modality(wanted: Modality, sniffed: Sniffed) -> None:
    if wanted not in (Modality.AUTO, sniffed.modality):
        raise ModalityMismatch(
            f"declared modality {wanted.value} but the content is {sniffed.format} ({sniffed.modality.value})"
        )


def _decode(
    sniffed: Sniffed, data: bytes, limits: LimitSettings, audio_mode: AudioMode, preprocessor: Preprocessor
) -> tuple[np.ndarray, DecodedMedia]:
    if sniffed.modality is Modality.IMAGE:
        image = decode_image(data, max_pixels=limits.max_pixels, format=sniffed.format)
        array = preprocessor.image(image, max_pixels=limits.max_pixels)
        return array, DecodedMedia(Modality.IMAGE, image=image)
    if sniffed.modality is Modality.AUDIO:
        wire = preprocessor.audio(data, max_duration_s=limits.max_audio_s, mode=audio_mode, format=sniffed.format)
        return wire, DecodedMedia(Modality.AUDIO)
    text = decode_text(data, max_chars=limits.max_text_chars)
    return preprocessor.text(text), DecodedMedia(Modality.TEXT, text=text)

"""The CPU stage's logic: blob bytes -> model-ready arrays (pure but for `fetch_blob`).

Types are sniffed from content, never from names or declared content types (a mismatch is
recorded, not trusted). Arrays leave in their compact wire form: uint8 images, int32 tokens,
float16 audio features, uint16 fixed-point video clips. A container (MP4, WebM, Matroska)
with a video stream is a video, and its first audio track, if any, goes along as the part
``audio_track``; without a video stream it is audio. An upload declared ``audio`` embeds a
video's sound only (as before videos were embedded).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Literal

import numpy as np
from PIL import Image

from shared.config import LimitSettings
from shared.errors import LimitExceeded, PermanentError, UnsupportedMedia
from shared.events import Modality, UploadEvent
from shared.media.decoded import DecodedMedia
from shared.media.image import decode_image
from shared.media.screening import check_declared_modality, check_not_polyglot, explain_unsupported
from shared.media.sniff import Sniffed, sniff
from shared.media.text import check_text_length, decode_text
from shared.media.video import VIDEO_CONTAINERS, container_stream_kinds, video_limits
from shared.messages import MediaFacts, PreparedUpload, Query
from shared.models.preprocessing import ImageBindPreprocessor, Preprocessor
from shared.objects.store import ObjectStore

log = logging.getLogger(__name__)

AudioMode = Literal["reference", "full"]
IMAGEBIND = ImageBindPreprocessor()
MODERATED_FRAMES = 10  # a video's frames scored as images at most (ImageBind decodes 10)
# The part name of a video's sound (`VectorRecord.parts`).
AUDIO_TRACK = "audio_track"


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
    modality = _content_modality(event.modality, sniffed, data, preprocessor)
    check_declared_modality(declared, sniffed)
    check_not_polyglot(data, sniffed)
    facts = MediaFacts(
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        content_type=sniffed.mime,
        declared_content_type=declared,
        type_mismatch=sniffed.mismatch,
    )
    array, media, parts = _decode(sniffed, modality, data, limits, audio_mode, preprocessor)
    if modality is Modality.VIDEO and media.notes:
        facts = dataclasses.replace(facts, notes=facts.notes + media.notes)
    frames = _frames_as_images(media, limits, preprocessor) if modality is Modality.VIDEO else ()
    return PreparedUpload(event, modality, array, facts, parts=parts, frames=frames), media


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
    modality = _content_modality(query.modality, sniffed, query.data, preprocessor)
    # A video query is compared by its frames (the main vector); its sound is left out.
    return modality, _decode(sniffed, modality, query.data, limits, "reference", preprocessor, with_parts=False)[0]


def _sniff(data: bytes, declared: str | None = None) -> Sniffed:
    """`sniff`, with a precise reason for content that is nearly text."""
    try:
        return sniff(data, declared)
    except UnsupportedMedia as exc:
        raise explain_unsupported(data, exc) from exc


def _content_modality(wanted: Modality, sniffed: Sniffed, data: bytes, preprocessor: Preprocessor) -> Modality:
    """What the content is embedded as: `sniffed`'s modality, or video for a container with
    a video stream (unless the caller asked for its sound only: ``audio``)."""
    content = sniffed.modality
    video_ok = wanted is not Modality.AUDIO
    if video_ok and sniffed.format in VIDEO_CONTAINERS:
        # A container FFmpeg cannot open fails here, with a video reason (a cut MP4 is far
        # more often a video than audio; the audio path would call it corrupt_audio).
        kinds = container_stream_kinds(data, sniffed.format)
        if "video" in kinds:
            content = Modality.VIDEO
        elif "audio" not in kinds:
            raise UnsupportedMedia(
                f"the {sniffed.format} file holds no video or audio stream "
                f"(streams: {', '.join(sorted(kinds)) or 'none'})",
                reason="no_media_stream",
            )
    if wanted not in (Modality.AUTO, content):
        raise ModalityMismatch(
            f"declared modality {wanted.value} but the content is {sniffed.format} ({content.value})"
        )
    return content


def _decode(
    sniffed: Sniffed,
    modality: Modality,
    data: bytes,
    limits: LimitSettings,
    audio_mode: AudioMode,
    preprocessor: Preprocessor,
    *,
    with_parts: bool = True,
) -> tuple[np.ndarray, DecodedMedia, dict[str, tuple[Modality, np.ndarray]]]:
    if modality is Modality.IMAGE:
        image = decode_image(data, max_pixels=limits.max_pixels, format=sniffed.format)
        array = preprocessor.image(image, max_pixels=limits.max_pixels)
        return array, DecodedMedia(Modality.IMAGE, image=image), {}
    if modality is Modality.VIDEO:
        return _decode_video(sniffed, data, limits, audio_mode, preprocessor, with_parts=with_parts)
    if modality is Modality.AUDIO:
        wire = preprocessor.audio(data, max_duration_s=limits.max_audio_s, mode=audio_mode, format=sniffed.format)
        return wire, DecodedMedia(Modality.AUDIO), {}
    text = decode_text(data, max_chars=limits.max_text_chars)
    return preprocessor.text(text), DecodedMedia(Modality.TEXT, text=text), {}


def _frames_as_images(
    media: DecodedMedia, limits: LimitSettings, preprocessor: Preprocessor
) -> tuple[tuple[float, np.ndarray], ...]:
    """A video's sampled frames as image inputs (150 KB each, at most 10), for moderation:
    each is embedded as an image and scored on its own, so the worst frame wins."""
    frames = media.frames
    if len(frames) > MODERATED_FRAMES:  # PE-AV decodes 16: moderate 10 of them, evenly spread
        frames = tuple(frames[round(i * (len(frames) - 1) / (MODERATED_FRAMES - 1))] for i in range(MODERATED_FRAMES))
    return tuple(
        (time_s, preprocessor.image(Image.fromarray(rgb), max_pixels=limits.max_pixels)) for time_s, rgb in frames
    )


def _decode_video(
    sniffed: Sniffed,
    data: bytes,
    limits: LimitSettings,
    audio_mode: AudioMode,
    preprocessor: Preprocessor,
    *,
    with_parts: bool,
) -> tuple[np.ndarray, DecodedMedia, dict[str, tuple[Modality, np.ndarray]]]:
    """The family's video array (ImageBind: 15 clips; PE-AV: uniformly sampled frames), and the
    first audio track as the part ``audio_track`` (preprocessed as an audio upload of the
    family is)."""
    array, decoded = preprocessor.video(data, format=sniffed.format, limits=video_limits(limits))
    parts: dict[str, tuple[Modality, np.ndarray]] = {}
    notes: tuple[str, ...] = ()
    if with_parts and decoded.info.has_audio:
        try:
            # A long track is read by seeking to its 3 clips (reference mode): its cost stays
            # flat like the frames'. In "full" mode it is decoded whole, within max_audio_s,
            # and a longer one is left out (with a note) rather than decoding hours of sound.
            track = preprocessor.audio_track(
                data, max_duration_s=limits.max_audio_s, mode=audio_mode, format=sniffed.format
            )
            parts[AUDIO_TRACK] = (Modality.AUDIO, track)
        except PermanentError as exc:
            # The frames are fine: the upload is indexed by them, and says why its sound is not.
            log.info("video indexed without its audio track: %s (%s)", exc.message, exc.reason)
            notes = (f"audio track not embedded: {exc.reason}: {exc.message}",)
    frames = tuple((decoded.times_s[i], decoded.frames[i]) for i in sorted(decoded.frames))
    return array, DecodedMedia(Modality.VIDEO, frames=frames, notes=notes), parts

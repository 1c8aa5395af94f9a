"""``GET /v1/uploads/{id}/media`` (the stored original) and ``GET
/v1/uploads/{id}/thumbnail`` (a JPEG made here from an image upload).

Uploads are other people's bytes: a file that is also valid HTML or SVG must never run in
the API's origin. So the original is served only with the content type its bytes were
sniffed as (one of the accepted formats; never HTML, SVG or XML), ``X-Content-Type-Options:
nosniff``, ``Content-Disposition: attachment`` and a CSP that allows nothing and sandboxes
the response; text is served as ``text/plain; charset=utf-8``. A thumbnail is re-encoded
from decoded pixels (`shared.media.image.decode_image`, with the pixel limit; for a video,
its poster: the middle frame, decoded with PyAV under the video limits), so nothing of the
upload's own bytes reaches the browser. A video that cannot be decoded answers its
permanent error (422 ``corrupt_video``, 415 ``unsupported_codec``, 413 for a limit).
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from producers.http.auth import authorize
from producers.http.errors import ApiError, error_responses
from producers.http.lookup import find_upload
from producers.http.state import ApiState, State
from producers.http.uploads import UploadId
from shared.api_keys import KeyScope, Role
from shared.config import LimitSettings
from shared.events import Modality
from shared.media.sniff import sniff
from shared.media.text import decode_text

if TYPE_CHECKING:
    from PIL import Image

router = APIRouter(prefix="/v1", tags=["uploads"])

# Nothing may load, run or frame; `sandbox` gives even a mis-typed document a null origin.
MEDIA_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'"
MIN_SIZE, MAX_SIZE = 32, 1024
VIDEO_MIMES = {"mp4": "video/mp4", "webm": "video/webm", "matroska": "video/x-matroska"}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_headers(content_type: str, disposition: str, filename: str) -> dict[str, str]:
    """The headers of every media response (module docstring). `filename` is reduced to
    ASCII letters, digits and ``._-`` in the plain parameter and percent-encoded in
    ``filename*``, so no quote or newline of a user's file name reaches a header."""
    plain = _SAFE_NAME.sub("_", filename).strip("._") or "upload"
    return {
        "Content-Type": content_type,
        "Content-Disposition": f'{disposition}; filename="{plain[:100]}"; '
        f"filename*=UTF-8''{quote(filename[:200], safe='')}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": MEDIA_CSP,
        "Cross-Origin-Resource-Policy": "same-origin",
        "Cache-Control": "private, max-age=300",
        "Referrer-Policy": "no-referrer",
    }


def _original(state: ApiState, caller: KeyScope, upload_id: str) -> tuple[bytes, str, Modality, str]:
    """The upload's stored bytes, its file name, modality and sniffed format."""
    record = find_upload(state, caller, upload_id)
    if record.object is None:
        raise ApiError(404, "no_media", f"upload {upload_id} has no stored file (an inline text)")
    data = state.client.objects.get(record.object, max_bytes=state.settings.limits.max_bytes)
    sniffed = sniff(data)
    # A container sniffs as audio; the pipeline decided whether it holds video.
    modality = Modality.VIDEO if record.modality is Modality.VIDEO else sniffed.modality
    return data, record.object.key.rsplit("/", 1)[-1], modality, sniffed.format


def media_response(state: ApiState, caller: KeyScope, upload_id: str) -> Response:
    data, filename, modality, format_name = _original(state, caller, upload_id)
    if modality is Modality.TEXT:
        body = decode_text(data, max_chars=state.settings.limits.max_text_chars).encode("utf-8")
        return Response(body, headers=safe_headers("text/plain; charset=utf-8", "attachment", filename))
    mime = VIDEO_MIMES.get(format_name, "application/octet-stream") if modality is Modality.VIDEO else sniff(data).mime
    return Response(data, headers=safe_headers(mime, "attachment", filename))


def _picture(data: bytes, modality: Modality, format_name: str, limits: LimitSettings) -> Image.Image:
    """The picture a thumbnail is made from: the decoded image, or a video's poster frame
    (`shared.media.video.poster_frame`, seeking to the middle frame, under the video limits)."""
    from PIL import Image  # PIL, numpy and PyAV: only for thumbnails

    if modality is Modality.VIDEO:
        from shared.media.video import poster_frame, video_limits

        frame = poster_frame(data, format=format_name, limits=video_limits(limits))
        return Image.fromarray(frame, mode="RGB")
    from shared.media.image import decode_image

    return decode_image(data, max_pixels=limits.max_pixels, format=format_name)


def thumbnail_response(state: ApiState, caller: KeyScope, upload_id: str, size: int) -> Response:
    data, filename, modality, format_name = _original(state, caller, upload_id)
    if modality not in (Modality.IMAGE, Modality.VIDEO):
        raise ApiError(
            404, "no_thumbnail", f"upload {upload_id} is {modality.value}: thumbnails are of images and videos"
        )
    image = _picture(data, modality, format_name, state.settings.limits)
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=82)
    stem = filename.rsplit(".", 1)[0]
    return Response(out.getvalue(), headers=safe_headers("image/jpeg", "inline", f"{stem}.thumb.jpg"))


_MEDIA_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the bytes", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
}


@router.get(
    "/uploads/{upload_id}/media",
    summary="Download an upload's stored file",
    response_class=Response,
    responses={**_MEDIA_RESPONSES, **error_responses(401, 403, 404, 413, 415, 422, 500, 503)},
)
async def media(
    upload_id: UploadId, state: State, caller: Annotated[KeyScope, Depends(authorize(Role.READ))]
) -> Response:
    """The stored original, typed by its sniffed format (text as UTF-8 plain text), as an
    attachment, with ``nosniff`` and a CSP that runs nothing. 404 ``no_media`` for inline
    texts (nothing is stored)."""
    return await run_in_threadpool(media_response, state, caller, upload_id)


@router.get(
    "/uploads/{upload_id}/thumbnail",
    summary="A thumbnail of an image upload, or a video's poster",
    response_class=Response,
    responses={
        200: {
            "description": "a JPEG",
            "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
        },
        **error_responses(401, 403, 404, 413, 415, 422, 500, 503),
    },
)
async def thumbnail(
    upload_id: UploadId,
    state: State,
    caller: Annotated[KeyScope, Depends(authorize(Role.READ))],
    size: Annotated[int, Query(ge=MIN_SIZE, le=MAX_SIZE, description="longest side in pixels")] = 256,
) -> Response:
    """A JPEG of at most `size` pixels a side, re-encoded here from the decoded image, or for
    a video from its middle frame (the poster; the upload's bytes never reach the browser).
    422/415/413 when the file cannot be decoded (as the pipeline would fail it). 404
    ``no_thumbnail`` for audio and text."""
    return await run_in_threadpool(thumbnail_response, state, caller, upload_id, size)

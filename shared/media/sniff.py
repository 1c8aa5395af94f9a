"""What an upload really is, from its bytes (magic numbers and container headers), never
from its name.

We accept few formats, so the checks are hand-written and strict: a file must *start* as
the format it is taken for (no scanning for a signature further in), and weak signatures
(BMP's ``BM``, MP3 frame sync) are confirmed by header fields that must make sense. A
polyglot is read as the format its first bytes announce, and the decoders are then told
that format (`FormatInfo.pillow_format`, `FormatInfo.ffmpeg_demuxer`) so nothing else gets
a chance to interpret it.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from shared.errors import CorruptMedia, UnsupportedMedia
from shared.events import Modality

# How much of a text file sniffing reads; the strict decode of the whole text happens in
# `shared.media.text.decode_text`.
TEXT_SNIFF_BYTES = 64 * 1024
# Unicode category Cc (C0 and C1 controls) minus the whitespace ones (TAB..CR).
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
# Share of control characters (other than whitespace) a text may hold and still be text.
MAX_CONTROL_CHAR_FRACTION = 0.01


@dataclass(frozen=True)
class FormatInfo:
    """One accepted format: its modality, canonical MIME type, the MIME types a client may
    declare for it without that counting as a mismatch, and how to make a decoder read
    exactly this format."""

    name: str
    modality: Modality
    mime: str
    aliases: frozenset[str]
    pillow_format: str | None = None
    ffmpeg_demuxer: str | None = None


def _fmt(
    name: str, modality: Modality, mime: str, *aliases: str, pil: str | None = None, ff: str | None = None
) -> FormatInfo:
    return FormatInfo(name, modality, mime, frozenset((mime, *aliases)), pil, ff)


# Sniffed formats whose containers may carry a video stream (`shared.media.video` opens them
# to see); without one they are audio.
VIDEO_CONTAINERS = frozenset({"mp4", "webm", "matroska"})

FORMATS: dict[str, FormatInfo] = {
    f.name: f
    for f in (
        _fmt("jpeg", Modality.IMAGE, "image/jpeg", "image/jpg", "image/pjpeg", pil="JPEG"),
        _fmt("png", Modality.IMAGE, "image/png", "image/x-png", "image/apng", pil="PNG"),
        _fmt("gif", Modality.IMAGE, "image/gif", pil="GIF"),
        _fmt("webp", Modality.IMAGE, "image/webp", pil="WEBP"),
        _fmt("bmp", Modality.IMAGE, "image/bmp", "image/x-bmp", "image/x-ms-bmp", pil="BMP"),
        _fmt("tiff", Modality.IMAGE, "image/tiff", "image/tiff-fx", pil="TIFF"),
        _fmt("wav", Modality.AUDIO, "audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", ff="wav"),
        _fmt("flac", Modality.AUDIO, "audio/flac", "audio/x-flac", ff="flac"),
        _fmt(
            "ogg", Modality.AUDIO, "audio/ogg", "application/ogg", "audio/opus", "audio/vorbis", "video/ogg", ff="ogg"
        ),
        _fmt("mp3", Modality.AUDIO, "audio/mpeg", "audio/mp3", "audio/mpeg3", "audio/x-mpeg", "audio/x-mp3", ff="mp3"),
        _fmt("aac", Modality.AUDIO, "audio/aac", "audio/x-aac", "audio/aacp", ff="aac"),
        _fmt("mp4", Modality.AUDIO, "audio/mp4", "audio/x-m4a", "audio/m4a", "video/mp4", "video/quicktime", ff="mov"),
        _fmt("webm", Modality.AUDIO, "audio/webm", "video/webm", ff="matroska"),
        _fmt("matroska", Modality.AUDIO, "audio/x-matroska", "video/x-matroska", ff="matroska"),
        _fmt("text", Modality.TEXT, "text/plain"),
    )
}

# Declared types that say nothing about the content.
_GENERIC_MIMES = frozenset({"application/octet-stream", "binary/octet-stream", "application/unknown", ""})
# Non-``text/*`` types whose content is text.
_TEXT_APPLICATION_MIMES = frozenset({"application/json", "application/xml", "application/x-ndjson", "application/yaml"})


@dataclass(frozen=True)
class Sniffed:
    """The verdict: `format` names an entry of `FORMATS`; `mismatch` is True when the
    declared content type names something else (informational: the bytes win)."""

    modality: Modality
    mime: str
    format: str
    mismatch: bool

    @property
    def info(self) -> FormatInfo:
        return FORMATS[self.format]


def sniff(data: bytes, declared_content_type: str | None = None) -> Sniffed:
    """Identify `data` by its content.

    Takes the whole upload (only a prefix is examined) and the client's declared content
    type, if any. Returns a `Sniffed`. Raises `CorruptMedia` (reason ``empty_file``) for zero
    bytes and `UnsupportedMedia` (reason ``unsupported_format``) for anything not accepted.
    """
    if not data:
        raise CorruptMedia("the upload is empty (0 bytes)", reason="empty_file")
    name = _sniff_binary(data) or _sniff_text(data)
    if name is None:
        raise UnsupportedMedia(
            f"unsupported content (first bytes {data[:16].hex(' ')}); accepted: "
            "JPEG, PNG, GIF, WebP, BMP, TIFF, WAV, FLAC, Ogg, MP3, AAC, MP4/M4A, WebM/Matroska, UTF-8/UTF-16 text",
            reason="unsupported_format",
        )
    info = FORMATS[name]
    return Sniffed(info.modality, info.mime, name, not _declared_matches(declared_content_type, info))


def _declared_matches(declared: str | None, info: FormatInfo) -> bool:
    if declared is None:
        return True
    mime = declared.split(";", 1)[0].strip().lower()
    if mime in _GENERIC_MIMES:
        return True
    if info.modality is Modality.TEXT:
        return mime.startswith("text/") or mime in _TEXT_APPLICATION_MIMES
    return mime in info.aliases


# Unambiguous signatures at offset 0.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"fLaC", "flac"),
    (b"OggS", "ogg"),
)
# RIFF containers: (form type at offset 8, format).
_RIFF_FORMS = {b"WAVE": "wav", b"WEBP": "webp"}


def _sniff_binary(data: bytes) -> str | None:
    head = data[:16]
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] in (b"RIFF", b"RF64"):  # RF64 is WAVE's 64-bit variant
        form = _RIFF_FORMS.get(head[8:12])
        return form if head[:4] == b"RIFF" or form == "wav" else None
    if head.startswith(b"BM"):
        return "bmp" if _is_bmp(data) else None
    if head[4:8] == b"ftyp":
        return _sniff_iso_bmff(data)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in data[:64] else "matroska"  # the EBML DocType
    if head.startswith(b"ID3"):
        return _after_id3(data)
    if text_encoding(data)[1]:
        # A UTF-16LE byte-order mark (FF FE) is also a plausible MPEG frame sync.
        return None
    return _sniff_mpeg_audio(data, 0)


def _is_bmp(data: bytes) -> bool:
    """``BM`` alone is too weak (plenty of texts start with it): the reserved words must be
    zero and the info-header size one of the sizes Windows and OS/2 define."""
    if len(data) < 26:
        return False
    reserved = data[6:10]
    pixel_offset = int.from_bytes(data[10:14], "little")
    dib_size = int.from_bytes(data[14:18], "little")
    return reserved == b"\0\0\0\0" and dib_size in {12, 16, 40, 52, 56, 64, 108, 124} and pixel_offset >= 14 + dib_size


# ISO base media brands that are still images (HEIF/AVIF), which we do not accept.
_IMAGE_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"})


def _sniff_iso_bmff(data: bytes) -> str | None:
    size = int.from_bytes(data[0:4], "big")
    if size < 16 or size > 4096:
        return None
    box = data[8:size]
    brands = {box[i : i + 4] for i in range(0, len(box) - 3, 4) if i != 4}  # skip minor_version
    if brands & _IMAGE_BRANDS:
        return None
    return "mp4"


def _after_id3(data: bytes) -> str | None:
    """An ID3v2 tag may precede MP3, AAC (ADTS) or FLAC data; what follows decides."""
    if len(data) < 10 or any(b >= 0x80 for b in data[6:10]):
        return None
    size = 10 + ((data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9])
    if data[5] & 0x10:  # footer present
        size += 10
    # Some encoders pad after the tag; bounded so a file of zeros costs nothing.
    padding = data[size : size + _MAX_ID3_PADDING]
    size += len(padding) - len(padding.lstrip(b"\0"))
    if data[size : size + 4] == b"fLaC":
        return "flac"
    return _sniff_mpeg_audio(data, size)


_MAX_ID3_PADDING = 64 * 1024

# kbit/s by [version is MPEG-1][layer 1..3][index]; index 0 (free format) and 15 are refused.
_BITRATES_KBPS = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # layers II and III
}
_SAMPLE_RATES_HZ = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_ADTS_SAMPLE_RATES_HZ = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def _mpeg_frame_length(header: bytes) -> int | None:
    """Length in bytes of the MPEG-1/2/2.5 audio frame starting with `header`, or None if
    the four bytes are not a plausible frame header."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = (header[1] >> 3) & 3
    layer = 4 - ((header[1] >> 1) & 3)
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 3
    if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    mpeg1 = version == 3
    bitrate = _BITRATES_KBPS[(mpeg1, min(layer, 2) if not mpeg1 else layer)][bitrate_index] * 1000
    sample_rate = _SAMPLE_RATES_HZ[version][rate_index]
    padding = (header[2] >> 1) & 1
    if layer == 1:
        return (12 * bitrate // sample_rate + padding) * 4
    per_frame = 144 if (mpeg1 or layer == 2) else 72
    return per_frame * bitrate // sample_rate + padding


def _adts_frame_length(header: bytes) -> int | None:
    if len(header) < 7 or header[0] != 0xFF or header[1] & 0xF6 != 0xF0:
        return None
    if (header[2] >> 2) & 0xF >= len(_ADTS_SAMPLE_RATES_HZ):
        return None
    length = ((header[3] & 0x3) << 11) | (header[4] << 3) | (header[5] >> 5)
    return length if length >= 7 else None


def _sniff_mpeg_audio(data: bytes, offset: int) -> str | None:
    """Frame sync is a weak signature, so a second frame must start exactly where the first
    ends (or the data must end there)."""
    for name, frame_length in (("mp3", _mpeg_frame_length), ("aac", _adts_frame_length)):
        first = frame_length(data[offset : offset + 7])
        if first is None:
            continue
        following = offset + first
        if following == len(data) or frame_length(data[following : following + 7]) is not None:
            return name
    return None


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def text_encoding(data: bytes) -> tuple[str, int]:
    """The encoding a text upload is read with and the length of its byte-order mark:
    a BOM names UTF-8/16/32; without one only UTF-8 is assumed (legacy 8-bit encodings
    cannot be told apart reliably, so they are not guessed)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding, len(bom)
    return "utf-8", 0


def _sniff_text(data: bytes) -> str | None:
    encoding, bom_length = text_encoding(data)
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    sample = data[bom_length : bom_length + TEXT_SNIFF_BYTES]
    try:
        text = decoder.decode(sample, final=len(data) <= bom_length + TEXT_SNIFF_BYTES)
    except UnicodeDecodeError:
        return None
    return "text" if looks_like_text(text) else None


def looks_like_text(text: str) -> bool:
    """No NUL and at most `MAX_CONTROL_CHAR_FRACTION` of control characters besides
    whitespace: binary data that happens to be valid UTF-8 fails this."""
    if "\0" in text:
        return False
    controls = len(_CONTROL_CHARS.findall(text))
    return controls <= MAX_CONTROL_CHAR_FRACTION * max(len(text), 1)

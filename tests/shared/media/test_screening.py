"""Polyglots, disguised content types and near-text: the checks sniffing does not make."""

from __future__ import annotations

import io
import zipfile

import pytest

from shared.errors import UnsupportedMedia
from shared.events import Modality
from shared.media.screening import (
    DeclaredTypeMismatch,
    Polyglot,
    check_declared_modality,
    check_not_polyglot,
    declared_modality,
    explain_unsupported,
    is_zip_archive,
    png_end,
)
from shared.media.sniff import sniff
from tests.shared.media.samples import read_sample

PNG = read_sample("small_100x150.png")
JPEG = read_sample("rgb_landscape_640x427.jpg")
WAV = read_sample("tone_16k_1s_mono.wav")


def _zip(comment: bytes = b"") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("index.html", "<script>alert(1)</script>")
        archive.comment = comment
    return out.getvalue()


@pytest.mark.parametrize("carrier", [PNG, JPEG, WAV], ids=["png", "jpeg", "wav"])
@pytest.mark.parametrize("comment", [b"", b"x" * 300], ids=["plain", "with-comment"])
def test_a_file_that_is_also_a_zip_archive_is_a_polyglot(carrier: bytes, comment: bytes) -> None:
    data = carrier + _zip(comment)
    assert zipfile.is_zipfile(io.BytesIO(data)), "the archive really opens"

    with pytest.raises(Polyglot) as caught:
        check_not_polyglot(data, sniff(data))
    assert caught.value.reason == "polyglot"


def test_zip_signatures_that_do_not_add_up_are_not_an_archive() -> None:
    end_record = _zip()[-22:]
    assert not is_zip_archive(JPEG + end_record)  # no central directory where it points
    assert not is_zip_archive(JPEG + end_record + b"trailing")  # the record does not end the file
    assert not is_zip_archive(b"PK\x05\x06" * 40)


@pytest.mark.parametrize("trailer", [b"<html><script>alert(1)</script></html>", b"MZ\x90\x00" + bytes(200)])
def test_data_after_a_pngs_end_is_a_polyglot(trailer: bytes) -> None:
    data = PNG + trailer
    with pytest.raises(Polyglot, match="after its IEND chunk"):
        check_not_polyglot(data, sniff(data))


def test_clean_files_and_harmless_padding_pass() -> None:
    for data in (PNG, PNG + b"\x00\x00\r\n", JPEG, JPEG + b"vendor trailer", WAV):
        check_not_polyglot(data, sniff(data))
    assert png_end(PNG) == len(PNG)
    assert png_end(PNG[:40]) is None


@pytest.mark.parametrize(
    ("declared", "modality"),
    [
        ("image/png", Modality.IMAGE),
        ("image/svg+xml", Modality.IMAGE),
        ("video/mp4", Modality.AUDIO),
        ("audio/x-wav; codecs=1", Modality.AUDIO),
        ("text/html; charset=utf-8", Modality.TEXT),
        ("application/json", Modality.TEXT),
        ("application/octet-stream", None),
        ("application/pdf", None),
        (None, None),
        ("", None),
    ],
)
def test_the_modality_a_declared_type_claims(declared: str | None, modality: Modality | None) -> None:
    assert declared_modality(declared) is modality


def test_markup_declared_as_an_image_is_a_disguise() -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'
    with pytest.raises(DeclaredTypeMismatch, match=r"declared as image/svg\+xml \(image\) but the content is text"):
        check_declared_modality("image/svg+xml", sniff(svg, "image/svg+xml"))


def test_a_wrong_type_within_the_modality_or_a_generic_one_is_only_recorded() -> None:
    check_declared_modality("image/jpeg", sniff(PNG, "image/jpeg"))
    check_declared_modality("application/octet-stream", sniff(PNG, "application/octet-stream"))
    check_declared_modality("application/pdf", sniff(PNG, "application/pdf"))


def _refusal(data: bytes) -> UnsupportedMedia:
    with pytest.raises(UnsupportedMedia) as caught:
        sniff(data)
    return explain_unsupported(data, caught.value)


def test_legacy_8_bit_text_is_not_utf8() -> None:
    assert _refusal("Crème brûlée, déjà vu — 5 €".encode("cp1252")).reason == "not_utf8"


@pytest.mark.parametrize("data", [b"hello\x00world\x00" * 10, "plain words".encode("utf-16-le")])
def test_text_with_nul_bytes_is_not_text(data: bytes) -> None:
    assert _refusal(data).reason == "not_text"


@pytest.mark.parametrize("data", [bytes(range(256)) * 4, b"\x7fELF\x02\x01\x01" + bytes(100), _zip()])
def test_binary_content_keeps_its_unsupported_format_reason(data: bytes) -> None:
    assert _refusal(data).reason == "unsupported_format"

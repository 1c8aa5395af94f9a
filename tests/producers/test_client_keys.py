from __future__ import annotations

import pytest

from producers.client import object_key_for
from producers.query import query_of
from shared.events import Modality
from shared.objects.keys import validate_key


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("cat.jpg", "u1/cat.jpg"),
        ("/home/me/Photos/été 2024.png", "u1/été 2024.png"),
        ("C:\\Users\\me\\song.mp3", "u1/song.mp3"),
        ("bad\x00name.wav", "u1/upload.wav"),
        ("..", "u1/upload"),
        (None, "u1/upload"),
    ],
)
def test_blob_keys_keep_the_file_name_when_it_is_a_safe_key(filename: str | None, expected: str) -> None:
    key = object_key_for("u1", filename)
    assert key == expected
    assert validate_key(key) == key


def test_a_query_needs_exactly_one_input() -> None:
    assert query_of("a dog", None, None).modality is Modality.TEXT
    assert query_of(None, b"png", None).modality is Modality.IMAGE
    assert query_of(None, None, b"wav").modality is Modality.AUDIO
    with pytest.raises(ValueError, match="exactly one"):
        query_of("a dog", b"png", None)
    with pytest.raises(ValueError, match="exactly one"):
        query_of(None, None, None)

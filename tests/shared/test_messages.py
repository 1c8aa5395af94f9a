from __future__ import annotations

import msgpack
import numpy as np
import pytest

from shared.errors import InvalidEvent
from shared.events import Modality, ObjectRef, UploadEvent
from shared.messages import EmbeddedUpload, MediaFacts, PreparedUpload, Query


def _through_the_wire(doc: dict) -> dict:
    """What a Celery msgpack message does to a payload."""
    return msgpack.unpackb(msgpack.packb(doc, use_bin_type=True), raw=False)


def test_prepared_upload_survives_the_wire_with_its_array_bit_exact() -> None:
    event = UploadEvent(object=ObjectRef(bucket="b", key="k.png"), tenant="t", metadata={"a": "1"})
    facts = MediaFacts(
        sha256="ab" * 32,
        size=10,
        content_type="image/png",
        declared_content_type="image/jpeg",
        type_mismatch=True,
        notes=("first frame",),
    )
    pixels = np.random.default_rng(0).integers(0, 255, (3, 224, 224), dtype=np.uint8)
    restored = PreparedUpload.from_wire(
        _through_the_wire(PreparedUpload(event, Modality.IMAGE, pixels, facts).to_wire())
    )
    assert restored.event == event
    assert restored.facts == facts
    assert restored.modality is Modality.IMAGE
    assert np.array_equal(restored.array, pixels) and restored.array.dtype == np.uint8


def test_embedded_upload_carries_a_float32_vector_and_the_model_identity() -> None:
    event = UploadEvent(text="hello")
    vector = np.full(32, 1 / np.sqrt(32), dtype=np.float32)
    doc = _through_the_wire(EmbeddedUpload(event, Modality.TEXT, vector, "imagebind-tiny-random", "c0ffee").to_wire())
    restored = EmbeddedUpload.from_wire(doc)
    assert np.array_equal(restored.vector, vector) and restored.vector.dtype == np.float32
    assert (restored.model, restored.checkpoint) == ("imagebind-tiny-random", "c0ffee")


def test_a_message_of_another_version_is_refused() -> None:
    doc = Query(Modality.TEXT, text="x").to_wire()
    doc["v"] = 99
    with pytest.raises(InvalidEvent, match="version"):
        Query.from_wire(doc)

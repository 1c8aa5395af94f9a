"""A search hit through a transcript names the passage that matched and its times (pure),
and the HTTP API's hit carries it."""

from __future__ import annotations

import numpy as np

from producers.http.models import Hit
from shared.events import Modality
from shared.messages import SpeechPart
from shared.speech.search import explain_hits, nearest_passage
from shared.speech.transcript import Passage, Segment, Transcript
from shared.vectors.records import SearchHit, VectorRecord


def spoken_record() -> tuple[VectorRecord, np.ndarray]:
    passages = (Passage(0.0, 4.0, "welcome to the show"), Passage(65.0, 70.5, "our refund policy is simple"))
    transcript = Transcript(
        model="faster-whisper/tiny.en",
        segments=tuple(Segment(p.start_s, p.end_s, p.text, 0.9) for p in passages),
        passages=passages,
    )
    vectors = np.eye(2, 8, dtype=np.float32)
    doc = SpeechPart(transcript, vectors, checkpoint="c").to_record()
    record = VectorRecord("clip", np.eye(1, 8, 5, dtype=np.float32)[0], Modality.AUDIO, transcript=doc)
    return record, vectors


def test_the_nearest_passage_is_quoted_with_its_times() -> None:
    record, vectors = spoken_record()
    query = vectors[1] + 0.1 * vectors[0]
    found = nearest_passage(record.transcript, query)
    assert found is not None and found[0].text == "our refund policy is simple"
    hits = explain_hits([SearchHit(record, 0.8, part="transcript"), SearchHit(record, 0.7)], query)
    assert hits[0].detail == 'transcript: said "our refund policy is simple" at 1:05-1:10'
    assert hits[1].detail == ""  # matched by its main vector: nothing to quote
    assert Hit.of(hits[0]).detail == hits[0].detail and Hit.of(hits[1]).detail is None


def test_a_record_without_passage_vectors_has_no_detail() -> None:
    record, vectors = spoken_record()
    bare = VectorRecord("bare", record.vector, Modality.AUDIO, transcript={"text": "hello", "passages": []})
    assert explain_hits([SearchHit(bare, 0.5, part="transcript")], vectors[0])[0].detail == ""

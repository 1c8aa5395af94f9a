"""The torch-free half of `omnibind reindex` (shared.reindex): where the vectors go, the
order uploads are taken in, and the progress kept in a real redis-server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import numpy as np
import pytest
import redis

from shared.config import Settings
from shared.errors import PermanentError
from shared.events import Modality, ObjectRef
from shared.reindex import (
    ReindexState,
    cutover_env,
    failure_of,
    is_current,
    pending_keys,
    target_index,
    upload_event,
    with_index,
)
from shared.vectors.records import VectorRecord


def record(upload_id: str, tenant: str | None = None, **fields: object) -> VectorRecord:
    ref = ObjectRef(bucket="uploads", key=f"{upload_id}.png")
    return VectorRecord(upload_id, np.ones(4, np.float32) / 2, Modality.IMAGE, object=ref, tenant=tenant, **fields)  # type: ignore[arg-type]


def test_the_target_index_is_named_from_the_model_per_backend(make_settings: Callable[..., Settings]) -> None:
    lance = make_settings()
    assert target_index(lance, "pe-av-tiny") == "uploads__pe_av_tiny"
    weaviate = make_settings(vectors={"backend": "weaviate", "url": "http://localhost:1"})
    assert target_index(weaviate, "pe-av-base") == "OmnibindUpload_PeAvBase"
    assert cutover_env(weaviate, "OmnibindUpload_PeAvBase", "pe-av-base") == {
        "OMNIBIND_MODEL__NAME": "pe-av-base",
        "OMNIBIND_VECTORS__COLLECTION": "OmnibindUpload_PeAvBase",
    }
    moved = with_index(lance, "uploads__pe_av_tiny", "pe-av-tiny")
    assert (moved.vectors.table, moved.model.name) == ("uploads__pe_av_tiny", "pe-av-tiny")


def test_the_model_checkpoint_file_does_not_follow_a_change_of_model(
    make_settings: Callable[..., Settings], tmp_path
) -> None:
    settings = make_settings(model={"name": "huge", "checkpoint": tmp_path / "imagebind_huge.pth", "sha256": "ab" * 32})
    moved = with_index(settings, "uploads__pe_av_base", "pe-av-base")
    assert moved.model.checkpoint is None and moved.model.sha256 is None


def test_uploads_are_taken_by_tenant_then_id_after_the_cursor_and_within_the_scope() -> None:
    records = [record("b", "acme"), record("a", "globex"), record("c", None), record("a", "acme")]
    assert pending_keys(records, None, None) == [("", "c"), ("acme", "a"), ("acme", "b"), ("globex", "a")]
    assert pending_keys(records, None, ("acme", "a")) == [("acme", "b"), ("globex", "a")]
    assert pending_keys(records, "globex", None) == [("globex", "a")]


def test_an_inline_text_upload_cannot_be_re_embedded_and_says_why() -> None:
    inline = VectorRecord("t1", np.ones(4, np.float32) / 2, Modality.TEXT)
    with pytest.raises(PermanentError) as caught:
        upload_event(inline)
    assert caught.value.reason == "no_object"
    event = upload_event(record("i1", "acme", metadata={"k": "v"}))
    assert (event.id, event.tenant, event.metadata, event.modality) == ("i1", "acme", {"k": "v"}, Modality.AUTO)


def test_a_target_record_is_current_only_for_the_same_model_bytes_and_tenant_written_later() -> None:
    source = record("x", "acme", sha256="s1", model="imagebind-tiny-random")
    later = source.indexed_at + timedelta(seconds=1)
    held = record("x", "acme", sha256="s1", model="pe-av-tiny-random", indexed_at=later)
    assert is_current(held, source, "pe-av-tiny-random")
    assert not is_current(held, source, "pe-av-base")
    assert not is_current(
        record("x", "acme", sha256="s2", model="pe-av-tiny-random", indexed_at=later), source, "pe-av-tiny-random"
    )
    assert not is_current(
        record("x", "other", sha256="s1", model="pe-av-tiny-random", indexed_at=later), source, "pe-av-tiny-random"
    )
    early = record(
        "x", "acme", sha256="s1", model="pe-av-tiny-random", indexed_at=source.indexed_at - timedelta(seconds=1)
    )
    assert not is_current(early, source, "pe-av-tiny-random")
    assert not is_current(None, source, "pe-av-tiny-random")


def test_progress_resumes_after_the_cursor_and_a_finished_reindex_starts_a_new_pass(redis_conn: redis.Redis) -> None:
    state = ReindexState(redis_conn, "omnibind", "uploads__pe_av_tiny", None)
    assert state.begin(model="m", checkpoint="c", source="uploads", fresh=False) is None
    state.set_total(3)
    state.advance(
        ("acme", "a"),
        embedded=["a"],
        skipped=0,
        failures=[failure_of("b", PermanentError("gone", reason="object_not_found"))],
    )
    again = ReindexState(redis_conn, "omnibind", "uploads__pe_av_tiny", None)
    assert again.begin(model="m", checkpoint="c", source="uploads", fresh=False) == ("acme", "a")
    progress = again.progress()
    assert progress is not None and (progress.embedded, progress.failed, progress.total) == (1, 1, 3)
    assert [(f.upload_id, f.reason) for f in again.failures()] == [("b", "object_not_found")]
    again.advance(("acme", "b"), embedded=["b"], skipped=1, failures=[])
    assert again.failures() == [], "an upload that succeeds later is no longer listed as failed"
    again.finish()
    assert again.begin(model="m", checkpoint="c", source="uploads", fresh=False) is None, "a catch-up pass starts over"
    other_tenant = ReindexState(redis_conn, "omnibind", "uploads__pe_av_tiny", "acme")
    assert other_tenant.progress() is None, "each tenant scope has its own progress"

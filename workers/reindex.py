"""`omnibind reindex --model NAME`: re-embed every stored upload from its object with another
model, into an index of that model's own (`shared.reindex` says which, in what order, and
keeps the progress in Redis). Runs as one foreground process (`python -m workers.reindex`,
exec'd by the CLI): it loads the new model like a gpu worker, reads and preprocesses each
object like a cpu worker, and writes records like an index worker — through the same
functions — so a re-embedded record equals what the pipeline would have written.

Each upload keeps its id, tenant, source, metadata, submission time and moderation decision
(the decision stands until ``omnibind rescore`` re-scores it with the new model's policy
section: scores of two models do not compare). An upload that cannot be re-embedded (object
gone, inline text, content the new model rejects) is recorded with its reason and the run
goes on; a store or Redis that is down stops the run (exit 2): run the same command again
to resume after the last finished batch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from shared.config import Settings, load_settings
from shared.errors import OmnibindError, PermanentError
from shared.events import Modality, Moderation
from shared.logs import configure_logging
from shared.messages import EmbeddedUpload, PreparedUpload, SpeechPart
from shared.objects.factory import open_object_store
from shared.objects.store import ObjectStore
from shared.redis_client import redis_client_from_settings
from shared.reindex import (
    Failure,
    Progress,
    ReindexState,
    SortKey,
    current_index,
    cutover_env,
    failure_of,
    in_scope,
    is_current,
    pending_keys,
    summary_line,
    target_index,
    upload_event,
    with_index,
)
from shared.vectors.factory import open_vector_store
from shared.vectors.model_guard import check_one_model, stored_model
from shared.vectors.records import VectorRecord
from shared.vectors.store import VectorStore
from workers.gpu import GpuRunner, Result
from workers.preprocess import fetch_blob, prepare_upload
from workers.records import build_record

log = logging.getLogger(__name__)


class SameIndex(PermanentError):
    reason = "same_index"


@dataclass
class Pending:
    """One upload of a batch while its vectors are computed."""

    source: VectorRecord
    prepared: PreparedUpload
    main: Future[Result]
    parts: dict[str, Future[Result]] = field(default_factory=dict)


@dataclass
class Batch:
    records: list[VectorRecord] = field(default_factory=list)
    embedded: list[str] = field(default_factory=list)
    skipped: int = 0
    failures: list[Failure] = field(default_factory=list)


class Reindexer:
    """Re-embeds the uploads of one index (the configured one) into `target` with `model`."""

    def __init__(
        self,
        settings: Settings,
        runner: GpuRunner,
        *,
        objects: ObjectStore,
        source: VectorStore,
        target: VectorStore,
        state: ReindexState,
        tenant: str | None,
    ) -> None:
        self.settings, self.runner, self.objects = settings, runner, objects
        self.source, self.target, self.state, self.tenant = source, target, state, tenant
        self.timeout_s = settings.worker.task_time_limit_s

    def run(self, *, batch_size: int, fresh: bool, report: Callable[[Progress], None]) -> Progress:
        """Resume (or start) and re-embed every pending upload; returns the final progress.
        Raises `ModelMismatch` when the target holds another model's vectors, and what a
        store or Redis that is down raises (`TransientError`)."""
        check_one_model(stored_model(self.target), [self._probe()])
        cursor = self.state.begin(
            model=self.runner.model_name,
            checkpoint=self.runner.checkpoint,
            source=current_index(self.settings),
            fresh=fresh,
        )
        records = list(self.source.iter_records())
        self.state.set_total(sum(1 for record in records if in_scope(record, self.tenant)))
        keys = pending_keys(records, self.tenant, cursor)
        del records  # the vectors of the whole index are not held while re-embedding
        for start in range(0, len(keys), batch_size):
            chunk = keys[start : start + batch_size]
            batch = self._batch(chunk)
            if batch.records:
                check_one_model(self.runner.model_name, batch.records)
                self.target.upsert(batch.records)
            self.state.advance(chunk[-1], embedded=batch.embedded, skipped=batch.skipped, failures=batch.failures)
            report(self._progress())
        self.state.finish()
        return self._progress()

    def _progress(self) -> Progress:
        progress = self.state.progress()
        assert progress is not None  # begun above
        return progress

    def _probe(self) -> VectorRecord:
        """A record that says which model this run writes (for the target's model check)."""
        dim = self.runner.embedder.out_dim
        return VectorRecord(
            upload_id="-", vector=np.zeros(dim, np.float32), modality=Modality.IMAGE, model=self.runner.model_name
        )

    def _batch(self, keys: Sequence[SortKey]) -> Batch:
        batch = Batch()
        pending: list[Pending] = []
        for _, upload_id in keys:
            source = self.source.get(upload_id)
            if source is None or is_current(self.target.get(upload_id), source, self.runner.model_name):
                batch.skipped += 1  # deleted since the list was read, or done by an earlier pass
                continue
            try:
                pending.append(self._submit(source))
            except PermanentError as exc:
                batch.failures.append(failure_of(upload_id, exc))
        for item in pending:
            try:
                batch.records.append(self._record(item))
                batch.embedded.append(item.source.upload_id)
            except (PermanentError, TimeoutError) as exc:
                batch.failures.append(failure_of(item.source.upload_id, exc))
        return batch

    def _submit(self, source: VectorRecord) -> Pending:
        """Fetch and preprocess the upload's object and queue its vectors (they batch with the
        rest of the batch's). Raises `PermanentError` for what cannot be re-embedded."""
        event, data = fetch_blob(self.objects, upload_event(source), max_bytes=self.settings.objects.max_bytes)
        prepared = prepare_upload(
            event,
            data,
            self.settings.limits,
            audio_mode=self.settings.model.audio_mode,
            preprocessor=self.runner.preprocessor,
        )
        parts = {name: self.runner.submit(modality, array) for name, (modality, array) in prepared.parts.items()}
        return Pending(source, prepared, self.runner.submit(prepared.modality, prepared.array), parts)

    def _record(self, item: Pending) -> VectorRecord:
        prepared, wait = item.prepared, self.runner.wait
        embedded = EmbeddedUpload(
            event=prepared.event,
            modality=prepared.modality,
            vector=wait(item.main, timeout_s=self.timeout_s),
            model=self.runner.model_name,
            checkpoint=self.runner.checkpoint,
            facts=prepared.facts,
            parts={
                name: (prepared.parts[name][0], wait(future, timeout_s=self.timeout_s))
                for name, future in item.parts.items()
            },
            speech=self._speech(item.source),
        )
        return build_record(embedded, carried_moderation(item.source.moderation, item.source.model))

    def _speech(self, source: VectorRecord) -> SpeechPart | None:
        """The stored transcript, its passages embedded again as text by the new model (the
        transcript itself is kept: re-transcribing would not change it)."""
        if not source.transcript:
            return None
        part = SpeechPart.from_record(source.transcript)
        texts = [passage.text for passage in part.transcript.passages]
        vectors = self.runner.embed_texts(texts, timeout_s=self.timeout_s) if texts else None
        return SpeechPart(part.transcript, vectors, self.runner.checkpoint, part.detector_scores)


def carried_moderation(moderation: Moderation, previous_model: str) -> Moderation:
    """The source record's decision, kept (a blocked upload stays blocked), with a note that
    its scores are another model's until `omnibind rescore` runs with the new model."""
    if moderation.policy_version is None and not moderation.flagged:
        return moderation
    note = (
        f"decision carried over from {previous_model or 'the previous model'} by omnibind reindex; "
        "its scores are that model's until omnibind rescore runs with this model's policy section"
    )
    return moderation.model_copy(update={"notes": (*moderation.notes, note)})


def open_reindexer(
    settings: Settings, model: str, *, tenant: str | None, into: str | None, checkpoint: Path | None = None
) -> Reindexer:
    """Everything a reindex of the configured index into `model`'s own index needs. Raises
    `SameIndex` when the target is the index being read, `CheckpointError` for the model."""
    target_name = into or target_index(settings, model)
    if target_name == current_index(settings):
        raise SameIndex(
            f"the configured index is already {target_name!r}: a reindex reads the current index and writes "
            "another; run it with the settings of the index to re-embed (the previous model's)"
        )
    new_settings = with_index(settings, target_name, model)
    if checkpoint is not None:
        new_settings = new_settings.model_copy(
            update={"model": new_settings.model.model_copy(update={"checkpoint": checkpoint})}
        )
    runner = GpuRunner.from_settings(new_settings)
    return Reindexer(
        new_settings,
        runner,
        objects=open_object_store(settings),
        source=open_vector_store(settings),
        target=open_vector_store(new_settings, dimension=runner.embedder.out_dim),
        state=ReindexState(redis_client_from_settings(settings), settings.queue_prefix, target_name, tenant),
        tenant=tenant,
    )


def progress_printer(out: TextIO) -> Callable[[Progress], None]:
    def report(progress: Progress) -> None:
        scope = "every tenant" if progress.scope == "*" else f"tenant {progress.scope}"
        print(
            f"reindex {progress.target} ({scope}): {progress.done}/{progress.total} done; {summary_line(progress)}",
            file=out,
            flush=True,
        )

    return report


def parser() -> argparse.ArgumentParser:
    args = argparse.ArgumentParser(prog="omnibind reindex", description=__doc__)
    args.add_argument("--model", required=True)
    args.add_argument("--tenant", default=None)
    args.add_argument("--into", default=None)
    args.add_argument("--batch-size", type=int, default=16)
    args.add_argument("--fresh", action="store_true")
    args.add_argument("--checkpoint", type=Path, default=None)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run a reindex in the foreground; exit 0 when every upload was taken (some may have
    failed, listed by ``omnibind reindex --model NAME --failures``), 1 for a configuration
    error, 2 when a store or Redis stopped it (run it again to resume)."""
    options = parser().parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        reindexer = open_reindexer(
            settings, options.model, tenant=options.tenant, into=options.into, checkpoint=options.checkpoint
        )
    except OmnibindError as exc:
        print(f"omnibind reindex: {exc.reason}: {exc}", file=sys.stderr)
        return 1
    try:
        final = reindexer.run(batch_size=options.batch_size, fresh=options.fresh, report=progress_printer(sys.stderr))
    except PermanentError as exc:
        print(f"omnibind reindex: {exc.reason}: {exc}", file=sys.stderr)
        return 1
    except OmnibindError as exc:
        print(f"omnibind reindex: stopped ({exc.reason}: {exc}); run the same command again to resume", file=sys.stderr)
        return 2
    finally:
        reindexer.runner.close()
        reindexer.source.close()
        reindexer.target.close()
    print(f"reindexed into {final.target} with {reindexer.runner.model_name}: {summary_line(final)}")
    env = cutover_env(settings, final.target, options.model)
    print("cut over: set " + " ".join(f"{k}={v}" for k, v in env.items()) + " on every process and restart them")
    back = cutover_env(settings, current_index(settings), settings.model.name)
    print("roll back: set " + " ".join(f"{k}={v}" for k, v in back.items()) + " (the old index is left as it was)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Producer-side moderation tools (no model here): the blocklist, re-scoring stored
records under a policy, and calibration on a labelled folder.

Embeddings come from the workers (`Client.embed_query_with_model`); prompt embeddings of a
policy the GPU workers were not started with are asked for with the
``omnibind.embed_prompts`` task. Re-scoring never re-embeds an upload: it reads the stored
vectors, SHA-256s and detector scores and applies the (new) policy to them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from producers.client import Client
from producers.query import QueryEmbedding, worker_reply
from shared.audit import UNKNOWN_ACTOR
from shared.errors import ConfigError, PermanentError
from shared.events import Modality, Moderation
from shared.media.sniff import sniff
from shared.media.text import decode_text
from shared.messages import SpeechPart
from shared.models.catalog import CATALOG, card_for
from shared.moderation.blocklist import Blocklist, BlocklistCache, BlocklistEntry, entry_id_for
from shared.moderation.calibration import SAFE_LABEL, LabelledScores
from shared.moderation.detectors import DetectorResult
from shared.moderation.log import DecisionLog
from shared.moderation.moderator import Moderator, scored_parts
from shared.moderation.policy import Policy
from shared.moderation.prompts import PromptRequest, PromptStore
from shared.moderation.zeroshot import zero_shot_scores
from shared.queue import QueueName, TaskName
from shared.vectors.model_guard import stored_model
from shared.vectors.records import VectorRecord

RESCORE_BATCH = 256
CALIBRATE_THREADS = 8


def embed_file(client: Client, data: bytes, *, timeout_s: float) -> tuple[Modality, QueryEmbedding]:
    """The modality (sniffed from the bytes) and embedding of one file, as an upload of it
    would be embedded."""
    sniffed = sniff(data)
    if sniffed.modality is Modality.TEXT:
        text = decode_text(data, max_chars=client.settings.limits.max_text_chars)
        return Modality.TEXT, client.embed_query_with_model(text=text, timeout_s=timeout_s)
    if sniffed.modality is Modality.IMAGE:
        return Modality.IMAGE, client.embed_query_with_model(image=data, timeout_s=timeout_s)
    return Modality.AUDIO, client.embed_query_with_model(audio=data, timeout_s=timeout_s)


def add_to_blocklist(
    client: Client,
    path: Path,
    *,
    category: str,
    policy: Policy,
    note: str | None = None,
    exact_only: bool = False,
    timeout_s: float = 120.0,
    actor: str = UNKNOWN_ACTOR,
    tenant: str | None = None,
) -> BlocklistEntry:
    """List `path` as a known-bad example of `category`: its SHA-256 always, its embedding
    unless `exact_only` (needs running workers). Raises `ConfigError` for a category the
    policy does not have, `PermanentError` for a file that is not a supported upload."""
    if category not in policy.categories:
        raise ConfigError(f"unknown category {category!r}; the policy has: {', '.join(sorted(policy.categories))}")
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    modality = sniff(data).modality
    vector, model, checkpoint = None, None, None
    if not exact_only:
        modality, embedding = embed_file(client, data, timeout_s=timeout_s)
        vector, model, checkpoint = embedding.vector, embedding.model, embedding.checkpoint
    entry = BlocklistEntry(
        id=entry_id_for(sha256, tenant),
        category=category,
        sha256=sha256,
        modality=modality,
        filename=path.name,
        note=note,
        model=model,
        checkpoint=checkpoint,
        tenant=tenant,
    )
    return Blocklist(client.redis, client.settings.queue_prefix).add(entry, vector, actor=actor)


def ensure_prompt_embeddings(client: Client, policy: Policy, checkpoint: str, *, timeout_s: float) -> None:
    """Make sure Redis holds `policy`'s prompt embeddings for `checkpoint`, asking a GPU
    worker to compute them if needed. Raises `QueryFailed` when none answers in time and
    `ConfigError` when the GPU workers run another checkpoint."""
    store = PromptStore(client.redis, client.settings.queue_prefix)
    prompts = policy.prompt_texts()
    if not prompts or store.get(policy.version, checkpoint) is not None:
        return
    request = PromptRequest(policy.version, tuple(prompts))
    result = client.celery.send_task(TaskName.EMBED_PROMPTS, args=[request.to_wire()], queue=QueueName.GPU)
    reply = worker_reply(result, timeout_s=timeout_s, what="prompt embeddings", workers="GPU workers")
    if reply["checkpoint"] != checkpoint:
        raise ConfigError(
            f"the GPU workers run checkpoint {str(reply['checkpoint'])[:12]}, the vectors were made by "
            f"{checkpoint[:12]}: start a GPU worker with that checkpoint to score them"
        )


def model_mismatch(held: str, model: str) -> ConfigError:
    """The refusal to score `held`'s vectors (a record label) under `model`'s policy section."""
    names = [card.name for card in CATALOG.values() if card.label == held]
    fix = f"run it with --model {names[0]} (the model of the vectors)" if names else "run it with the vectors' model"
    return ConfigError(
        f"the stored vectors are of {held}, but the policy section is {model}'s ({card_for(model).label}): "
        f"zero-shot scores of one model do not hold for another's thresholds. Either {fix}, or re-embed "
        f"the uploads first (`omnibind reindex --model {model}`, then cut over) and score them then"
    )


def require_vectors_of(client: Client, model: str) -> None:
    """Raise `ConfigError` unless the index holds `model`'s vectors (or none yet)."""
    held = stored_model(client.vectors)
    if held is not None and held != card_for(model).label:
        raise model_mismatch(held, model)


def moderator_for(client: Client, policy: Policy) -> Moderator:
    blocklist = BlocklistCache(Blocklist(client.redis, client.settings.queue_prefix), refresh_s=5.0)
    return Moderator(policy, PromptStore(client.redis, client.settings.queue_prefix), blocklist)


# -- rescore ------------------------------------------------------------------------------------


@dataclass
class RescoreSummary:
    records: int = 0
    changed: int = 0
    flagged_before: int = 0
    flagged_after: int = 0
    categories_after: Counter[str] = field(default_factory=Counter)


def stored_detectors(moderation: Moderation) -> tuple[DetectorResult, ...]:
    """The detector scores kept in a stored decision, to be judged again by a new policy."""
    return tuple(DetectorResult(name, dict(scores)) for name, scores in moderation.detector_scores.items())


def rescore(
    client: Client,
    policy: Policy,
    *,
    write: bool = True,
    timeout_s: float = 300.0,
    progress: Callable[[int], None] | None = None,
    tenant: str | None = None,
    skip_tenants: frozenset[str] = frozenset(),
) -> RescoreSummary:
    """Apply `policy` to the stored records (vector, SHA-256 and stored detector scores) of
    `tenant`, or of every tenant but `skip_tenants` (those with a policy of their own) when
    `tenant` is None; with `write`, upsert the records whose decision changed and log every
    new decision (source ``rescore``)."""
    moderator = moderator_for(client, policy)
    log = DecisionLog.from_settings(client.redis, client.settings)
    summary = RescoreSummary()
    ready: set[str] = set()
    chosen = (
        record
        for record in client.vectors.iter_records()
        if (record.tenant == tenant if tenant is not None else record.tenant not in skip_tenants)
    )
    for batch in _batches(chosen, RESCORE_BATCH):
        updated = []
        for record in batch:
            if record.checkpoint not in ready:
                ensure_prompt_embeddings(client, policy, record.checkpoint, timeout_s=timeout_s)
                ready.add(record.checkpoint)
            decision = _rescored(moderator, record)
            _count(summary, record.moderation, decision)
            if _differs(record.moderation, decision):
                summary.changed += 1
                updated.append(dataclasses.replace(record, moderation=decision))
        if write and updated:
            client.vectors.upsert(updated)
            for record in updated:
                log.append(record.upload_id, record.moderation, source="rescore")
        if progress:
            progress(summary.records)
    return summary


def _rescored(moderator: Moderator, record: VectorRecord) -> Moderation:
    previous = record.moderation
    return moderator.moderate(
        modality=record.modality,
        vector=record.vector,
        sha256=record.sha256,
        model=record.model,
        checkpoint=record.checkpoint,
        detectors=stored_detectors(previous),
        notes=(f"rescored from the stored vector (previous policy {previous.policy_version or 'none'})",),
        # The stored transcript, its passage vectors and text-detector scores: never re-transcribed.
        speech=SpeechPart.from_record(record.transcript) if record.transcript else None,
        # A video's audio track, from its stored vector.
        parts=scored_parts(record.parts),
        tenant=record.tenant,
    )


def _count(summary: RescoreSummary, before: Moderation, after: Moderation) -> None:
    summary.records += 1
    summary.flagged_before += before.flagged
    summary.flagged_after += after.flagged
    summary.categories_after.update(after.categories)


def _differs(before: Moderation, after: Moderation) -> bool:
    return (before.policy_version, before.bands, before.scores, before.signals) != (
        after.policy_version,
        after.bands,
        after.scores,
        after.signals,
    )


def _batches(records: Iterator[VectorRecord], size: int) -> Iterator[list[VectorRecord]]:
    batch: list[VectorRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# -- calibrate ----------------------------------------------------------------------------------


def labelled_files(directory: Path, policy: Policy) -> list[tuple[str, Path]]:
    """(label, file) for every file under ``DIR/<category or safe>/``. Raises `ConfigError`
    for a subfolder that is neither a policy category nor ``safe``."""
    pairs = []
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        if folder.name != SAFE_LABEL and folder.name not in policy.categories:
            raise ConfigError(
                f"{folder}: not a category of the policy (nor {SAFE_LABEL!r}); "
                f"categories: {', '.join(sorted(policy.categories))}"
            )
        pairs += [(folder.name, path) for path in sorted(folder.rglob("*")) if path.is_file()]
    if not pairs:
        raise ConfigError(f"{directory} has no files in <category>/ or {SAFE_LABEL}/ subfolders")
    return pairs


def score_labelled(
    client: Client,
    policy: Policy,
    files: Sequence[tuple[str, Path]],
    *,
    timeout_s: float = 300.0,
    model: str | None = None,
) -> tuple[list[LabelledScores], list[tuple[Path, str]]]:
    """Zero-shot scores of every labelled file (embedded by the workers, several at once),
    and the files that could not be scored with why. With `model` (the policy section's),
    raises `ConfigError` when the workers embed with another model."""

    def embed(item: tuple[str, Path]) -> tuple[str, Path, tuple[Modality, QueryEmbedding] | str]:
        label, path = item
        try:
            return label, path, embed_file(client, path.read_bytes(), timeout_s=timeout_s)
        except (PermanentError, OSError) as exc:
            return label, path, f"{type(exc).__name__}: {exc}"

    moderator = moderator_for(client, policy)
    scored: list[LabelledScores] = []
    skipped: list[tuple[Path, str]] = []
    with ThreadPoolExecutor(CALIBRATE_THREADS) as pool:
        for label, path, outcome in pool.map(embed, files):
            if isinstance(outcome, str):
                skipped.append((path, outcome))
                continue
            modality, embedding = outcome
            if model is not None and embedding.model != card_for(model).label:
                raise model_mismatch(embedding.model, model)
            ensure_prompt_embeddings(client, policy, embedding.checkpoint, timeout_s=timeout_s)
            groups = moderator.prompt_groups(embedding.checkpoint).get(modality)
            scores = zero_shot_scores(groups, embedding.vector) if groups is not None else {}
            scored.append(LabelledScores(label, modality, scores))
    return scored, skipped

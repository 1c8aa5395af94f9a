"""Moderating one embedded upload: policy + cached prompt embeddings + blocklist -> decision.

Used by the index workers (every upload) and by ``omnibind rescore`` (stored records), so
both apply exactly the same logic. The Moderator does no I/O of its own: it is handed a
`PromptSource` and a `BlocklistSource` (in production the Redis-backed `PromptStore` and
`BlocklistCache`, which cache per process: prompt embeddings once per (policy version,
checkpoint), the blocklist when it changes), so the scoring core never imports Redis.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from shared.events import Modality, Moderation, ModerationSignal
from shared.moderation.blocklist_index import BlocklistIndex
from shared.moderation.decision import Evidence, decide, make_signal
from shared.moderation.detectors import DetectorResult
from shared.moderation.policy import SCORED_MODALITIES, Policy
from shared.moderation.prompt_embeddings import PromptEmbeddings, PromptRequest, PromptsUnavailable
from shared.moderation.speech import speech_signals, transcript_notes
from shared.moderation.zeroshot import PromptGroups, build_prompt_groups, zero_shot_scores

if TYPE_CHECKING:
    from shared.messages import SpeechPart

log = logging.getLogger(__name__)

RequestPrompts = Callable[[PromptRequest], None]


class PromptSource(Protocol):
    """Where the policy's prompt embeddings come from (`shared.moderation.prompts.PromptStore`)."""

    def get(self, policy_version: str, checkpoint: str) -> PromptEmbeddings | None: ...

    def claim_request(self, policy_version: str, checkpoint: str) -> bool:
        """True for the one caller that should send the request for missing embeddings."""
        ...


class BlocklistSource(Protocol):
    """The current blocklist (`shared.moderation.blocklist.BlocklistCache`)."""

    def index(self) -> BlocklistIndex: ...


# Record parts (`VectorRecord.parts`) that moderation scores, and with which prompts (a
# transcript is judged passage by passage from the record's transcript instead).
PART_MODALITIES: dict[str, Modality] = {"audio_track": Modality.AUDIO}


def scored_as(modality: Modality) -> Modality:
    """The prompts and thresholds an upload's main vector is scored with (video: image)."""
    return Modality.IMAGE if modality is Modality.VIDEO else modality


def scored_parts(parts: Mapping[str, np.ndarray]) -> dict[str, tuple[Modality, np.ndarray]]:
    """The parts of a stored record that moderation scores, with their modality."""
    return {name: (PART_MODALITIES[name], vector) for name, vector in parts.items() if name in PART_MODALITIES}


class Moderator:
    """Decides uploads under one policy. Thread-safe."""

    def __init__(
        self,
        policy: Policy,
        prompts: PromptSource,
        blocklist: BlocklistSource,
        *,
        request_prompts: RequestPrompts | None = None,
    ) -> None:
        self.policy = policy
        self._prompts = prompts
        self._blocklist = blocklist
        self._request_prompts = request_prompts
        self._groups: dict[str, dict[Modality, PromptGroups | None]] = {}  # checkpoint -> groups
        self._lock = threading.Lock()

    def moderate(
        self,
        *,
        modality: Modality,
        vector: np.ndarray,
        sha256: str | None,
        model: str,
        checkpoint: str,
        detectors: Sequence[DetectorResult] = (),
        notes: Sequence[str] = (),
        speech: SpeechPart | None = None,
        parts: Mapping[str, tuple[Modality, np.ndarray]] | None = None,
        frames: Sequence[tuple[float, np.ndarray]] = (),
        tenant: str | None = None,
    ) -> Moderation:
        """The decision for one upload. `parts`: further vectors of the upload by part name
        with their modality (a video's ``audio_track``), each scored with that modality's
        prompts and thresholds; their signals say which part in `detail`. `frames`: a
        video's sampled frames embedded as images, with their times: per category the worst
        frame gives one image signal whose `detail` names its time. `tenant`: the upload's,
        whose blocklist applies besides the operator-wide one (never another tenant's). Raises
        `PromptsUnavailable` (transient) when the policy's prompt embeddings for `checkpoint`
        are not in Redis yet; they were requested from the GPU workers, so a retry a little
        later succeeds."""
        # A video's vector is the mean of its clips' vision embeddings: the image prompts score it.
        modality = scored_as(modality)
        groups = self.prompt_groups(checkpoint).get(modality)
        zero_shot = zero_shot_scores(groups, vector) if groups is not None else {}
        matches = self._blocklist.index().match(
            sha256=sha256,
            vector=vector,
            checkpoint=checkpoint,
            max_distance=self.policy.blocklist.max_distance,
            tenant=tenant,
        )
        extra: list[ModerationSignal] = self._part_signals(parts or {}, checkpoint)
        extra += self._frame_signals(frames, checkpoint)
        if speech is not None:
            extra += self._speech_signals(speech, checkpoint, tenant)
            notes = [*notes, *transcript_notes(speech.transcript)]
        evidence = Evidence(
            modality=modality,
            zero_shot=zero_shot,
            detectors=detectors,
            blocklist=matches,
            notes=notes,
            extra_signals=extra,
        )
        return decide(self.policy, evidence, model=model, checkpoint=checkpoint)

    def _frame_signals(self, frames: Sequence[tuple[float, np.ndarray]], checkpoint: str) -> list[ModerationSignal]:
        """Per category, the image zero-shot signal of the frame that scores highest."""
        groups = self.prompt_groups(checkpoint).get(Modality.IMAGE) if frames else None
        if groups is None:
            return []
        scored = [(time_s, zero_shot_scores(groups, vector)) for time_s, vector in frames]
        signals = []
        for name in groups.categories:
            time_s, scores = max(scored, key=lambda item: item[1][name])
            thresholds = self.policy.categories[name].thresholds_for(Modality.IMAGE)
            detail = f"frame at {time_s:.1f} s"
            signals.append(make_signal(name, "zeroshot", Modality.IMAGE.value, scores[name], thresholds, detail=detail))
        return signals

    def _part_signals(
        self, parts: Mapping[str, tuple[Modality, np.ndarray]], checkpoint: str
    ) -> list[ModerationSignal]:
        """Zero-shot signals of each part vector against its modality's prompts."""
        signals = []
        for part, (modality, vector) in sorted(parts.items()):
            groups = self.prompt_groups(checkpoint).get(modality)
            if groups is None:
                continue
            for name, score in zero_shot_scores(groups, vector).items():
                thresholds = self.policy.categories[name].thresholds_for(modality)
                signals.append(make_signal(name, "zeroshot", modality.value, score, thresholds, detail=part))
        return signals

    def _speech_signals(self, speech: SpeechPart, checkpoint: str, tenant: str | None) -> list[ModerationSignal]:
        """Signals of the transcript's passages (`shared.moderation.speech`); zero-shot and the
        example blocklist only when the passages were embedded by `checkpoint`."""
        vectors = speech.vectors if speech.checkpoint == checkpoint else None
        text_groups = self.prompt_groups(checkpoint).get(Modality.TEXT) if vectors is not None else None
        blocklist = []
        if vectors is not None:
            index = self._blocklist.index()
            blocklist = [
                index.match(
                    sha256=None,
                    vector=row,
                    checkpoint=checkpoint,
                    max_distance=self.policy.blocklist.max_distance,
                    tenant=tenant,
                )
                for row in vectors
            ]
        return speech_signals(
            self.policy,
            speech.transcript,
            vectors=vectors,
            text_groups=text_groups,
            detector_scores=speech.detector_scores,
            blocklist=blocklist,
        )

    def prompt_groups(self, checkpoint: str) -> dict[Modality, PromptGroups | None]:
        """The policy's prompt groups per modality for `checkpoint` (cached per process)."""
        with self._lock:
            cached = self._groups.get(checkpoint)
        if cached is not None:
            return cached
        prompts = self.policy.prompt_texts()
        if not prompts:
            groups: dict[Modality, PromptGroups | None] = dict.fromkeys(SCORED_MODALITIES)
        else:
            stored = self._prompts.get(self.policy.version, checkpoint)
            if stored is None or not set(prompts) <= set(stored.prompts):
                self._ask_for_prompts(checkpoint, prompts)
                raise PromptsUnavailable(
                    f"prompt embeddings of policy {self.policy.version} for checkpoint {checkpoint[:12]} "
                    "are not in Redis yet; the GPU workers were asked to compute them"
                )
            vectors = stored.by_prompt()
            groups = {m: build_prompt_groups(self.policy, m, vectors) for m in SCORED_MODALITIES}
        with self._lock:
            self._groups[checkpoint] = groups
        return groups

    def _ask_for_prompts(self, checkpoint: str, prompts: list[str]) -> None:
        if self._request_prompts is None:
            return
        if self._prompts.claim_request(self.policy.version, checkpoint):
            log.info("asking the GPU workers for the prompt embeddings of policy %s", self.policy.version)
            self._request_prompts(PromptRequest(self.policy.version, tuple(prompts)))

"""The moderation policy: categories, their prompts, detectors and thresholds (TOML).

A policy is validated completely on load (`load_policy`): a malformed file raises
`ConfigError` naming the file and every offending field (``categories.violence.review``),
at the start-up of whatever process loads it — never at the first upload. Its `version`
is the SHA-256 of its canonical content (the validated model as sorted JSON), so comments,
whitespace and key order do not change it, and every decision records exactly which policy
produced it.

Schema (see ``default_policy.toml`` for a complete example)::

    name = "..."
    [scoring]            temperature = 0.01, optional temperature_<modality> overrides
    [blocklist]          max_distance = 0.08 (cosine distance), band = "block" | "review"
    [contrast]           image = [...], text = [...], audio = [...]   ("safe" prompts)
    [categories.NAME]    description, review, block (thresholds in [0, 1], review <= block)
      prompts            image = [...], text = [...], audio = [...]
      thresholds.MOD     review, block for one modality (overrides the category's)
      detectors.DET      labels = [...], review, block (DET: a detector of
                         `shared.moderation.detectors.DETECTOR_LABELS`)
      phrases            match = [...], band = "review" | "block" (spoken phrases
                         in transcripts, `shared.moderation.speech`)
    [models.MODEL]       a section for one model (an ``OMNIBIND_MODEL__NAME``: "huge",
                         "pe-av-base"...), merged over the sections above for that model
                         only: its own scoring, blocklist, contrast prompts and categories
                         (``[models.pe-av-base.categories.violence] review = 0.4``)

Zero-shot scores of two models do not compare (other spaces, other prompt similarities), so
thresholds calibrated on one model do not hold for another. `Policy.for_model` resolves the
policy a model's uploads are decided under: its section merged over the default sections,
or the default sections alone for a model without one. The resolved policy names its model
(`Policy.model`) and so has a version of its own; decisions, prompt embeddings, `omnibind
calibrate` and `omnibind rescore` all go by it.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.errors import ConfigError
from shared.events import Band, Modality
from shared.models.catalog import CATALOG
from shared.moderation.detectors.labels import DETECTOR_LABELS

DEFAULT_POLICY_RESOURCE = "default_policy.toml"
VERSION_CHARS = 16  # 64 bits of the SHA-256: unique among any realistic number of policies
SCORED_MODALITIES: tuple[Modality, ...] = (Modality.IMAGE, Modality.TEXT, Modality.AUDIO)
_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"

PromptList = list[str]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Thresholds(_Strict):
    """Allow below `review`, human review from `review`, block from `block`."""

    review: float = Field(ge=0.0, le=1.0)
    block: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.review > self.block:
            raise ValueError(f"review ({self.review}) must not exceed block ({self.block})")
        return self

    def band(self, score: float) -> Band:
        if score >= self.block:
            return Band.BLOCK
        if score >= self.review:
            return Band.REVIEW
        return Band.ALLOW


class ModalityPrompts(_Strict):
    """Text prompts per upload modality (all are embedded by the text encoder)."""

    image: PromptList = Field(default_factory=list)
    text: PromptList = Field(default_factory=list)
    audio: PromptList = Field(default_factory=list)

    @field_validator("image", "text", "audio")
    @classmethod
    def _non_empty_unique(cls, prompts: PromptList) -> PromptList:
        cleaned = [p.strip() for p in prompts]
        if any(not p for p in cleaned):
            raise ValueError("prompts must not be empty")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("prompts must be unique")
        return cleaned

    def for_modality(self, modality: Modality) -> PromptList:
        return list(getattr(self, modality.value, []))


class ModalityThresholds(_Strict):
    image: Thresholds | None = None
    text: Thresholds | None = None
    audio: Thresholds | None = None


class DetectorRule(Thresholds):
    """A detector's labels that count for a category; the category's detector score is the
    highest score among them (0 when none was detected)."""

    labels: list[str] = Field(min_length=1)


class PhraseRule(_Strict):
    """Blocklisted phrases of a category, matched as whole words (case and punctuation
    ignored) in transcripts of speech; a match reaches `band`."""

    match: list[str] = Field(min_length=1)
    band: Literal["review", "block"] = "review"

    @field_validator("match")
    @classmethod
    def _non_empty(cls, phrases: list[str]) -> list[str]:
        cleaned = [" ".join(p.lower().split()) for p in phrases]
        if any(not p for p in cleaned):
            raise ValueError("phrases must not be empty")
        return cleaned


class Category(_Strict):
    description: str = ""
    review: float = Field(ge=0.0, le=1.0)
    block: float = Field(ge=0.0, le=1.0)
    prompts: ModalityPrompts = Field(default_factory=ModalityPrompts)
    thresholds: ModalityThresholds = Field(default_factory=ModalityThresholds)
    detectors: dict[str, DetectorRule] = Field(default_factory=dict)
    phrases: PhraseRule | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Category:
        if self.review > self.block:
            raise ValueError(f"review ({self.review}) must not exceed block ({self.block})")
        for name, rule in self.detectors.items():
            known = DETECTOR_LABELS.get(name)
            if known is None:
                raise ValueError(f"unknown detector {name!r}; known: {', '.join(sorted(DETECTOR_LABELS))}")
            unknown = sorted(set(rule.labels) - set(known))
            if unknown:
                raise ValueError(f"detector {name!r} has no labels {unknown}; it reports {list(known)}")
        if not any(self.prompts.for_modality(m) for m in SCORED_MODALITIES) and not self.detectors and not self.phrases:
            raise ValueError("a category needs prompts for at least one modality, a detector or phrases")
        return self

    def thresholds_for(self, modality: Modality) -> Thresholds:
        override = getattr(self.thresholds, modality.value, None)
        return override or Thresholds(review=self.review, block=self.block)


class Scoring(_Strict):
    """Softmax temperature applied to cosine similarities (see `shared.moderation.zeroshot`)."""

    temperature: float = Field(0.01, gt=0.0, le=1.0)
    temperature_image: float | None = Field(None, gt=0.0, le=1.0)
    temperature_text: float | None = Field(None, gt=0.0, le=1.0)
    temperature_audio: float | None = Field(None, gt=0.0, le=1.0)

    def temperature_for(self, modality: Modality) -> float:
        override: float | None = getattr(self, f"temperature_{modality.value}", None)
        return override if override is not None else self.temperature


class BlocklistRule(_Strict):
    max_distance: float = Field(0.08, ge=0.0, le=2.0, description="cosine distance of a near duplicate")
    band: Literal["review", "block"] = "block"


MODEL_SECTION_KEYS = frozenset({"description", "scoring", "blocklist", "contrast", "categories"})


class Policy(_Strict):
    name: str = Field("custom", min_length=1, max_length=128)
    description: str = ""
    scoring: Scoring = Field(default_factory=Scoring)
    blocklist: BlocklistRule = Field(default_factory=BlocklistRule)
    contrast: ModalityPrompts
    categories: dict[str, Category] = Field(min_length=1)
    # The model this policy was resolved for (`for_model`) when the file has a section for
    # it; None: the default sections, as written.
    model: str | None = None
    # Per-model sections as written (TOML tables), each validated merged over the defaults.
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("models")
    @classmethod
    def _known_models(cls, models: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, section in models.items():
            if name not in CATALOG:
                raise ValueError(f"unknown model {name!r}; sections may name {', '.join(sorted(CATALOG))}")
            extra = sorted(set(section) - MODEL_SECTION_KEYS)
            if extra:
                raise ValueError(
                    f"models.{name}: {extra} cannot differ per model; allowed: {sorted(MODEL_SECTION_KEYS)}"
                )
        return models

    @model_validator(mode="after")
    def _sections_valid(self) -> Policy:
        for name in self.models:
            self.for_model(name)  # raises ValueError naming the section's bad fields
        return self

    def for_model(self, model: str) -> Policy:
        """The policy uploads embedded by `model` (an ``OMNIBIND_MODEL__NAME``) are decided
        under: its ``[models.MODEL]`` section merged over the default sections, or this
        policy itself when the file has no section for it. Raises `ValueError` naming the
        invalid fields of a section."""
        section = self.models.get(model)
        if section is None or self.model is not None:
            return self
        base = self.model_dump(mode="json", exclude={"models", "model"})
        try:
            return Policy.model_validate({**_merged(base, section), "model": model})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
            raise ValueError(f"models.{model}: {problems}") from None

    def for_model_label(self, label: str) -> Policy:
        """`for_model` of the model whose records carry `label` (``pe-av-tiny-random``)."""
        names = [card.name for card in CATALOG.values() if card.label == label]
        return self.for_model(names[0]) if names else self

    @field_validator("categories")
    @classmethod
    def _category_names(cls, categories: dict[str, Category]) -> dict[str, Category]:
        bad = [name for name in categories if not re.match(_NAME_PATTERN, name)]
        if bad:
            raise ValueError(f"category names must match {_NAME_PATTERN}: {bad}")
        return categories

    @model_validator(mode="after")
    def _contrast_where_prompted(self) -> Policy:
        for modality in SCORED_MODALITIES:
            prompted = [n for n, c in self.categories.items() if c.prompts.for_modality(modality)]
            if prompted and not self.contrast.for_modality(modality):
                raise ValueError(
                    f"contrast.{modality.value}: categories {prompted} have {modality.value} prompts, "
                    "so 'safe' contrast prompts for that modality are required"
                )
        return self

    @cached_property
    def version(self) -> str:
        """SHA-256 (first 16 hex digits) of the canonical content."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()[:VERSION_CHARS]

    def canonical_json(self) -> str:
        # Left out while unset, so a policy without per-model sections keeps the version it
        # had before sections existed (stored decisions name it).
        unset = {name for name in ("model", "models") if not getattr(self, name)}
        doc = self.model_dump(mode="json", exclude=unset)
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def prompt_texts(self) -> list[str]:
        """Every distinct prompt of the policy (all modalities, contrast included), in a fixed
        order: what the GPU worker embeds once per (policy version, checkpoint)."""
        seen: dict[str, None] = {}
        for modality in SCORED_MODALITIES:
            for prompt in self.contrast.for_modality(modality):
                seen.setdefault(prompt, None)
            for category in self.categories.values():
                for prompt in category.prompts.for_modality(modality):
                    seen.setdefault(prompt, None)
        return list(seen)

    def detectors_used(self) -> set[str]:
        return {name for category in self.categories.values() for name in category.detectors}


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged into `base`, tables key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        held = out.get(key)
        out[key] = _merged(held, value) if isinstance(held, dict) and isinstance(value, dict) else value
    return out


def parse_policy(text: str, *, source: str = "<policy>") -> Policy:
    """Parse and validate TOML policy text. Raises `ConfigError` naming `source` and every
    invalid field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"moderation policy {source} is not valid TOML: {exc}") from exc
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<policy>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid moderation policy {source}: {problems}") from exc


def default_policy_text() -> str:
    return resources.files("shared.moderation").joinpath(DEFAULT_POLICY_RESOURCE).read_text(encoding="utf-8")


def load_policy(path: Path | None = None) -> Policy:
    """The policy at `path`, or the default policy shipped with omnibind when None.

    Raises `ConfigError` when the file cannot be read or is invalid (the message names the
    field, e.g. ``categories.violence.review``)."""
    if path is None:
        return parse_policy(default_policy_text(), source=f"(default) {DEFAULT_POLICY_RESOURCE}")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read moderation policy {path} (OMNIBIND_MODERATION__POLICY): {exc}") from exc
    return parse_policy(text, source=str(path))


def load_model_policy(path: Path | None, model: str) -> Policy:
    """`load_policy(path)` resolved for `model` (`Policy.for_model`): what uploads embedded
    by `model` are decided under."""
    return load_policy(path).for_model(model)

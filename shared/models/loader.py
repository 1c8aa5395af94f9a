"""`load_backend`: the configured model family behind the model port (gpu workers only)."""

from __future__ import annotations

from shared.config import ModelSettings
from shared.models.catalog import card_for
from shared.models.port import EmbeddingBackend


def load_backend(settings: ModelSettings) -> EmbeddingBackend:
    """Load ``OMNIBIND_MODEL__NAME``'s family. Raises `CheckpointError` / `ConfigError`."""
    card = card_for(settings.name)
    if card.family == "perception":
        from shared.models.perception import PerceptionBackend

        return PerceptionBackend.from_settings(settings)
    from shared.models.imagebind import ImageBindBackend

    return ImageBindBackend.from_settings(settings)

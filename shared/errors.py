"""One error tree for the whole project.

`PermanentError` means the input itself is bad (never retried, recorded with a reason);
`TransientError` means something we depend on is unavailable (retried with backoff).
Adapters translate library exceptions into these with ``raise ... from exc`` so callers
never need to know which library sits behind a port.
"""

from __future__ import annotations


class OmnibindError(Exception):
    """Base of every error omnibind raises on purpose.

    `reason` is a short, stable, machine-readable code (``corrupt_image``,
    ``too_many_pixels``...) used in status records, dead letters and metrics; the message
    is for humans.
    """

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.reason


class ConfigError(OmnibindError):
    """Settings or a policy file are invalid; raised at start-up, never per upload."""

    reason = "config"


class PermanentError(OmnibindError):
    """The upload cannot succeed however often it is retried."""

    reason = "permanent"


class InvalidEvent(PermanentError):
    reason = "invalid_event"


class InvalidKey(PermanentError):
    """An object key that could escape its bucket/root or contains control characters."""

    reason = "invalid_key"


class ObjectNotFound(PermanentError):
    reason = "object_not_found"


class UnsupportedMedia(PermanentError):
    reason = "unsupported_media"


class CorruptMedia(PermanentError):
    reason = "corrupt_media"


class LimitExceeded(PermanentError):
    reason = "limit_exceeded"


class CheckpointError(OmnibindError):
    """The model checkpoint is missing, corrupt or does not fit the configuration."""

    reason = "checkpoint"


class InternalError(PermanentError):
    """An unexpected exception while handling one upload or event: a bug, not bad input.
    Recorded and dead-lettered like any permanent failure, so it can be retried after a fix."""

    reason = "internal_error"


class TransientError(OmnibindError):
    """Something we depend on is unavailable right now; retrying later may succeed."""

    reason = "transient"


class StorageUnavailable(TransientError):
    reason = "storage_unavailable"


class VectorStoreUnavailable(TransientError):
    reason = "vector_store_unavailable"


class Busy(TransientError):
    """The pipeline applies backpressure: too much work is queued already."""

    reason = "busy"
    retry_after_s: int | None = None  # when to come back, if the refusal knows (HTTP Retry-After)

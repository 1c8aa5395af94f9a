"""Logging set-up: every line says which upload it is about.

Tasks bind the upload id with `upload_context(...)`; a filter copies it onto each record so
the formatter can print it, including lines logged by libraries underneath.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

_upload_id: contextvars.ContextVar[str] = contextvars.ContextVar("omnibind_upload_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s [upload=%(upload_id)s] %(message)s"


class UploadIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "upload_id"):
            record.upload_id = _upload_id.get()
        return True


@contextlib.contextmanager
def upload_context(upload_id: str) -> Iterator[None]:
    token = _upload_id.set(upload_id)
    try:
        yield
    finally:
        _upload_id.reset(token)


def configure_logging(level: str = "INFO") -> None:
    """Install the omnibind format on the root logger (idempotent)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in root.handlers:
        if getattr(handler, "_omnibind", False):
            return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(UploadIdFilter())
    handler._omnibind = True  # type: ignore[attr-defined]
    root.addHandler(handler)

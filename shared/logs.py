"""Logging set-up: every line says which upload it is about.

Tasks bind the upload id with `upload_context(...)` (and `workers.stage` the stage with
`stage_context(...)`); a filter copies them onto each record, so the formatter can print
them, including on lines logged by libraries underneath.

Two formats (``OMNIBIND_LOG_FORMAT``):

* ``text`` — ``2024-05-01 12:00:00,000 INFO ... [upload=<id>] message`` for people;
* ``json`` — one JSON object per line for log pipelines (Loki, Elasticsearch, CloudWatch):
  ``{"ts", "level", "logger", "process", "pid", "upload_id", "stage", "worker", "message"}``
  plus ``"exc"`` with the traceback when there is one. ``upload_id``, ``stage`` and
  ``worker`` are null when unknown.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

_UNSET = "-"
_upload_id: contextvars.ContextVar[str] = contextvars.ContextVar("omnibind_upload_id", default=_UNSET)
_stage: contextvars.ContextVar[str] = contextvars.ContextVar("omnibind_stage", default=_UNSET)

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s [upload=%(upload_id)s] %(message)s"
LogFormat = Literal["text", "json"]


class UploadIdFilter(logging.Filter):
    """Copies the bound upload id and stage (and this process's worker kind) onto every
    record that does not carry them already."""

    def __init__(self, worker_kind: str | None = None) -> None:
        super().__init__()
        self.worker_kind = worker_kind or _UNSET

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "upload_id"):
            record.upload_id = _upload_id.get()
        if not hasattr(record, "stage"):
            record.stage = _stage.get()
        if not hasattr(record, "worker_kind"):
            record.worker_kind = self.worker_kind
        return True


def _or_none(value: Any) -> Any:
    return None if value in (None, _UNSET) else value


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "pid": record.process,
            "upload_id": _or_none(getattr(record, "upload_id", None)),
            "stage": _or_none(getattr(record, "stage", None)),
            "worker": _or_none(getattr(record, "worker_kind", None)),
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False, default=str)


@contextlib.contextmanager
def upload_context(upload_id: str) -> Iterator[None]:
    """Lines logged inside the block (by this thread or task) carry `upload_id`."""
    token = _upload_id.set(upload_id)
    try:
        yield
    finally:
        _upload_id.reset(token)


def bind_upload_id(upload_id: str | None) -> None:
    """Bind `upload_id` (None: unbind) until the next call, for code that cannot wrap a block
    (Celery's task_prerun/task_postrun signals around a whole task, its own log lines
    included)."""
    _upload_id.set(upload_id or _UNSET)


@contextlib.contextmanager
def stage_context(stage: str) -> Iterator[None]:
    """Lines logged inside the block carry the pipeline `stage` (preprocess, embed...)."""
    token = _stage.set(stage)
    try:
        yield
    finally:
        _stage.reset(token)


def make_formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(FORMAT)


def configure_logging(level: str = "INFO", fmt: LogFormat = "text", *, worker_kind: str | None = None) -> None:
    """Install the omnibind handler (format `fmt`) on the root logger. Idempotent: once
    installed, later calls only change the level."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if any(getattr(handler, "_omnibind", False) for handler in root.handlers):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(make_formatter(fmt))
    handler.addFilter(UploadIdFilter(worker_kind))
    handler._omnibind = True  # type: ignore[attr-defined]
    root.addHandler(handler)

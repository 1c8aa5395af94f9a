"""Log lines carry the upload id (and stage, worker kind), in text and in JSON."""

from __future__ import annotations

import io
import json
import logging

from shared.logs import FORMAT, JsonFormatter, UploadIdFilter, stage_context, upload_context


def capture(formatter: logging.Formatter, worker_kind: str | None = None) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(UploadIdFilter(worker_kind))
    logger = logging.getLogger(f"test-logs-{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger, stream


def test_json_lines_carry_upload_stage_and_worker_kind() -> None:
    logger, stream = capture(JsonFormatter(), worker_kind="cpu")
    with upload_context("up-1"), stage_context("preprocess"):
        logger.warning("preprocess failed permanently: %s", "corrupt_media")
    logger.info("outside")
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["upload_id"] == "up-1" and inside["stage"] == "preprocess" and inside["worker"] == "cpu"
    assert inside["message"] == "preprocess failed permanently: corrupt_media"
    assert inside["level"] == "WARNING" and inside["ts"].endswith("Z")
    assert outside["upload_id"] is None and outside["stage"] is None


def test_json_lines_carry_the_traceback() -> None:
    logger, stream = capture(JsonFormatter())
    try:
        raise ValueError("boom ünïcode")
    except ValueError:
        logger.exception("it broke")
    doc = json.loads(stream.getvalue())
    assert "ValueError: boom ünïcode" in doc["exc"] and doc["worker"] is None


def test_text_lines_carry_the_upload_id() -> None:
    logger, stream = capture(logging.Formatter(FORMAT))
    with upload_context("up-2"):
        logger.info("hello")
    assert "[upload=up-2] hello" in stream.getvalue()

"""uvicorn's access log, through a real server: a key or token a client puts in the query
string (``?api_key=...``) must not end up in the log."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from tests.http.conftest import RunningApi
from tests.support.waiting import wait_until

SECRET = "sk-live-0123456789abcdef"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "uvicorn.access"]


def test_the_access_log_records_the_path_without_its_query_string(
    start_api: Callable[..., RunningApi], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    api = start_api()
    with api.http(key=None) as http:
        refused = http.get(f"/v1/uploads/some-upload?api_key={SECRET}&token={SECRET}")
        found = http.get(f"/v1/uploads/some-upload?k=3&api_key={SECRET}")
    assert refused.status_code == 401 and found.status_code == 401

    lines = wait_until(
        lambda: seen if len(seen := access_lines(caplog)) >= 2 else None, timeout_s=30, what="2 access log lines"
    )
    assert all('"GET /v1/uploads/some-upload HTTP/1.1" 401' in line for line in lines), lines
    assert not any(SECRET in line or "api_key" in line for line in lines), lines

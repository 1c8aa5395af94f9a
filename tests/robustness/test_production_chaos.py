"""Chaos on the production shape: while objects keep arriving in MinIO, Weaviate is killed
with SIGKILL and restarted, then MinIO is stopped for 30 s and started again. Every object
put ends indexed exactly once (counted in Weaviate, per upload id) or failed with a reason.
The long version is ``bench/chaos.py --shape production``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.production import production_shape
from tests.support.production_chaos import PRODUCTION_CLOCKS, run_production_chaos

pytestmark = pytest.mark.integration


def test_a_killed_weaviate_and_a_stopped_minio_lose_nothing_and_duplicate_nothing(
    tmp_path: Path, model_cache: Path
) -> None:
    with production_shape(tmp_path, model_cache, worker=PRODUCTION_CLOCKS) as shape:
        report = run_production_chaos(shape, objects=60, rate_per_s=4.0, minio_down_s=30.0, finish_timeout_s=300)

    assert report.weaviate_kills == 1 and report.minio_stops == 1
    assert report.put_retries > 0, "some puts met the stopped MinIO and were retried"
    assert report.problems() == [], report.summary()

"""GET /healthz and /readyz through real HTTP."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import SecretStr

from shared.heartbeat import Heartbeat
from tests.http.conftest import RunningApi


def test_readyz_is_503_until_a_worker_of_each_kind_is_live(start_api: Callable[..., RunningApi]) -> None:
    api = start_api()
    with api.http(key=None) as http:
        before = http.get("/readyz")
        kinds = ("cpu", "gpu", "index", "speech")
        beats = [Heartbeat(api.client.redis, api.settings.queue_prefix, kind) for kind in kinds]
        try:
            for beat in beats[:3]:
                beat.start()
            partial = http.get("/readyz")  # no speech worker: audio uploads would wait for one
            beats[3].start()
            after = http.get("/readyz")
        finally:
            for beat in beats:
                beat.stop()  # the shared server outlives the test: no beat may go on into the next
    assert before.status_code == 503
    assert before.json() == {
        "ready": False,
        "redis": {"ok": True, "detail": None},
        "objects": {"ok": True, "detail": None},
        "workers": {"cpu": 0, "gpu": 0, "index": 0, "speech": 0},
    }
    assert partial.status_code == 503 and partial.json()["workers"] == {"cpu": 1, "gpu": 1, "index": 1, "speech": 0}
    assert after.status_code == 200 and after.json()["ready"] is True


def test_readyz_reports_an_unreachable_redis(start_api: Callable[..., RunningApi]) -> None:
    # A port nothing listens on: connection refused at once.
    api = start_api(redis_url=SecretStr("redis://127.0.0.1:1/0"), redis={"retries": 0, "connect_timeout_s": 1.0})
    with api.http(key=None) as http:
        ready = http.get("/readyz")
        alive = http.get("/healthz")
    assert alive.status_code == 200
    assert ready.status_code == 503
    body = ready.json()
    assert body["redis"]["ok"] is False and body["redis"]["detail"].startswith("redis_unavailable")
    assert body["objects"]["ok"] is True

"""docs/integrating.md stays true to the code and the compose file (the redis-cli example is
also run for real, by tests/integration/test_bridge.py)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from producers.bridge.stream_events import EVENT_FIELD
from shared.config import Settings
from shared.redis_keys import RedisKeys

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "integrating.md").read_text(encoding="utf-8")
KEYS = RedisKeys(Settings.model_fields["queue_prefix"].default)


def example(text: str, name: str) -> str | None:
    match = re.search(rf"<!-- example: {re.escape(name)}\b.*?-->\s*```sh\n(.*?)```", text, re.S)
    return match.group(1) if match else None


def test_the_redis_cli_example_adds_an_event_to_the_ingest_stream() -> None:
    script = example(DOC, "redis-cli-xadd")
    assert script is not None
    assert f"XADD {KEYS.tenant_ingest('acme')} '*' {EVENT_FIELD} " in script


def test_the_mc_example_subscribes_the_bucket_to_the_target_compose_configures() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    arn = compose["services"]["ingest-bridge"]["environment"]["OMNIBIND_BRIDGE__MINIO_NOTIFY_ARN"]
    bucket = Settings.model_fields["objects"].default.bucket
    script = example(DOC, "mc-event-add")
    assert script is not None
    assert f"mc event add omnibind/{bucket} {arn} --event put,delete" in script


def test_a_readme_copy_of_an_example_is_the_tested_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("redis-cli-xadd", "mc-event-add"):
        copy = example(readme, name)
        assert copy is None or copy == example(DOC, name), f"README's {name} example differs from docs/integrating.md"

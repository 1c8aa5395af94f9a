from __future__ import annotations

import base64
import json

from shared.broker_transport import UNDECODABLE_HEADER, UNDECODABLE_TYPE, checked_pop, envelope_problem

GOOD = json.dumps(
    {
        "body": base64.b64encode(b"[[], {}, {}]").decode(),
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {"task": "omnibind.preprocess"},
        "properties": {"delivery_tag": "t-1", "delivery_info": {"routing_key": "cpu"}, "body_encoding": "base64"},
    }
).encode()


def test_a_well_formed_envelope_passes_unchanged() -> None:
    assert envelope_problem(GOOD) is None
    assert checked_pop([b"omnibind:cpu", GOOD]) == (b"omnibind:cpu", GOOD)
    assert checked_pop(None) is None


def test_an_envelope_kombu_would_trip_over_is_quarantined_with_its_reason() -> None:
    cases = {
        b"[" * 100_000 + b"]" * 100_000: "too_deep",
        b"not json": "invalid_message",
        b"\xff\xfe": "invalid_message",
        b'["an", "array"]': "invalid_message",
        b'{"properties": {}}': "invalid_message",
        GOOD.replace(b'"body": "', b'"body": "!!'): "invalid_message",
    }
    for raw, reason in cases.items():
        key, quarantined = checked_pop([b"omnibind:cpu", raw])
        envelope = json.loads(quarantined)
        assert key == b"omnibind:cpu" and envelope_problem(quarantined) is None
        assert envelope["content-type"] == UNDECODABLE_TYPE
        assert envelope["headers"][UNDECODABLE_HEADER]["reason"] == reason, raw[:40]
        assert base64.b64decode(envelope["body"]) == raw[: 64 * 1024]

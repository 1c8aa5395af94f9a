from __future__ import annotations

import base64
import json

import redis

from shared.broker_envelopes import UNDECODABLE_HEADER, UNDECODABLE_TYPE, checked_pop, envelope_problem
from shared.broker_transport import READ_BACKOFF_MAX_S, ReadRefusals
from shared.redis_refusals import ADVICE, operator_advice, refusal_code

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


def test_refused_reads_back_off_to_the_cap_and_log_sparsely() -> None:
    refusals = ReadRefusals()
    now, delays, logged = 100.0, [], []
    for _ in range(40):
        assert refusals.may_read(now)
        delay, log_it = refusals.refused(now)
        assert not refusals.may_read(now + delay - 0.01)
        delays.append(delay)
        logged.append(log_it)
        now += delay
    assert delays[:5] == [0.5, 1.0, 2.0, 4.0, READ_BACKOFF_MAX_S] and set(delays[4:]) == {READ_BACKOFF_MAX_S}
    # 1st, 2nd, 4th, 8th, 16th, 32nd, and once a minute between them: a few lines, never silent
    assert [i + 1 for i, due in enumerate(logged) if due][:5] == [1, 2, 4, 8, 16]
    assert sum(logged) < 12
    assert refusals.accepted(now) == (now - 100.0, 40)
    assert refusals.accepted(now) is None and refusals.may_read(now)


def test_every_refusal_names_its_code_and_a_fix() -> None:
    cases = {
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."): "READONLY",
        redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."): "OOM",
        redis.ResponseError("MISCONF Errors writing to the AOF file: No space left on device"): "MISCONF",
        redis.ResponseError("Error running script: -NOREPLICAS Not enough good replicas to write."): "NOREPLICAS",
        redis.ResponseError("UNBLOCKED force unblock from blocking operation, instance state changed"): "UNBLOCKED",
    }
    for exc, code in cases.items():
        assert refusal_code(exc) == code
        assert operator_advice(exc) == ADVICE[code]
    assert refusal_code(redis.ResponseError("WRONGTYPE Operation against a key")) is None

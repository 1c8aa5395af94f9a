from __future__ import annotations

import hashlib
import hmac

from producers.webhooks.signing import sign, verify_signature

BODY = b'{"type":"upload.indexed","delivery_id":"1-0"}'
NOW = 1_738_324_800


def test_a_signature_verifies_with_its_secret_body_and_time() -> None:
    header = sign("s3cret", BODY, NOW)
    assert verify_signature("s3cret", header, BODY, now_s=NOW + 10)


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(b"s3cret", f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign("s3cret", BODY, NOW) == f"t={NOW},v1={expected}"


def test_another_body_secret_or_a_forged_timestamp_fails() -> None:
    header = sign("s3cret", BODY, NOW)
    assert not verify_signature("s3cret", header, BODY + b" ", now_s=NOW)
    assert not verify_signature("other", header, BODY, now_s=NOW)
    forged = header.replace(f"t={NOW}", f"t={NOW + 60}")
    assert not verify_signature("s3cret", forged, BODY, now_s=NOW + 60)


def test_an_old_request_is_refused_as_a_replay() -> None:
    header = sign("s3cret", BODY, NOW)
    assert not verify_signature("s3cret", header, BODY, now_s=NOW + 301)
    assert verify_signature("s3cret", header, BODY, now_s=NOW + 3600, tolerance_s=7200)


def test_any_of_several_signatures_may_match_during_a_secret_rotation() -> None:
    old, new = sign("old", BODY, NOW), sign("new", BODY, NOW)
    both = f"{new},{old.split(',')[1]}"
    assert verify_signature("old", both, BODY, now_s=NOW)
    assert verify_signature("new", both, BODY, now_s=NOW)


def test_malformed_headers_do_not_verify() -> None:
    for header in ["", "t=abc,v1=00", f"t={NOW}", "v1=00", f"t={NOW},v0=00"]:
        assert not verify_signature("s3cret", header, BODY, now_s=NOW)

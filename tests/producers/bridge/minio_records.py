"""MinIO bucket notifications built like MinIO builds them (see tests/fixtures/minio/README.md).

`access_element(...)` is one element of the Redis list as MinIO's notify_redis target
(``format=access``) RPUSHes it; `record(...)` is one event inside it. Keys are escaped with
`go_query_escape`, the equivalent of Go's ``url.QueryEscape``.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "minio"
REMOVAL_PREFIX = "s3:ObjectRemoved:"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def go_query_escape(key: str) -> str:
    """Go's url.QueryEscape: unreserved ``A-Za-z0-9-_.~`` kept, space -> ``+``, every other
    UTF-8 byte -> ``%XX`` (upper-case hex)."""
    return urllib.parse.quote_plus(key, safe="")


def record(
    event_name: str,
    bucket: str,
    key: str,
    *,
    event_time: str = "2024-05-14T09:21:07.412Z",
    size: int | None = None,
    etag: str | None = None,
    content_type: str | None = None,
    user_metadata: dict[str, str] | None = None,
    version_id: str | None = None,
    sequencer: str = "17CF1F8B6C9A3B51",
) -> dict[str, Any]:
    """One event record; like MinIO, removal events get no size/eTag/contentType/metadata,
    and empty fields are left out (Go's ``omitempty``)."""
    obj: dict[str, Any] = {"key": go_query_escape(key)}
    if not event_name.startswith(REMOVAL_PREFIX):
        optional = {"size": size, "eTag": etag, "contentType": content_type, "userMetadata": user_metadata}
        obj.update({name: value for name, value in optional.items() if value})
    if version_id:
        obj["versionId"] = version_id
    obj["sequencer"] = sequencer
    return {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": event_time,
        "eventName": event_name,
        "userIdentity": {"principalId": "minioadmin"},
        "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "127.0.0.1"},
        "responseElements": {
            "x-amz-request-id": "17CF1F8B6C4C5E2A",
            "x-minio-origin-endpoint": "http://127.0.0.1:9000",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "minioadmin"}, "arn": f"arn:aws:s3:::{bucket}"},
            "object": obj,
        },
        "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.70"},
    }


def access_element(*records: dict[str, Any]) -> str:
    """The list element MinIO RPUSHes: ``[{"Event": [records], "EventTime": ...}]``."""
    event_time = records[0].get("eventTime", "") if records else ""
    return json.dumps([{"Event": list(records), "EventTime": event_time}], separators=(",", ":"))

"""Where a bridged upload's tenant comes from: its source's configuration, never the event.

Ingest streams (a stream per tenant, a configured tenant for the shared stream) on a real
redis-server; MinIO bucket notifications from a live MinIO (a tenant per bucket/prefix).
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis
from minio import Minio

from producers.bridge.list_consumer import MinioEventsConsumer
from producers.bridge.minio_events import minio_upload_id
from producers.bridge.service import build_consumers, raw_redis, subscribe_configured_bucket
from producers.bridge.stream_consumer import IngestStreamConsumer
from producers.client import Client
from producers.dead_letters import Outcome, retry_dead_letter
from shared.config import Settings, load_settings
from shared.errors import ConfigError
from shared.events import DeleteRequest, ObjectRef, UploadStatus
from shared.streams import DeadLetter, DeadLetterStream
from shared.tenancy import ObjectTenants, object_tenants, qualify, tenant_of_id
from tests.producers.bridge.conftest import queued_tasks
from tests.support.minio_server import MinioServer
from tests.support.redis_server import RedisServers
from tests.support.waiting import wait_until

BUCKET = "uploads"
MINIO_EVENTS = "omnibind:minio:events"
ARRIVAL_DEADLINE_S = 30.0


def test_an_object_belongs_to_the_tenant_of_its_longest_matching_location() -> None:
    owners = ObjectTenants.parse(BUCKET, {"media": "acme", "media/beta/": "beta", "uploads/shared/": "gamma"})

    assert owners.owner("media", "cat.jpg") == "acme"
    assert owners.owner("media", "beta/cat.jpg") == "beta"
    assert owners.owner("uploads", "shared/x") == "gamma"
    assert owners.owner("uploads", "acme:u1/cat.jpg") == "acme", "the API's files are in the tenant's namespace"
    assert owners.owner("uploads", "photos/cat.jpg") is None
    assert owners.owner("other", "cat.jpg") is None
    assert tenant_of_id("acme:stream-1-0") == "acme" and tenant_of_id("stream-1-0") is None
    assert qualify("acme", "x") == "acme:x" and qualify(None, "x") == "x"


@pytest.mark.parametrize(
    "mapping",
    [{"uploads": "acme"}, {"uploads/beta:": "acme"}, {"media": "not a tenant"}, {"/x": "acme"}],
)
def test_a_location_that_would_take_tenants_namespaces_or_names_no_valid_tenant_is_refused(
    make_settings: Callable[..., Settings], mapping: dict[str, str]
) -> None:
    with pytest.raises((ConfigError, ValueError)):
        object_tenants(make_settings(bridge={"object_tenants": mapping}))


# -- ingest streams ----------------------------------------------------------------------


def add(conn: redis.Redis, stream: str, event: dict[str, Any]) -> str:
    return str(conn.xadd(stream, {"event": json.dumps(event)}))


def run_streams(settings: Settings, client: Client) -> dict[str, IngestStreamConsumer]:
    """Every stream consumer the settings ask for, polled until each is idle; by name."""
    consumers = build_consumers(settings, client, raw_redis(settings), stream=True, minio=False)
    by_name = {}
    for consumer in consumers:
        assert isinstance(consumer, IngestStreamConsumer)
        consumer.start()
        while consumer.poll():
            pass
        by_name[consumer.name] = consumer
    return by_name


def dead_letters(client: Client) -> list[DeadLetter]:
    return DeadLetterStream(client.redis).entries()


def test_a_tenants_stream_files_its_uploads_under_that_tenant_and_refuses_claims_of_another(
    bridge_settings: Callable[..., Settings], redis_conn: redis.Redis
) -> None:
    settings = bridge_settings(tenant_streams=["acme", "beta"])
    with Client(settings, source="test") as client:
        add(redis_conn, "omnibind:ingest:acme", {"id": "cms-1", "text": "acme's first article"})
        acme_object = add(redis_conn, "omnibind:ingest:acme", {"object": {"bucket": BUCKET, "key": "acme:u1/cat.png"}})
        # Beta tries: acme's tenant outright, acme's id (to replace acme's upload), acme's
        # stored object (to index it as its own), and an object of no tenant.
        claim = add(redis_conn, "omnibind:ingest:beta", {"id": "x", "text": "mine", "tenant": "acme"})
        add(redis_conn, "omnibind:ingest:beta", {"id": "cms-1", "text": "beta's own cms-1"})
        steal = add(redis_conn, "omnibind:ingest:beta", {"object": {"bucket": BUCKET, "key": "acme:u1/cat.png"}})
        add(redis_conn, "omnibind:ingest:beta", {"id": "loose", "object": {"bucket": BUCKET, "key": "photos/a.png"}})

        consumers = run_streams(settings, client)

        assert set(consumers) == {"ingest-stream", "ingest-stream:acme", "ingest-stream:beta"}
        acme = client.status("acme:cms-1")
        assert acme is not None and (acme.tenant, acme.run) == ("acme", 1)
        by_object = client.status(f"acme:stream-{acme_object}")
        assert by_object is not None and by_object.tenant == "acme"
        beta = client.status("beta:cms-1")
        assert beta is not None and beta.tenant == "beta", "the same id is a different upload in beta's namespace"
        assert client.status("acme:x") is None and client.status("x") is None
        assert client.status(f"beta:stream-{steal}") is None and client.status("beta:loose") is None
        letters = dead_letters(client)
        assert [(d.reason, d.upload_id) for d in letters] == [
            ("tenant_mismatch", "beta:x"),
            ("tenant_mismatch", f"beta:stream-{steal}"),
            ("tenant_mismatch", "beta:loose"),
        ], "refusals are beta's letters, never filed under acme"
        assert "names tenant 'acme'" in letters[0].message
        assert "acme" not in letters[1].message.replace("acme:u1", ""), "a refusal does not name the owner"
        assert json.loads(letters[0].event)["tenant"] == "acme", "kept as it came, to fix and re-add"
        assert str(claim) in letters[0].message
        assert len(queued_tasks(redis_conn, "cpu")) == 3

        # Retrying a refused event must not send it around the bridge's tenancy.
        retried = retry_dead_letter(client, letters[0])
        assert retried.outcome is Outcome.REFUSED
        assert client.status("x") is None and client.status("acme:x") is None
        assert len(dead_letters(client)) == 3


def test_the_shared_stream_has_the_configured_tenant_or_none_and_then_no_event_picks_one(
    bridge_settings: Callable[..., Settings], redis_conn: redis.Redis
) -> None:
    add(redis_conn, "omnibind:ingest", {"id": "a1", "text": "no tenant named"})
    add(redis_conn, "omnibind:ingest", {"id": "a2", "text": "names acme", "tenant": "acme"})
    add(redis_conn, "omnibind:ingest", {"id": "acme:a3", "text": "an id in acme's namespace"})
    add(redis_conn, "omnibind:ingest", {"id": "a4", "object": {"bucket": BUCKET, "key": "acme:u/x.png"}})

    untenanted = bridge_settings()
    with Client(untenanted, source="test") as client:
        run_streams(untenanted, client)
        record = client.status("a1")
        assert record is not None and record.tenant is None
        assert client.status("a2") is None and client.status("acme:a2") is None and client.status("acme:a3") is None
        assert client.status("a4") is None
        letters = dead_letters(client)
        assert [d.reason for d in letters] == ["tenant_mismatch"] * 3
        assert all(tenant_of_id(d.upload_id or "") is None for d in letters), "none is filed under acme"

    redis_conn.flushall()
    add(redis_conn, "omnibind:ingest", {"id": "b1", "text": "no tenant named"})
    add(redis_conn, "omnibind:ingest", {"id": "b2", "text": "names acme itself", "tenant": "acme"})
    add(redis_conn, "omnibind:ingest", {"id": "b3", "text": "names beta", "tenant": "beta"})
    configured = bridge_settings(stream_tenant="acme")
    with Client(configured, source="test") as client:
        run_streams(configured, client)
        assert [
            (r.upload_id, r.tenant) for r in (client.status("acme:b1"), client.status("acme:b2")) if r is not None
        ] == [("acme:b1", "acme"), ("acme:b2", "acme")]
        assert client.status("b3") is None and client.status("beta:b3") is None
        assert [(d.reason, d.upload_id) for d in dead_letters(client)] == [("tenant_mismatch", "acme:b3")]


def test_a_tenant_with_its_own_stream_cannot_also_be_the_shared_streams() -> None:
    with pytest.raises(ConfigError, match="own stream"):
        load_settings(bridge={"stream_tenant": "acme", "tenant_streams": ["acme"]})
    with pytest.raises(ConfigError, match="invalid tenant"):
        load_settings(bridge={"tenant_streams": ["a:b"]})


# -- MinIO bucket notifications ----------------------------------------------------------


def test_live_minio_uploads_get_the_tenant_of_their_location_and_a_claim_of_another_is_refused(
    make_settings: Callable[..., Settings],
    redis_servers: RedisServers,
    make_minio_server: Callable[..., MinioServer],
) -> None:
    redis_server = redis_servers.start()
    server = make_minio_server(redis_address=f"127.0.0.1:{redis_server.port}")
    settings = make_settings(
        redis_url=redis_server.url,
        objects=server.object_settings(bucket=BUCKET),
        bridge={
            "minio_notify_arn": server.notify_arn,
            "block_s": 0.2,
            "object_tenants": {"uploads/acme/": "acme", "uploads/beta/": "beta"},
        },
    )
    subscribe_configured_bucket(settings, threading.Event())
    sdk = Minio(server.endpoint, server.access_key, server.secret_key, secure=False, region=server.region)
    with Client(settings, source="test") as client:
        (consumer,) = build_consumers(settings, client, raw_redis(settings), stream=False, minio=True)
        assert isinstance(consumer, MinioEventsConsumer)
        consumer.start()

        def put(key: str, metadata: dict[str, str] | None = None) -> None:
            sdk.put_object(BUCKET, key, io.BytesIO(b"hello"), 5, metadata=metadata)  # type: ignore[arg-type]

        put("acme/a.txt")
        put("beta/b.txt", {"omnibind-tenant": "beta"})
        put("beta/claims-acme.txt", {"omnibind-tenant": "acme"})  # a beta writer claiming acme
        put("shared/c.txt")
        handle_until(consumer, lambda: len(client.statuses.recent(10)) == 3 and len(dead_letters(client)) == 1)

        acme_id = f"acme:{minio_upload_id(BUCKET, 'acme/a.txt')}"
        records = {r.upload_id: r.tenant for r in client.statuses.recent(10)}
        assert records == {
            acme_id: "acme",
            f"beta:{minio_upload_id(BUCKET, 'beta/b.txt')}": "beta",
            minio_upload_id(BUCKET, "shared/c.txt"): None,
        }
        (letter,) = dead_letters(client)
        assert (letter.reason, letter.upload_id) == (
            "tenant_mismatch",
            f"beta:{minio_upload_id(BUCKET, 'beta/claims-acme.txt')}",
        )

        # Removing acme's object deletes acme's record (the pending deletion names its id).
        sdk.remove_object(BUCKET, "acme/a.txt")
        handle_until(consumer, lambda: bool(pending_deletions(client)))
        assert pending_deletions(client) == [acme_id]
        assert client.objects.head(ObjectRef(bucket=BUCKET, key="beta/b.txt")) is not None
        assert client.status(acme_id) is not None and client.status(acme_id).status is UploadStatus.QUEUED  # type: ignore[union-attr]


def handle_until(consumer: MinioEventsConsumer, done: Callable[[], bool]) -> None:
    def handled() -> bool:
        if done():
            return True
        consumer.poll()  # blocks until the next notification or a short idle wait: no sleep
        return False

    wait_until(handled, timeout_s=ARRIVAL_DEADLINE_S, what="MinIO's notifications to be handled", poll_s=0)


def pending_deletions(client: Client) -> list[str]:
    raw: Any = client.redis.hvals("omnibind:deletions")
    return [DeleteRequest.model_validate_json(value).upload_id for value in raw]

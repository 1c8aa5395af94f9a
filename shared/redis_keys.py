"""Names of every Redis key omnibind writes (besides Celery's own), in one place.

All keys start with the configured prefix (``Settings.queue_prefix``), so several
deployments can share one Redis and ``SCAN MATCH {prefix}:*`` finds everything of one.
The layout is documented for non-Python consumers in ``docs/redis.md``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str = "omnibind"

    def __post_init__(self) -> None:
        if not self.prefix or any(ch.isspace() for ch in self.prefix):
            raise ValueError(f"invalid Redis key prefix {self.prefix!r}")

    def upload(self, upload_id: str) -> str:
        """Hash: the status record of one upload."""
        return f"{self.prefix}:upload:{upload_id}"

    def deliveries(self, upload_id: str) -> str:
        """Hash: stage -> how often that stage's message was delivered (poison detection)."""
        return f"{self.prefix}:deliveries:{upload_id}"

    @property
    def results(self) -> str:
        """Stream: one entry per terminal transition (indexed | failed)."""
        return f"{self.prefix}:results"

    @property
    def dead(self) -> str:
        """Stream: dead-lettered messages with their failure."""
        return f"{self.prefix}:dead"

    @property
    def ingest(self) -> str:
        """Stream: UploadEvent JSON documents from producers in any language (`omnibind bridge`)."""
        return f"{self.prefix}:ingest"

    def tenant_ingest(self, tenant: str) -> str:
        """Stream: the ingest stream of one tenant (``OMNIBIND_BRIDGE__TENANT_STREAMS``)."""
        return f"{self.prefix}:ingest:{tenant}"

    @property
    def minio_events(self) -> str:
        """List: MinIO bucket notifications (its notify_redis target, access format)."""
        return f"{self.prefix}:minio:events"

    @property
    def audit(self) -> str:
        """Stream: the audit log of admin actions (append-only, `shared.audit`)."""
        return f"{self.prefix}:audit"

    def reindex(self, target: str, scope: str) -> str:
        """Hash: progress of the re-embedding into index `target` of tenant `scope` ("*": all);
        ``…:failed`` beside it, upload id -> why it failed (`shared.reindex`)."""
        return f"{self.prefix}:reindex:{target}:{scope}"

    def purge(self, tenant: str) -> str:
        """Hash: progress of the purge of one tenant (`producers.purge`)."""
        return f"{self.prefix}:purge:{tenant}"

    def quota(self, tenant: str, day: str) -> str:
        """Hash (uploads, bytes): one tenant's use of one UTC day, ``YYYY-MM-DD`` (`shared.quotas`)."""
        return f"{self.prefix}:quota:{tenant}:{day}"

    def tenant_inflight(self, tenant: str) -> str:
        """Sorted set: a tenant's started upload ids by start time (`shared.tenant_inflight`)."""
        return f"{self.prefix}:tenant_inflight:{tenant}"

    def tenant_state(self, tenant: str) -> tuple[str, ...]:
        """Every key of per-tenant bookkeeping besides quotas (what a purge removes)."""
        return (self.tenant_inflight(tenant),)

    # -- fair queues (shared.fair_queue) ------------------------------------------------

    def fair_queue(self, tenant: str) -> str:
        """List: a tenant's uploads waiting for their turn (event JSON, oldest at the tail)."""
        return f"{self.prefix}:fair:queue:{tenant}"

    @property
    def fair_active(self) -> str:
        """List: the tenants with uploads waiting, in the order they became so."""
        return f"{self.prefix}:fair:active"

    @property
    def fair_waiting(self) -> str:
        """Hash: upload id -> tenant of every upload waiting in a fair queue."""
        return f"{self.prefix}:fair:waiting"

    @property
    def fair_dispatching(self) -> str:
        """Hash: upload id -> event taken from a fair queue, not yet confirmed sent."""
        return f"{self.prefix}:fair:dispatching"

    @property
    def fair_dispatched(self) -> str:
        """Sorted set: dispatched uploads (the window) by dispatch time, epoch ms."""
        return f"{self.prefix}:fair:dispatched"

    @property
    def fair_wake(self) -> str:
        """List (at most one element): pushed by producers to wake an idle dispatcher."""
        return f"{self.prefix}:fair:wake"

    @property
    def fair_lock(self) -> str:
        """String: the active dispatcher's lock."""
        return f"{self.prefix}:fair:lock"

    @property
    def webhook_deliveries(self) -> str:
        """Stream: one entry per finished webhook delivery (delivered or failed)."""
        return f"{self.prefix}:webhooks:deliveries"

    @property
    def counts(self) -> str:
        """Hash: status -> number of uploads in that status."""
        return f"{self.prefix}:counts"

    @property
    def inflight(self) -> str:
        """Sorted set: every unfinished upload id, scored by its last progress (epoch ms)."""
        return f"{self.prefix}:inflight"

    @property
    def deletions(self) -> str:
        """Hash: deletion token -> the DeleteRequest JSON of a deletion not yet done."""
        return f"{self.prefix}:deletions"

    def deletion_deliveries(self, token: str) -> str:
        """Hash of one pending deletion: retry count of a delete message -> how often a message
        with that count was delivered (poison detection, `shared.deletions`); the key goes with
        the pending deletion."""
        return f"{self.prefix}:deletions:deliveries:{token}"

    @property
    def deletions_inflight(self) -> str:
        """Sorted set: every pending deletion token, scored by its last progress (epoch ms)."""
        return f"{self.prefix}:deletions:inflight"

    @property
    def recent(self) -> str:
        """Sorted set: upload id scored by its last submission time (epoch ms), capped."""
        return f"{self.prefix}:recent"

    def queue(self, name: str) -> str:
        """List: the Celery queue `name` (cpu, gpu, index), written by kombu, which puts the
        same prefix before every key (``global_keyprefix``); its length is the backlog."""
        return f"{self.prefix}:{name}"

    @property
    def unacked(self) -> str:
        """Hash (kombu's): messages reserved by workers and not yet acked, retries waiting
        for their countdown included."""
        return f"{self.prefix}:unacked"

    def metrics(self, family: str) -> str:
        """Hash: the counters of one metric family written by workers (`shared.metrics`)."""
        return f"{self.prefix}:metrics:{family}"

    # -- moderation (docs/moderation.md) ------------------------------------------------

    @property
    def decisions(self) -> str:
        """Stream: the moderation decision log (one entry per decision, append-only)."""
        return f"{self.prefix}:decisions"

    def upload_decisions(self, upload_id: str) -> str:
        """List: the decision-log entry ids of one upload, newest first (written with each
        entry, in the same script; `shared.moderation.log`)."""
        return f"{self.prefix}:decisions:upload:{upload_id}"

    def prompts(self, policy_version: str, checkpoint: str) -> str:
        """String: the prompt embeddings of one policy version for one checkpoint (JSON)."""
        return f"{self.prefix}:moderation:prompts:{policy_version}:{checkpoint}"

    def prompts_requested(self, policy_version: str, checkpoint: str) -> str:
        """String (short TTL): someone asked the GPU workers for these prompt embeddings."""
        return f"{self.prefix}:moderation:prompts-requested:{policy_version}:{checkpoint}"

    def join(self, upload_id: str, token: str) -> str:
        """Hash: the parts (detector results, embedding) of one preprocess run of an upload."""
        return f"{self.prefix}:moderation:join:{upload_id}:{token}"

    @property
    def blocklist_entries(self) -> str:
        """Hash: blocklist entry id -> entry (JSON)."""
        return f"{self.prefix}:blocklist:entries"

    @property
    def blocklist_vectors(self) -> str:
        """Hash: blocklist entry id -> its embedding (base64 float32)."""
        return f"{self.prefix}:blocklist:vectors"

    @property
    def blocklist_sha256(self) -> str:
        """Hash: SHA-256 of a blocklisted file -> entry id."""
        return f"{self.prefix}:blocklist:sha256"

    @property
    def blocklist_version(self) -> str:
        """String: a counter bumped by every blocklist change (caches reload on change)."""
        return f"{self.prefix}:blocklist:version"

"""Consumer of the ingest stream ``{prefix}:ingest`` (format: `stream_events`).

Each entry is acknowledged only once its upload is enqueued (`Ingestor.ingest`), and trimmed
from the stream (every few seconds) once every consumer group acknowledged it. An invalid
entry — invalid, or past the size and nesting limits of `shared.json_limits`, which are
checked before it is parsed — is dead-lettered (stage ``ingest``, with the reason) and
acknowledged, so it never blocks the stream. So is an event its stream's tenant may not send
(`tenants.SourceTenancy`: reason ``tenant_mismatch``). After a failure or a restart the consumer first re-reads the
entries still pending on it; entries pending on a bridge that died are taken over after
`reclaim_idle_ms` (XAUTOCLAIM).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from producers.bridge.enqueue import Ingestor
from producers.bridge.failures import DEAD_LETTER_STAGE, kept_text
from producers.bridge.stream_events import decode_fields, event_from_entry, stream_upload_id
from producers.bridge.stream_group import ClaimSchedule, Entry, Fields, StreamGroup
from producers.bridge.tenants import SourceTenancy
from shared.errors import ConfigError, InternalError, PermanentError, TransientError
from shared.json_limits import loads_bounded
from shared.logs import upload_context
from shared.streams import DeadLetterStream
from shared.tenancy import ObjectTenants, tenant_of_id

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamOptions:
    batch_size: int = 100
    block_ms: int = 2000
    reclaim_idle_ms: int = 60_000
    trim_interval_s: float = 10.0


class IngestStreamConsumer:
    """Reads `group` (one consumer of its group) and enqueues every valid event, as the
    stream's tenant (`tenancy`; default: no tenant, and objects of no tenant only)."""

    def __init__(
        self,
        group: StreamGroup,
        ingestor: Ingestor,
        dead_letters: DeadLetterStream,
        options: StreamOptions,
        tenancy: SourceTenancy | None = None,
    ) -> None:
        self._group = group
        self._tenancy = tenancy or SourceTenancy(None, ObjectTenants(""), f"stream {group.key}")
        self.name = "ingest-stream" if self._tenancy.tenant is None else f"ingest-stream:{self._tenancy.tenant}"
        self._ingestor = ingestor
        self._dead = dead_letters
        self._options = options
        self._claims = ClaimSchedule(interval_s=max(1.0, options.reclaim_idle_ms / 2000))
        self._own_pending = True
        self._next_trim_s = 0.0

    def start(self) -> None:
        """Create the consumer group from the stream's start: entries added before the first
        bridge ever ran are ingested too."""
        self._group.ensure("0")
        self._own_pending = True

    def poll(self) -> int:
        """Handle one batch; returns its size (0 after an idle wait of up to `block_ms`).

        Raises `TransientError` (Redis or the broker down): the batch's unacknowledged
        entries stay pending on this consumer and are read again by the next call.
        """
        try:
            entries = self._next_batch()
            for entry_id, fields in entries:
                self._handle(entry_id, fields)
                self._group.ack(entry_id)
        except BaseException:
            self._own_pending = True
            raise
        now_s = time.monotonic()
        if entries and now_s >= self._next_trim_s:
            self._group.trim_handled()
            self._next_trim_s = now_s + self._options.trim_interval_s
        return len(entries)

    def _next_batch(self) -> list[Entry]:
        if self._own_pending:
            entries = self._group.read_own_pending(self._options.batch_size)
            if entries:
                return entries
            self._own_pending = False
        now_s = time.monotonic()
        if self._claims.due(now_s):
            cursor, entries = self._group.claim_stale(
                self._options.reclaim_idle_ms, self._claims.cursor, self._options.batch_size
            )
            self._claims.advance(cursor, now_s)
            if entries:
                log.info("took over %d entries a stopped bridge left pending", len(entries))
                return entries
        return self._group.read_new(self._options.batch_size, self._options.block_ms)

    def _handle(self, entry_id: str, fields: Fields | None) -> None:
        if fields is None:
            return  # trimmed from the stream before it was handled: nothing left to ingest
        try:
            event = self._tenancy.apply(event_from_entry(entry_id, decode_fields(fields)))
        except PermanentError as exc:  # invalid, too large, too deep: never parsed again
            self._dead_letter(entry_id, fields, exc)
            return
        with upload_context(event.id):
            try:
                outcome = self._ingestor.ingest(event)
            except PermanentError as exc:
                self._dead_letter(entry_id, fields, exc)
                return
            except (TransientError, ConfigError):
                raise
            except Exception as exc:  # a bug must not block the stream: keep the entry for a retry
                log.exception("stream entry %s failed unexpectedly", entry_id)
                self._dead_letter(entry_id, fields, InternalError(f"{type(exc).__name__}: {exc}"))
                return
            log.info("stream entry %s: %s (source %s)", entry_id, outcome.value, event.source)

    def _dead_letter(self, entry_id: str, fields: Fields, exc: PermanentError) -> None:
        log.warning("stream entry %s dead-lettered: %s: %s", entry_id, exc.reason, exc.message)
        text = _entry_text(fields)
        self._dead.dead_letter(
            kept_text(text),
            DEAD_LETTER_STAGE,
            type(exc).__name__,
            exc.reason,
            f"stream entry {entry_id}: {exc.message}",
            attempts=1,
            upload_id=self._letter_id(entry_id, text),
        )

    def _letter_id(self, entry_id: str, text: str) -> str:
        """The upload id a dead letter of this entry is filed under: in the stream's tenant
        namespace whatever the event says (the letter is that tenant's to see and to purge);
        on a stream without tenant, never inside a tenant's namespace."""
        claimed = _claimed_id(text)
        if claimed is None or (self._tenancy.tenant is None and tenant_of_id(claimed) is not None):
            claimed = stream_upload_id(entry_id)
        return self._tenancy.upload_id(claimed)


def _entry_text(fields: Fields) -> str:
    """The entry as it came, for the dead letter: its ``event`` field when there is one (so
    it can be re-added unchanged after a fix), else all fields as a JSON object."""
    text = {
        (k.decode(errors="replace") if isinstance(k, bytes) else str(k)): (
            v.decode(errors="replace") if isinstance(v, bytes) else str(v)
        )
        for k, v in fields.items()
    }
    return text["event"] if set(text) == {"event"} else json.dumps(text, ensure_ascii=False)


def _claimed_id(text: str) -> str | None:
    """The ``id`` an entry's event gives, when it is a JSON object with a textual one."""
    try:
        data = loads_bounded(text)
    except PermanentError:  # not JSON, too large or too deep
        return None
    found = data.get("id") if isinstance(data, dict) else None
    return found if isinstance(found, str) and found else None

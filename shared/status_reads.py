"""Reading upload status records: one record, the counts, the recent index page by page,
and waiting for uploads to finish. `shared.status.StatusStore` writes them (the rules are
in its module docstring) and reads them through this base."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import redis

from shared.events import UploadStatus
from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys
from shared.redis_replies import reply_text
from shared.status_record import StatusRecord, parse_record
from shared.streams import ResultStream

_POLL_S = 1.0


class StatusReads:
    """The reads of `shared.status.StatusStore`. Raises `RedisUnavailable` (transient) when
    Redis cannot be reached."""

    def __init__(self, client: redis.Redis, prefix: str = "omnibind") -> None:
        self._redis = client
        self.keys = RedisKeys(prefix)
        self._results = ResultStream(client, prefix)

    def get(self, upload_id: str) -> StatusRecord | None:
        """The record of `upload_id`, or None if unknown or expired."""
        with translate_redis_errors(f"reading the status of upload {upload_id}"):
            raw: Any = self._redis.hgetall(self.keys.upload(upload_id))
        return parse_record(raw) if raw else None

    def counts(self) -> dict[UploadStatus, int]:
        """Uploads per status (every status present, 0 when none)."""
        with translate_redis_errors("reading status counts"):
            raw: Any = self._redis.hgetall(self.keys.counts)
        stored = {reply_text(k): int(v) for k, v in raw.items()}
        return {status: stored.get(status.value, 0) for status in UploadStatus}

    def recent(self, n: int = 20) -> list[StatusRecord]:
        """Up to `n` most recently submitted uploads, newest first (expired ones skipped)."""
        if n <= 0:
            return []
        with translate_redis_errors("listing recent uploads"):
            members: Any = self._redis.zrevrange(self.keys.recent, 0, n - 1)
            ids = [reply_text(member) for member in members]
            pipe = self._redis.pipeline(transaction=False)
            for upload_id in ids:
                pipe.hgetall(self.keys.upload(upload_id))
            raws = pipe.execute()
        return [parse_record(raw) for raw in raws if raw]

    def recent_page(self, *, before: tuple[int, str] | None = None, count: int = 200) -> list[tuple[int, StatusRecord]]:
        """Up to `count` records of the recent index, newest submission first, each with its
        score (epoch ms of its last submission), strictly after the position `before` (a
        score and id from a previous page; None = from the newest). Expired records are
        skipped, so a page may hold fewer than `count` while more follow: page on until a
        page of the index comes back short (`recent_ids_page`)."""
        return self.records_at(self.recent_ids_page(before=before, count=count))

    def recent_ids_page(self, *, before: tuple[int, str] | None = None, count: int = 200) -> list[tuple[int, str]]:
        """(score, id) of up to `count` entries of the recent index after `before`, newest
        first. Ties of one millisecond are ordered by id, descending, as Redis orders them."""
        upper = "+inf" if before is None else str(before[0])
        with translate_redis_errors("listing recent uploads"):
            # Fetch the cursor's tie group in full: entries of the cursor's score that come
            # before (or are) the cursor's id were on earlier pages.
            rows: Any = self._redis.zrevrangebyscore(
                self.keys.recent, upper, "-inf", start=0, num=count + self._ties(before), withscores=True
            )
        page: list[tuple[int, str]] = []
        for member, score in rows:
            entry = (int(score), reply_text(member))
            if before is not None and entry[0] == before[0] and entry[1] >= before[1]:
                continue
            page.append(entry)
        return page[:count]

    def _ties(self, before: tuple[int, str] | None) -> int:
        if before is None:
            return 0
        with translate_redis_errors("listing recent uploads"):
            return int(self._redis.zcount(self.keys.recent, before[0], before[0]))  # type: ignore[arg-type]

    def records_at(self, entries: list[tuple[int, str]]) -> list[tuple[int, StatusRecord]]:
        """The records of (score, id) entries, in order, expired ones left out."""
        with translate_redis_errors("reading upload statuses"):
            pipe = self._redis.pipeline(transaction=False)
            for _, upload_id in entries:
                pipe.hgetall(self.keys.upload(upload_id))
            raws = pipe.execute()
        return [(score, parse_record(raw)) for (score, _), raw in zip(entries, raws, strict=True) if raw]

    def wait_terminal(
        self, upload_ids: Iterable[str], timeout_s: float, *, poll_s: float = _POLL_S
    ) -> dict[str, StatusRecord]:
        """Block until every id in `upload_ids` is finished or `timeout_s` passed.

        Returns the finished records by id; ids missing from the result did not finish in
        time (or are unknown). Listens on the results stream (XREAD BLOCK) and re-reads
        the pending records every `poll_s`, so trimmed stream entries cannot hang it.
        """
        pending = set(upload_ids)
        done: dict[str, StatusRecord] = {}
        deadline = time.monotonic() + timeout_s
        # Take the stream position before reading the records: a transition after the
        # read is then guaranteed to come after this position.
        last_id = self._results.last_id()
        self._collect_finished(pending, pending, done)
        next_poll = time.monotonic() + poll_s
        while pending:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                break
            entries = self._results.read(last_id, count=1000, block_ms=max(1, int(min(remaining_s, poll_s) * 1000)))
            last_id = entries[-1].entry_id if entries else last_id
            announced = {e.result.upload_id for e in entries} & pending
            if time.monotonic() >= next_poll:
                announced = set(pending)
                next_poll = time.monotonic() + poll_s
            self._collect_finished(announced, pending, done)
        return done

    def _collect_finished(self, ids: set[str], pending: set[str], done: dict[str, StatusRecord]) -> None:
        """Move the finished ones among `ids` from `pending` to `done`."""
        if not ids:
            return
        ordered = sorted(ids)
        with translate_redis_errors("reading upload statuses"):
            pipe = self._redis.pipeline(transaction=False)
            for upload_id in ordered:
                pipe.hgetall(self.keys.upload(upload_id))
            raws = pipe.execute()
        for upload_id, raw in zip(ordered, raws, strict=True):
            if raw:
                record = parse_record(raw)
                if record.terminal:
                    done[upload_id] = record
                    pending.discard(upload_id)

"""Paging through the recent index (`StatusStore.recent_ids_page`) against a real
redis-server: every upload exactly once, newest first, even when many share a millisecond."""

from __future__ import annotations

import redis

from producers.listing import decode_cursor, encode_cursor
from shared.status import StatusStore


def test_pages_visit_every_entry_once_newest_first_across_ties(redis_conn: redis.Redis) -> None:
    store = StatusStore(redis_conn, "listing")
    # 25 uploads over 3 milliseconds: pages of 4 cut through groups of equal scores.
    entries = {f"u-{n:02d}": 1000 + n // 10 for n in range(25)}
    redis_conn.zadd(store.keys.recent, entries)
    seen: list[tuple[int, str]] = []
    position = None
    while True:
        page = store.recent_ids_page(before=position, count=4)
        seen += page
        if len(page) < 4:
            break
        position = decode_cursor(encode_cursor(page[-1]))  # through the opaque cursor
    expected = sorted(((score, upload_id) for upload_id, score in entries.items()), reverse=True)
    assert seen == expected


def test_a_cursor_that_is_not_ours_decodes_to_nothing() -> None:
    assert decode_cursor("not base64 at all!") is None
    assert decode_cursor(encode_cursor((5, "acme:x|y"))) == (5, "acme:x|y")

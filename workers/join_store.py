"""Where the CPU detectors' results meet the GPU embedding of the same upload: the Redis side
of the join (the stages' steps are in `workers.join`; only workers use either).

The CPU stage sends the upload to the GPU queue first, then runs the detectors, so both
run at once. Each side stores its part in one hash per preprocess run (``{prefix}:
moderation:join:{upload id}:{token}``; the token is new for every run of the CPU stage, so
parts of different runs never mix) with one atomic script: store my part, and if every
expected part is there now, return them all. Which parts are expected is recorded once per
run by the CPU stage before it sends anything (`Join.open`); the list each message carries
is only the fallback for a hash without it. Whoever completes the set hands the upload
on. A redelivered part completes it again and hands it on twice, which is harmless (the
index write is an idempotent upsert, the status only moves forward). The index stage drops
the hash once the upload is indexed (`forget`); the others expire after `ttl_s`: one whose
other part never comes (its upload failed elsewhere) is just dropped, and the upload is not
stuck on it: the failure was recorded by the stage that failed.

Detectors that kill their worker (a native crash) would be redelivered forever and leave
the embedding waiting: `DetectorGuard` counts detector runs that never returned, and the
CPU stage skips the detectors (noting it in the decision) once `max_crashes` is reached.
"""

from __future__ import annotations

from typing import Any

import redis

from shared.redis_client import translate_redis_errors
from shared.redis_keys import RedisKeys
from shared.redis_replies import reply_text

DETECTORS_PART = "detectors"
EMBEDDED_PART = "embedded"
SPEECH_PART = "speech"  # the transcript (workers/tasks/speech.py)
PARTS = (DETECTORS_PART, EMBEDDED_PART)
KNOWN_PARTS = (DETECTORS_PART, EMBEDDED_PART, SPEECH_PART)
GUARD_FIELD = "detectors"  # in the upload's deliveries hash, reset with it by the status script

EXPECTED_FIELD = "_expected"  # the parts the run waits for, set once by the CPU stage (`Join.open`)

# KEYS[1] join hash. ARGV[1] part name, ARGV[2] payload, ARGV[3] ttl s, ARGV[4..] expected parts
# (used only when the hash holds no EXPECTED_FIELD). Returns the flat field/value list of the
# hash when every expected part is present, else nil.
JOIN_LUA = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
local expected = {}
local opened = redis.call('HGET', KEYS[1], '_expected')  -- EXPECTED_FIELD
if opened then
  for part in string.gmatch(opened, '[^,]+') do table.insert(expected, part) end
else
  for i = 4, #ARGV do table.insert(expected, ARGV[i]) end
end
for _, part in ipairs(expected) do
  if redis.call('HEXISTS', KEYS[1], part) == 0 then return nil end
end
return redis.call('HGETALL', KEYS[1])
"""


class Join:
    def __init__(self, client: redis.Redis, prefix: str = "omnibind", *, ttl_s: float = 86400.0) -> None:
        self._redis = client
        self.keys = RedisKeys(prefix)
        self.ttl_s = max(1, int(ttl_s))
        self._script = client.register_script(JOIN_LUA)

    def open(self, upload_id: str, token: str, expected: tuple[str, ...]) -> None:
        """Record, once, which parts run `token` waits for; every `put` of the run then goes
        by this list rather than the one its message carries (a message of another version,
        or one built with the default list, cannot leave the join waiting for a part nobody
        makes, nor hand on without one that is made)."""
        if not set(expected) <= set(KNOWN_PARTS):
            raise ValueError(f"unknown join parts {expected!r}")
        key = self.keys.join(upload_id, token)
        with translate_redis_errors(f"opening the join of upload {upload_id}"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hsetnx(key, EXPECTED_FIELD, ",".join(expected))
            pipe.expire(key, self.ttl_s)
            pipe.execute()

    def put(
        self, upload_id: str, token: str, part: str, payload: str, expected: tuple[str, ...] = PARTS
    ) -> dict[str, str] | None:
        """Store `part`; return every part (name -> payload) if all the expected ones are there
        now: those `open` recorded for the run, else `expected`."""
        if part not in KNOWN_PARTS or not set(expected) <= set(KNOWN_PARTS):
            raise ValueError(f"unknown join part {part!r} or {expected!r}")
        with translate_redis_errors(f"joining the {part} of upload {upload_id}"):
            reply: Any = self._script(
                keys=[self.keys.join(upload_id, token)], args=[part, payload, self.ttl_s, *expected]
            )
        if not reply:
            return None
        parts = {reply_text(reply[i]): reply_text(reply[i + 1]) for i in range(0, len(reply), 2)}
        parts.pop(EXPECTED_FIELD, None)
        return parts

    def forget(self, upload_id: str, token: str) -> None:
        """Drop the join hash of a run that ended: its parts are in the record now. A part
        redelivered later makes a new hash that only waits out `ttl_s` (the index stage
        writes nothing for an upload that has ended)."""
        with translate_redis_errors(f"dropping the join of upload {upload_id}"):
            self._redis.delete(self.keys.join(upload_id, token))


class DetectorGuard:
    """Counts detector runs of an upload that started but never finished (crashes)."""

    def __init__(self, client: redis.Redis, prefix: str = "omnibind", *, ttl_s: float = 86400.0) -> None:
        self._redis = client
        self.keys = RedisKeys(prefix)
        self.ttl_s = max(1, int(ttl_s))

    def begin(self, upload_id: str) -> int:
        """Count a run that starts now; returns how many earlier runs never finished."""
        key = self.keys.deliveries(upload_id)
        with translate_redis_errors(f"counting detector runs of upload {upload_id}"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hincrby(key, GUARD_FIELD, 1)
            pipe.expire(key, self.ttl_s)
            started, _ = pipe.execute()
        return int(started) - 1

    def end(self, upload_id: str) -> None:
        """The run that `begin` counted returned (whatever its result)."""
        with translate_redis_errors(f"counting detector runs of upload {upload_id}"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hincrby(self.keys.deliveries(upload_id), GUARD_FIELD, -1)
            pipe.expire(self.keys.deliveries(upload_id), self.ttl_s)  # the key may have gone meanwhile
            pipe.execute()

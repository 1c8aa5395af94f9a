"""Re-driving dead letters whose only fault was a dependency that was down.

A stage retries a transient failure for `retry_for_s` (workers.stage); an outage longer than
that still dead-letters the upload, with a reason that names what was down
(``storage_unavailable``, ``vector_store_unavailable``, ``redis_unavailable``...). Nothing is
wrong with such an upload: once the dependency answers again it would succeed. The stall
sweeper of each index worker (workers.sweeper) therefore calls `Redriver.redrive` every pass,
and the one that takes the lock ``{prefix}:dead:redrive-lock`` does the work. Index workers,
because they hold a vector-store client already and run no prefork pool: probing LanceDB
from a cpu worker's parent would start its runtime threads in a process that forks.

- it reads the dead letters after a cursor (``{prefix}:dead:redrive-cursor``) — at most
  `MAX_PER_PASS` a pass, so a long stream costs nothing per pass;
- a letter of an upload stage whose reason is in `TRANSIENT_REASONS` is sent again — a new
  run of its status record, the event to the first stage, the letter deleted, exactly as
  `omnibind dead --retry` does (`producers.dead_letters.requeue_dead_letter`) — once the
  dependency its reason names answers a cheap probe (object store: a `stat` of the letter's
  own object; vector store: a read of the upload's record; Redis: this pass runs on it);
- each upload is re-driven at most `max_redrives` times (``{prefix}:redrives:{id}``, kept
  `COUNT_TTL_S`, logged when reached): an upload that keeps failing for a "transient"
  reason stays dead-lettered for a human (`omnibind dead --retry`);
- the cursor stays on the oldest letter still waiting for its dependency, so it is looked at
  again next pass; every other letter is passed once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import redis
from pydantic import ValidationError

from producers.dead_letters import Outcome, requeue_dead_letter
from shared.errors import OmnibindError, PermanentError
from shared.events import Stage, UploadEvent
from shared.redis_client import translate_redis_errors
from shared.status import StatusStore
from shared.streams import DeadLetter, DeadLetterStream

log = logging.getLogger(__name__)

MAX_PER_PASS = 500
COUNT_TTL_S = 7 * 86400  # re-drive counts outlive any outage they were made for
OBJECTS = "objects"
VECTORS = "vectors"
REDIS = "redis"
# Reasons that say "something we depend on was down", and which dependency (None: nothing
# to probe beyond Redis, which this pass runs on).
TRANSIENT_REASONS: dict[str, str | None] = {
    "storage_unavailable": OBJECTS,
    "vector_store_unavailable": VECTORS,
    "redis_unavailable": REDIS,
    "broker_unavailable": REDIS,  # the bridge's name for it before it raised RedisUnavailable
    "transient": None,
    "busy": None,
    "embed_timeout": None,
    "index_timeout": None,
    "gpu_out_of_memory": None,
    "prompt_embeddings_unavailable": None,
}
UPLOAD_STAGES = frozenset(stage.value for stage in Stage) | {"ingest"}

# A probe returns when its dependency answers and raises `TransientError` when it does not.
Probe = Callable[[UploadEvent], object]


@dataclass
class PassResult:
    redriven: list[str] = field(default_factory=list)  # upload ids sent again
    waiting: int = 0  # letters whose dependency is still down
    exhausted: int = 0  # letters of uploads re-driven `max_redrives` times already


class Redriver:
    """Sends transient dead letters again (module docstring). `send` publishes an event to
    the first stage; `probes` maps `OBJECTS` / `VECTORS` to a probe; `on_redrive(reason)`
    is called for each letter sent again (metrics)."""

    def __init__(
        self,
        client: redis.Redis,
        status: StatusStore,
        dead: DeadLetterStream,
        send: Callable[[UploadEvent], None],
        *,
        prefix: str,
        max_redrives: int,
        probes: Mapping[str, Probe] | None = None,
        on_redrive: Callable[[str], None] | None = None,
    ) -> None:
        self._redis = client
        self._status = status
        self._dead = dead
        self._send = send
        self._prefix = prefix
        self.max_redrives = max_redrives
        self._probes = dict(probes or {})
        self._on_redrive = on_redrive
        self._cursor_key = f"{prefix}:dead:redrive-cursor"
        self._lock_key = f"{prefix}:dead:redrive-lock"

    def count_key(self, upload_id: str) -> str:
        return f"{self._prefix}:redrives:{upload_id}"

    def redrives(self, upload_id: str) -> int:
        """How often `upload_id` was re-driven (0 when never, or forgotten after `COUNT_TTL_S`)."""
        with translate_redis_errors(f"reading the re-drives of upload {upload_id}"):
            value = self._redis.get(self.count_key(upload_id))
        return int(value) if value is not None else 0  # type: ignore[arg-type]

    def redrive(self, *, lock_ms: int, me: str) -> PassResult:
        """One pass over the letters after the cursor, if `me` takes the lock (for `lock_ms`);
        raises `RedisUnavailable` (the next pass starts where this one could not)."""
        result = PassResult()
        if self.max_redrives <= 0:
            return result
        with translate_redis_errors("taking the re-drive lock"):
            if not self._redis.set(self._lock_key, me, nx=True, px=lock_ms):
                return result
        with translate_redis_errors("reading the re-drive cursor"):
            raw = self._redis.get(self._cursor_key)
        start = raw.decode() if isinstance(raw, bytes) else (raw or "-")
        letters = self._dead.entries(MAX_PER_PASS, start=start)
        answers: dict[str, bool] = {}
        first_waiting: str | None = None
        for letter in letters:
            if not self._settle(letter, answers, result) and first_waiting is None:
                first_waiting = letter.entry_id
        if letters:
            cursor = first_waiting or f"({letters[-1].entry_id}"
            with translate_redis_errors("moving the re-drive cursor"):
                self._redis.set(self._cursor_key, cursor)
        return result

    def _settle(self, letter: DeadLetter, answers: dict[str, bool], result: PassResult) -> bool:
        """Handle one letter; False when it waits for its dependency (look again later)."""
        if letter.reason not in TRANSIENT_REASONS or letter.stage not in UPLOAD_STAGES:
            return True
        try:
            event = UploadEvent.model_validate_json(letter.event)
        except ValidationError:
            return True  # nothing to send: `omnibind dead` shows it
        dependency = TRANSIENT_REASONS[letter.reason]
        if dependency is not None and not self._answers(dependency, event, answers):
            result.waiting += 1
            return False
        done = self.redrives(event.id)
        if done >= self.max_redrives:
            result.exhausted += 1
            log.warning(
                "dead letter %s (upload %s, %s) was re-driven %d times already: left for `omnibind dead --retry`",
                letter.entry_id,
                event.id,
                letter.reason,
                done,
            )
            return True
        # Counted before anything is sent: a crash half-way can never re-drive without bound.
        key = self.count_key(event.id)
        with translate_redis_errors(f"counting the re-drives of upload {event.id}"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, COUNT_TTL_S)
            pipe.execute()
        outcome = requeue_dead_letter(self._status, self._dead, self._send, letter)
        log.warning(
            "dead letter %s (upload %s, %s at %s) re-driven (%d of %d): %s",
            letter.entry_id,
            event.id,
            letter.reason,
            letter.stage,
            done + 1,
            self.max_redrives,
            outcome.outcome.value,
        )
        if outcome.outcome is not Outcome.UNREADABLE:
            result.redriven.append(event.id)
            if self._on_redrive is not None:
                self._on_redrive(letter.reason)
        return True

    def _answers(self, dependency: str, event: UploadEvent, answers: dict[str, bool]) -> bool:
        """Does `dependency` answer? Probed once per pass (the first letter's probe decides)."""
        if dependency not in answers:
            probe = self._probes.get(dependency)
            answers[dependency] = True if probe is None else _probe_answers(probe, event)
            if not answers[dependency]:
                log.info("re-drive waits: the %s does not answer yet", dependency)
        return answers[dependency]


def _probe_answers(probe: Probe, event: UploadEvent) -> bool:
    try:
        probe(event)
    except PermanentError:
        return True  # it answered (e.g. "no such object"): the run will say the rest
    except OmnibindError:  # unavailable, or misconfigured: either way not back yet
        return False
    return True


def object_probe(stat: Callable[..., object]) -> Probe:
    """Probe of the object store: a `stat` of the letter's own object (inline text: none)."""

    def probe(event: UploadEvent) -> object:
        if event.object is None:
            return None
        return stat(event.object)

    return probe


def vector_probe(get: Callable[[str], object]) -> Probe:
    """Probe of the vector store: a point read of the letter's upload (absent is an answer)."""

    def probe(event: UploadEvent) -> object:
        return get(event.id)

    return probe

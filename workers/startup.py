"""A worker process's start-up, in order, before it consumes (Celery ``worker_init``).

Each step either makes the worker ready or stops the process (`exit_if_start_fails`):
Celery would otherwise log the error and consume anyway, and a worker without its model
would heartbeat as healthy and fail every task. What runs depends on the worker's kind:

1. gpu: load the model (`Resources.gpu`), so no message waits in the prefetch buffer —
   aging towards the visibility timeout — while 4.8 GB load;
2. speech: load the Whisper model;
3. every kind (moderation enabled): validate the default and every tenant's policy (a
   malformed one names its field); cpu and speech workers (and a worker of every queue)
   check that the enabled detectors' packages are installed (loaded per child, on first
   use); a gpu worker embeds every policy's prompts with its model and caches them in
   Redis for (policy version, checkpoint), so index workers find them before the first upload;
4. index: wait until the vector store answers (no heartbeat, so not ready, meanwhile).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from shared.config import Settings
from shared.errors import CheckpointError, ConfigError, OmnibindError, TransientError
from shared.moderation.policy import Policy
from shared.moderation.prompts import PromptRequest
from shared.vectors.records import ALL_TENANTS, SearchFilters
from workers.moderation import ModerationRuntime
from workers.resources import Resources

if TYPE_CHECKING:
    from workers.gpu import GpuRunner

log = logging.getLogger(__name__)

# Exit status of a worker that cannot start: 3 = a configuration to fix (a supervisor must
# not restart it as is: producers.stack.EXIT_CONFIG), 1 = anything else.
EXIT_CONFIG = 3
EXIT_START_FAILED = 1
# Seconds between probes of a vector store that is down at start (the last one repeats).
VECTOR_STORE_RETRY_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


def start_worker(resources: Resources, kind: str | None) -> None:
    """Everything a worker of `kind` (None: one worker of every queue) does before it
    consumes, in this order; exits the process when a step fails."""
    label = kind or "any"
    with exit_if_start_fails(label):
        if kind == "gpu":
            runner = resources.gpu
            log.info("gpu worker ready: %s, max batch %d", runner.model_name, runner.max_batch)
        if kind == "speech":
            speech = resources.speech
            log.info("speech worker ready: %s on %s", speech.model_name, speech.device)
        if resources.settings.moderation.enabled:
            check_moderation(resources.moderation, kind)
            if kind == "gpu":
                for policy in resources.moderation.policies():
                    cache_prompts(resources.gpu, resources.moderation, policy, resources.settings)
        if kind == "index":
            wait_for_vector_store(resources)


def check_moderation(runtime: ModerationRuntime, kind: str | None) -> None:
    """Raise `ConfigError` for a policy that does not validate (on building the runtime) or
    a detector package that is not installed (checked without importing it)."""
    if kind in (None, "cpu", "speech"):  # speech workers run text detectors on transcripts
        _ = runtime.detectors
    log.info("moderation policy %r version %s", runtime.policy.name, runtime.policy.version)
    for tenant, policy in runtime.tenant_policies.items():
        log.info("moderation policy of tenant %s: %r version %s", tenant, policy.name, policy.version)


def cache_prompts(runner: GpuRunner, runtime: ModerationRuntime, policy: Policy, settings: Settings) -> None:
    """Embed `policy`'s prompts with `runner`'s model into the prompt cache, unless cached."""
    prompts = policy.prompt_texts()
    if not prompts:
        return
    try:
        cached = runtime.prompts.get(policy.version, runner.checkpoint)
        if cached is not None and set(prompts) <= set(cached.prompts):
            runtime.prompts.touch(policy.version, runner.checkpoint)
        else:
            request = PromptRequest(policy.version, tuple(prompts))
            runtime.prompts.put(runner.embed_prompts(request, timeout_s=settings.worker.task_time_limit_s))
        log.info("prompt embeddings of policy %s cached (%d prompts)", policy.version, len(prompts))
    except OmnibindError as exc:
        # Redis down at start-up: index workers will ask for the prompts when they need them.
        log.warning("could not cache the prompt embeddings at start-up: %s", exc)


@contextlib.contextmanager
def exit_if_start_fails(kind: str) -> Iterator[None]:
    """Turn an error of a worker's start-up into the exit of the process.

    A `ConfigError` or `CheckpointError` (the message says what to fix) exits with
    `EXIT_CONFIG` and no traceback; anything else with `EXIT_START_FAILED` and its traceback.
    """
    try:
        yield
    except (ConfigError, CheckpointError) as exc:
        log.critical("the %s worker cannot start: %s", kind, exc)
        raise SystemExit(EXIT_CONFIG) from exc
    except Exception as exc:
        log.critical("the %s worker cannot start: %s", kind, exc, exc_info=True)
        raise SystemExit(EXIT_START_FAILED) from exc


def wait_for_vector_store(
    resources: Resources,
    *,
    retry_s: Sequence[float] = VECTOR_STORE_RETRY_S,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Block until the vector store answers (one `count`), so an index worker reports ready
    only once it can write.

    A store that is unavailable (`TransientError`: still starting, restarting, a network
    blip) is waited for, with `retry_s` between probes, forever: the worker stays not ready
    meanwhile and starts consuming when it answers. A `ConfigError` (a wrong API key or URL,
    a collection of another schema or dimension) is raised at once: waiting cannot fix it.
    """
    for attempt in itertools.count():
        try:
            resources.vectors.count(SearchFilters(scope=ALL_TENANTS))
        except TransientError as exc:
            delay = retry_s[min(attempt, len(retry_s) - 1)]
            log.warning(
                "vector store not reachable at start (%s); retrying in %.0f s: this index worker reports "
                "ready once it answers",
                exc,
                delay,
            )
            sleep(delay)
        else:
            if attempt:
                log.info("vector store answers after %d attempts", attempt + 1)
            return

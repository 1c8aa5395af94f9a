"""The Celery app every worker process runs (`celery -A workers.app worker ...`, started by
`omnibind worker KIND` or `omnibind up`; a gpu worker's entry point is `workers.gpu_worker`,
the same app given the model runner).

Per-process set-up happens in signals, never at import (logging too: `setup_logging`):
prefork children get fresh clients after fork (`worker_process_init`); the worker's start-up
(`workers.startup.start_worker`: the model, the policies, the vector store) runs once, in
order, before it consumes (`worker_init`).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from celery import Celery
from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from shared.config import Settings, get_settings
from shared.deletions import send_delete
from shared.events import UploadEvent
from shared.fair_queue import FairDispatcher, FairQueue
from shared.heartbeat import Heartbeat
from shared.logs import bind_upload_id, configure_logging
from shared.moderation.prompts import PromptRequest
from shared.queue import QueueName, TaskName, celery_config
from workers.handoff import publish
from workers.memory_guard import start_memory_guard, start_recycling
from workers.redrive import OBJECTS, VECTORS, Redriver, object_probe, vector_probe
from workers.resources import GpuRunnerFactory, Resources
from workers.speech import SpeechRunnerFactory
from workers.startup import start_worker
from workers.sweeper import StallSweeper

log = logging.getLogger(__name__)

TASK_MODULES = ["workers.tasks.cpu", "workers.tasks.gpu", "workers.tasks.index", "workers.tasks.speech"]
# Producers and stage hand-offs send every upload's task with argsrepr "<upload {id}>".
_UPLOAD_ARGSREPR = re.compile(r"^<upload (?P<id>[^>]+)>$")


class OmnibindCelery(Celery):
    """Celery with the process's omnibind `Resources` attached."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("omnibind", include=TASK_MODULES)
        self.omnibind_settings = settings
        self.gpu_runner: GpuRunnerFactory | None = None  # given by workers.gpu_worker
        self.speech_runner: SpeechRunnerFactory | None = None  # given by workers.speech_worker
        self.resources = self.new_resources()
        self.heartbeat: Heartbeat | None = None
        self.sweeper: StallSweeper | None = None
        self.dispatcher: FairDispatcher | None = None
        self.conf.update(celery_config(settings))

    def new_resources(self) -> Resources:
        """Fresh clients and runtimes for this process (at start, and in each forked child)."""
        return Resources(
            self.omnibind_settings,
            gpu_runner=self.gpu_runner,
            speech_runner=self.speech_runner,
            request_prompts=self.request_prompts,
        )

    def use_gpu_runner(self, factory: GpuRunnerFactory) -> None:
        """Make this a process that embeds: `Resources.gpu` is built by `factory`."""
        self.gpu_runner = factory
        self.resources = self.new_resources()

    def use_speech_runner(self, factory: SpeechRunnerFactory) -> None:
        """Make this a process that transcribes: `Resources.speech` is built by `factory`."""
        self.speech_runner = factory
        self.resources = self.new_resources()

    def request_prompts(self, request: PromptRequest) -> None:
        """Ask a GPU worker to embed and cache a policy's prompts (the moderation runtime's
        `request_prompts`)."""
        self.send_task(TaskName.EMBED_PROMPTS, args=[request.to_wire()], queue=QueueName.GPU, ignore_result=True)


def create_app(settings: Settings | None = None) -> OmnibindCelery:
    return OmnibindCelery(settings or get_settings())


app = create_app()


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    """Celery sets up logging here when a worker starts (and in each prefork child): omnibind's
    handler replaces Celery's. Never at import, so importing the app leaves logging alone."""
    settings = app.omnibind_settings
    configure_logging(settings.log_level, settings.log_format, worker_kind=settings.worker.kind)


@worker_process_init.connect
def _fresh_resources_after_fork(**_: Any) -> None:
    # Prefork children: parallelism comes from processes. Only limit torch where it is
    # loaded already: a cpu worker's pool preprocesses with numpy and never imports it.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    app.resources = app.new_resources()
    # Pool processes decode untrusted uploads: bound their memory (see workers.memory_guard).
    start_memory_guard(app.omnibind_settings.worker.max_child_memory_mb)


@worker_init.connect
def _start_up(**_: Any) -> None:
    # No heartbeat (worker_ready) until this returns: readiness stays false meanwhile.
    start_worker(app.resources, app.omnibind_settings.worker.kind)


@worker_ready.connect
def _start_heartbeat(**_: Any) -> None:
    kind = app.omnibind_settings.worker.kind or "any"
    app.heartbeat = Heartbeat(app.resources.redis, app.omnibind_settings.queue_prefix, kind, _runtime_details)
    app.heartbeat.start()


@worker_ready.connect
def _recycle_the_index_worker_past_its_memory_bound(**_: Any) -> None:
    # After ready: Celery's SIGTERM handler (warm shutdown) is installed by then.
    if app.omnibind_settings.worker.kind == "index":
        start_recycling(app.omnibind_settings.index.recycle_rss_mb)


@worker_ready.connect
def _start_stall_sweeper(**_: Any) -> None:
    worker = app.omnibind_settings.worker
    if worker.sweep_interval_s <= 0:
        return
    resources = app.resources

    def send(event: UploadEvent) -> None:
        publish(app, TaskName.PREPROCESS, event.model_dump(mode="json"), event.id)

    redriver = None
    if worker.kind in ("index", None):  # see workers.redrive: who probes the vector store
        redriver = Redriver(
            resources.redis,
            resources.status,
            resources.dead_letters,
            send,
            prefix=app.omnibind_settings.queue_prefix,
            max_redrives=worker.redrive_max,
            probes={
                OBJECTS: object_probe(lambda ref: resources.objects.stat(ref)),
                VECTORS: vector_probe(lambda upload_id: resources.vectors.get(upload_id)),
            },
            on_redrive=resources.metrics.redriven,
        )
    app.sweeper = StallSweeper(
        resources.redis,
        resources.status,
        send,
        prefix=app.omnibind_settings.queue_prefix,
        stall_timeout_s=worker.stall_timeout_s,
        interval_s=worker.sweep_interval_s,
        send_delete=lambda request, token: send_delete(app, request, token),
        redriver=redriver,
        max_resends=worker.max_deliveries,
        fair=FairQueue.from_settings(resources.redis, app.omnibind_settings)
        if app.omnibind_settings.fairness.enabled
        else None,
    ).start()


@worker_ready.connect
def _start_fair_dispatcher(**_: Any) -> None:
    # Every cpu worker runs one; the lock lets one dispatch at a time (shared.fair_queue).
    settings = app.omnibind_settings
    if not settings.fairness.enabled or settings.worker.kind not in ("cpu", None):
        return

    def send(event: UploadEvent, sparse: bool) -> None:
        publish(app, TaskName.PREPROCESS, event.model_dump(mode="json"), event.id, sparse=sparse)

    app.dispatcher = FairDispatcher(FairQueue.from_settings(app.resources.redis, settings), send).start()


def _runtime_details() -> dict[str, object]:
    """Batch statistics of this process's batchers (read by `omnibind status` and bench/)."""
    built = app.resources.built()
    details: dict[str, object] = {}
    if "gpu" in built:
        details["gpu"] = {**built["gpu"].batcher.stats.as_dict(), "model": built["gpu"].model_name}
    if "indexer" in built:
        details["index"] = built["indexer"].batcher.stats.as_dict()
    return details


@worker_shutdown.connect
def _release(**_: Any) -> None:
    if app.sweeper is not None:
        app.sweeper.stop()
    if app.dispatcher is not None:
        app.dispatcher.stop()
    if app.heartbeat is not None:
        app.heartbeat.stop()
    app.resources.close()


@worker_process_shutdown.connect
def _release_child(**_: Any) -> None:
    """A prefork child exits: flush its metrics and close its clients."""
    app.resources.close()


@task_prerun.connect
def _bind_upload_of_task(task: Any = None, **_: Any) -> None:
    """Celery's own lines about a task ("... succeeded in 0.02s") carry its upload id too."""
    match = _UPLOAD_ARGSREPR.match(str(getattr(task.request, "argsrepr", None) or "")) if task else None
    bind_upload_id(match["id"] if match else None)


@task_postrun.connect
def _unbind_upload(**_: Any) -> None:
    bind_upload_id(None)

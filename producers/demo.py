"""`omnibind demo`: the main job on embedded defaults, start to finish, in one command."""

from __future__ import annotations

import shutil
import tempfile
from importlib import resources
from pathlib import Path

import click
from pydantic import SecretStr

from producers.client import Client
from producers.files import iter_files
from producers.ingest import Summary, submit_files, wait_for
from producers.stack import Stack
from shared.config import Settings
from shared.errors import CheckpointError

DEMO_QUERIES = ("a red circle", "a dog barking", "our refund policy")
TINY_BANNER = (
    "NOTE: --model tiny uses a tiny ImageBind with RANDOM weights (imagebind-tiny-random).\n"
    "      The pipeline is real; the similarity scores below are meaningless."
)


def samples_dir() -> Path:
    return Path(str(resources.files("producers") / "samples"))


def checkpoint_hint(exc: CheckpointError) -> str:
    return (
        f"cannot get the ImageBind checkpoint: {exc}\n"
        "Point OMNIBIND_MODEL__CHECKPOINT at a local copy of imagebind_huge.pth, or run\n"
        "  omnibind demo --model tiny\n"
        "to run the same pipeline offline with a tiny random-weight model."
    )


def ensure_checkpoint(settings: Settings) -> None:
    """Download (once, with a progress bar) or find the checkpoint before any worker starts,
    so an offline machine fails in seconds with a clear message. The tiny random checkpoint
    is left to the gpu worker, which creates it offline: that needs torch, which a producer
    never imports."""
    from shared.imagebind.resolve import is_tiny_random, locate_checkpoint
    from shared.models.catalog import card_for

    card = card_for(settings.model.name)
    if card.family == "perception":
        from shared.models.perception_files import locate_model_dir

        if not (card.random and settings.model.checkpoint is None):
            locate_model_dir(settings.model)
    elif not is_tiny_random(settings.model):
        locate_checkpoint(settings.model)


def run_demo(settings: Settings, *, model: str, data_dir: Path | None, timeout_s: float) -> int:
    """Returns the process exit code (0 = every sample indexed and the search answered)."""
    workdir = data_dir or Path(tempfile.mkdtemp(prefix="omnibind-demo-"))
    settings = settings.model_copy(
        update={
            "data_dir": workdir,
            "model": settings.model.model_copy(update={"name": model}),
            "redis": settings.redis.model_copy(update={"embedded_port": 0})
            if settings.redis_url is None
            else settings.redis,
        }
    )
    if model in ("tiny", "pe-av-tiny"):
        click.echo(
            TINY_BANNER.replace("a tiny ImageBind", "a tiny PE-AV").replace("imagebind-tiny", "pe-av-tiny")
            if model == "pe-av-tiny"
            else TINY_BANNER
        )
    try:
        ensure_checkpoint(settings)
    except CheckpointError as exc:
        click.echo(checkpoint_hint(exc), err=True)
        return 2
    log_dir = workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    click.echo(f"starting the embedded stack in {workdir} (worker logs in {log_dir}) ...")
    try:
        with Stack(settings, log_dir=log_dir) as stack:
            demo_settings = settings.model_copy(update={"redis_url": SecretStr(stack.redis_url or "")})
            return _ingest_and_search(demo_settings, timeout_s=timeout_s)
    finally:
        if data_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _ingest_and_search(settings: Settings, *, timeout_s: float) -> int:
    files = list(iter_files([samples_dir()]))
    with Client(settings, source="demo") as client:
        submitted = submit_files(client, files)
        finished = wait_for(client, [s.upload_id for s in submitted if s.upload_id], timeout_s=timeout_s)
        summary = Summary(submitted, finished)
        counts = summary.counts
        click.echo(f"indexed {counts['indexed']} of {len(files)} sample files, failed {counts['failed']}")
        for path, reason in summary.failures():
            click.echo(f"  FAILED {path.name}: {reason}")
        by_id = {s.upload_id: s.path.name for s in submitted}
        for upload_id, record in finished.items():  # what the speech stage heard
            spoken = record.extra.get("transcript")
            if isinstance(spoken, dict) and spoken.get("text"):
                click.echo(f'  {by_id.get(upload_id, upload_id)} says ({spoken.get("language")}): "{spoken["text"]}"')
        for query in DEMO_QUERIES:
            click.echo(f'\nsearch "{query}":')
            for hit in client.search(text=query, k=5):
                name = by_id.get(hit.record.upload_id, hit.record.upload_id)
                click.echo(f"  {hit.score:7.4f}  {hit.record.modality.value:<6} {name}  [{hit.record.model}]")
                if hit.detail:
                    click.echo(f"           matched {hit.detail}")
    ok = counts["indexed"] == len(files)
    click.echo("\ndemo finished" + ("" if ok else " with failures"))
    api = settings.api
    click.echo(
        f"review console: http://{api.host}:{api.port}/console "
        "(serve it with `omnibind up` and `omnibind serve`; docs/console.md)"
    )
    return 0 if ok else 1

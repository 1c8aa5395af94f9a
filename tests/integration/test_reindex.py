"""`omnibind reindex --model pe-av-tiny` on uploads indexed by the tiny ImageBind, in real
processes (redis-server, Celery workers, the CLI; embedded LanceDB, local objects): a SIGKILL
midway and a resume leave every upload in the new table exactly once, with its tenant; what
cannot be re-embedded is recorded with its reason; once cut over, searches run with PE-AV
find the uploads."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.events import Modality, UploadStatus
from shared.reindex import ReindexState
from shared.vectors.factory import open_vector_store
from shared.vectors.records import ALL_TENANTS, SearchFilters, tenants
from tests.support.media import video_bytes
from tests.support.stack import SAMPLES, RunningStack

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TARGET = "uploads__pe_av_tiny"
IMAGES = ["small_100x150.png", "tiny_37x23.png", "wide_720x160.png", "rgb_500x500.webp", "cmyk_400x300.jpg"]
VIDEO = video_bytes(seconds=2.0, fps=10, audio_streams=1)
SOUNDS = ["tone_16k_1s_mono.wav", "noise_8k_1s_mono.wav", "music_44100_1s_stereo.wav", "clip_22050_1s.flac"]


def ingest(running: RunningStack, tmp_path: Path, names: dict[str, str]) -> tuple[dict[str, str | None], str, str]:
    """Uploads of two tenants and none (images, sounds, text files); returns {id: tenant} of
    those that can be re-embedded, the id of an inline text and of an upload whose object is
    then deleted. `names` gets {id: file name}."""
    client = running.client
    owners: dict[str, str | None] = {}
    names_by_id = names
    plan = [("acme", IMAGES[:3] + SOUNDS[:3]), ("globex", IMAGES[3:] + SOUNDS[3:]), (None, IMAGES[:1])]
    for tenant, names in plan:
        for name in names:
            upload_id = client.submit(SAMPLES / name, tenant=tenant)
            owners[upload_id], names_by_id[upload_id] = tenant, name
        text = tmp_path / f"{tenant}-note.txt"
        text.write_text(f"a lighthouse at dusk, filed by {tenant}", encoding="utf-8")
        owners[client.submit(text, tenant=tenant)] = tenant
    video = client.submit(VIDEO, tenant="globex", filename="clip.mp4")
    owners[video], names_by_id[video] = "globex", "clip.mp4"
    inline = client.submit_text("an inline caption", tenant="acme")
    doomed = client.submit(SAMPLES / "palette_256x256.png", tenant="acme")
    done = client.wait([*owners, inline, doomed], timeout_s=300)
    assert {record.status for record in done.values()} == {UploadStatus.INDEXED}, done
    assert len(done) == len(owners) + 2
    ref = client.vectors.get(doomed).object  # type: ignore[union-attr]
    client.objects.delete(ref)  # type: ignore[arg-type]
    return owners, inline, doomed


def reindex_cli(running: RunningStack, *args: str, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "producers.cli", "reindex", "--model", "pe-av-tiny", *args],
        env=running.cli_env(),
        cwd=ROOT,
        text=True,
        **popen,  # type: ignore[call-overload]
    )


def test_reindex_killed_midway_resumes_and_every_upload_lands_once_with_its_tenant(
    start_stack: Callable[..., RunningStack], tmp_path: Path
) -> None:
    running = start_stack()
    names: dict[str, str] = {}
    owners, inline, doomed = ingest(running, tmp_path, names)
    total = len(owners) + 2

    refused = running.cli("rescore", "--model", "pe-av-tiny", "--dry-run")
    assert refused.returncode == 1 and "the stored vectors are of imagebind-tiny-random" in refused.stderr
    assert "omnibind reindex --model pe-av-tiny" in refused.stderr

    first = reindex_cli(running, "--batch-size", "1", stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert first.stderr is not None
    seen = []
    for line in first.stderr:
        seen.append(line)
        done = re.search(r": (\d+)/\d+ done", line)
        if line.startswith(f"reindex {TARGET}") and done and int(done.group(1)) >= 3:
            os.kill(first.pid, signal.SIGKILL)  # the CLI's own pid: it exec'd the reindex in place
            break
    assert first.wait(timeout=60) == -signal.SIGKILL, "".join(seen)
    state = ReindexState(running.client.redis, running.settings.queue_prefix, TARGET, None)
    killed = state.progress()
    assert killed is not None and killed.status == "running" and killed.cursor is not None
    assert 3 <= killed.done < total, "killed midway"

    resumed = reindex_cli(running, "--batch-size", "4", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out + err
    assert f"reindexed into {TARGET} with pe-av-tiny-random" in out
    assert f"OMNIBIND_MODEL__NAME=pe-av-tiny OMNIBIND_VECTORS__TABLE={TARGET}" in out
    final = state.progress()
    assert final is not None and final.status == "complete"
    assert (final.total, final.failed, final.embedded + final.skipped) == (total, 2, len(owners)), out
    assert {(f.upload_id, f.reason) for f in state.failures()} == {(inline, "no_object"), (doomed, "object_not_found")}

    target = open_vector_store(
        running.settings.model_copy(update={"vectors": running.settings.vectors.model_copy(update={"table": TARGET})})
    )
    records = list(target.iter_records())
    assert Counter(r.upload_id for r in records) == Counter(owners.keys()), "every upload exactly once"
    for record in records:
        source = running.client.vectors.get(record.upload_id)
        assert source is not None and source.model == "imagebind-tiny-random", "the old index is left as it was"
        assert record.model == "pe-av-tiny-random" and record.vector.shape == (32,)
        assert record.tenant == owners[record.upload_id] == source.tenant
        assert (record.sha256, record.object, record.created_at) == (source.sha256, source.object, source.created_at)
    clip = next(r for r in records if names.get(r.upload_id) == "clip.mp4")
    assert clip.modality is Modality.VIDEO and set(clip.parts) == {"audio_track"}, "PE-AV embeds the video itself"
    assert target.count(SearchFilters(scope=tenants("globex"))) == sum(t == "globex" for t in owners.values())

    status = running.cli("reindex", "--model", "pe-av-tiny", "--failures")
    assert f"{doomed}\tobject_not_found" in status.stdout and f"{inline}\tno_object" in status.stdout

    again = reindex_cli(running, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, out + err
    caught_up = state.progress()
    assert caught_up is not None and (caught_up.embedded, caught_up.skipped) == (0, len(owners)), (
        "a catch-up re-embeds nothing current"
    )
    target.close()

    # Cut over: the same data, PE-AV workers, the new table.
    running.stack.stop()
    new = start_stack(model={"name": "pe-av-tiny"}, data_dir=running.settings.data_dir, vectors={"table": TARGET})
    hits = new.client.search(image=(SAMPLES / IMAGES[3]).read_bytes(), k=3)
    assert hits and hits[0].score == pytest.approx(1.0, abs=1e-4), "the same image, embedded by the same model"
    assert names.get(hits[0].record.upload_id) == IMAGES[3] and hits[0].record.tenant == "globex"
    assert hits[0].record.model == "pe-av-tiny-random" and hits[0].record.modality is Modality.IMAGE
    scoped = new.client.search(text="a lighthouse at dusk", k=50, filters=SearchFilters(scope=tenants("acme")))
    assert {hit.record.upload_id for hit in scoped} == {i for i, t in owners.items() if t == "acme"}
    everything = new.client.search(text="a lighthouse at dusk", k=50, filters=SearchFilters(scope=ALL_TENANTS))
    assert {hit.record.upload_id for hit in everything} == set(owners)

    by_video = new.client.search(video=VIDEO, k=1)
    assert names.get(by_video[0].record.upload_id) == "clip.mp4" and by_video[0].score == pytest.approx(1.0, abs=1e-4)

    rescored = new.cli("rescore", "--dry-run")  # the new model's section, on its own vectors
    assert rescored.returncode == 0, rescored.stdout + rescored.stderr
    assert f"{len(owners)} records" in rescored.stdout and "for pe-av-tiny" in rescored.stdout

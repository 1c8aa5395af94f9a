"""The README's main job: `omnibind demo`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.s3_server import free_loopback_port

pytestmark = pytest.mark.integration


def run_demo(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OMNIBIND_")}
    environ.update({"OMNIBIND_MODEL__CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path / "home"), **env})
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", "demo", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_demo_with_the_tiny_model_runs_the_whole_pipeline_offline(tmp_path: Path) -> None:
    result = run_demo(["--model", "tiny", "--data-dir", str(tmp_path / "demo")], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RANDOM weights" in result.stdout
    assert "indexed 11 of 11 sample files, failed 0" in result.stdout
    assert 'search "a red circle":' in result.stdout
    assert "imagebind-tiny-random" in result.stdout
    # the spoken sample, transcribed by the offline Whisper
    assert 'refund-policy.flac says (en): "Our refund policy is simple' in result.stdout
    assert not list((tmp_path / "demo").glob("redis/*.pid")), "redis stopped after the demo"


def test_demo_with_the_tiny_pe_av_model_runs_the_whole_pipeline_offline(tmp_path: Path) -> None:
    # The commercial family's tiny random config: made locally (weights + tokenizer), no network.
    result = run_demo(["--model", "pe-av-tiny", "--data-dir", str(tmp_path / "demo")], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RANDOM weights" in result.stdout and "tiny PE-AV" in result.stdout
    assert "indexed 11 of 11 sample files, failed 0" in result.stdout
    assert 'search "a red circle":' in result.stdout
    assert "pe-av-tiny-random" in result.stdout


def test_demo_without_checkpoint_or_network_fails_fast_naming_the_tiny_model(tmp_path: Path) -> None:
    unreachable = f"http://127.0.0.1:{free_loopback_port()}/imagebind_huge.pth"
    result = run_demo([], tmp_path, OMNIBIND_MODEL__URL=unreachable)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "omnibind demo --model tiny" in result.stderr
    assert "OMNIBIND_MODEL__CHECKPOINT" in result.stderr
    assert "Traceback" not in result.stderr

"""The S3 test server is a real, separate process that other processes can use and that stops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

from tests.support.s3_server import S3Server, running_s3_server

REPO_ROOT = Path(__file__).resolve().parents[3]

_CHILD = """
from shared.config import load_settings
from shared.events import ObjectRef
from shared.objects.factory import open_object_store

store = open_object_store(load_settings())
ref = store.put("from-subprocess", "k", b"written by another process")
print(store.get(ObjectRef(bucket=ref.bucket, key=ref.key), max_bytes=100).decode())
"""


def test_a_subprocess_configured_by_env_uses_the_same_server(s3_server: S3Server) -> None:
    env = {**os.environ, **s3_server.env(), "PYTHONPATH": str(REPO_ROOT)}

    result = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "written by another process"


def test_the_server_process_is_gone_after_the_context_exits() -> None:
    with running_s3_server() as server:
        assert psutil.pid_exists(server.pid)
        process = psutil.Process(server.pid)

    assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE

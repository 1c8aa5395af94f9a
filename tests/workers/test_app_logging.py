"""Importing the worker app leaves logging alone; Celery's `setup_logging` signal, sent when
a worker starts (and in each prefork child), installs omnibind's handler."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import logging
root = logging.getLogger()
before = (list(root.handlers), root.level)
import workers.app
assert (list(root.handlers), root.level) == before, (root.handlers, root.level)
print("import: untouched")
workers.app.app.log.setup_logging_subsystem(loglevel="INFO")
assert any(getattr(h, "_omnibind", False) for h in root.handlers), root.handlers
print("setup_logging: omnibind handler")
"""


def test_importing_the_worker_app_does_not_touch_the_root_logger() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["import: untouched", "setup_logging: omnibind handler"]

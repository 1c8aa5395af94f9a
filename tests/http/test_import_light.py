"""The API process never loads torch or worker code (it asks the workers for embeddings)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_importing_and_building_the_app_loads_no_torch_and_no_worker_code() -> None:
    script = textwrap.dedent(
        """
        import sys
        from producers.http import create_app
        from producers.http.server import uvicorn_config
        from producers.cli import main
        from shared.config import Settings
        app = create_app(Settings())
        app.openapi()
        uvicorn_config(Settings(), host="127.0.0.1", port=0)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "workers"))
        print(heavy)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

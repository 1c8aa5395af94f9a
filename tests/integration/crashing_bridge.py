"""`omnibind bridge` that kills itself (SIGKILL, like ``kill -9``) in the middle of its Nth
enqueue — after taking an event off its source, before the upload is safely enqueued.

    CRASH_AT=5 CRASH_POINT=before|after_status python tests/integration/crashing_bridge.py

``before``: dies before anything of the upload is written. ``after_status``: dies after the
status record is written but before the Celery message is sent. Test-only fault injection;
everything else is the real bridge.
"""

from __future__ import annotations

import os
import signal
import threading

from producers.cli import main
from producers.client import Client
from shared.events import UploadEvent
from shared.status import RunStart


def crash_on_enqueue(crash_at: int, point: str) -> None:
    original = Client.enqueue_run
    calls = 0
    lock = threading.Lock()

    def enqueue_run(self: Client, event: UploadEvent) -> RunStart:
        nonlocal calls
        with lock:
            calls += 1
            crash = calls == crash_at
        if crash:
            if point == "after_status":
                self.statuses.start_run(event)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, event)

    Client.enqueue_run = enqueue_run  # type: ignore[method-assign]


if __name__ == "__main__":
    crash_on_enqueue(int(os.environ["CRASH_AT"]), os.environ.get("CRASH_POINT", "before"))
    main(["bridge"])

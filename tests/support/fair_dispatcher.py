"""A fair dispatcher alone in its process, configured from the environment like a worker
(tests kill it with SIGKILL): ``python -m tests.support.fair_dispatcher``. It sends through
the producer client's real Celery publish, as the cpu workers' dispatcher does through theirs."""

from __future__ import annotations

import logging

from producers.client import Client
from shared.config import get_settings
from shared.fair_queue import FairDispatcher


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    settings = get_settings()
    with Client(settings, source="test-dispatcher") as client:
        FairDispatcher(client.fair_queue, client.send_to_pipeline).run()


if __name__ == "__main__":
    main()

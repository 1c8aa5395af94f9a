"""A real HTTP server on loopback that records what is POSTed to it (webhook tests).

    with running_receiver(statuses=[500, 200]) as receiver:
        ...  # POST to receiver.url
        receiver.wait_for(2)
        receiver.requests[0].headers["Omnibind-Signature"]

Each request is answered with the next status of `statuses` (then `default_status`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    url: str
    statuses: list[int]
    default_status: int = 200
    requests: list[ReceivedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._arrived = threading.Condition(self._lock)

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._arrived:
            status = self.statuses.pop(0) if self.statuses else self.default_status
            self.requests.append(ReceivedRequest(path, headers, body, status))
            self._arrived.notify_all()
            return status

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[ReceivedRequest]:
        """Block until `count` requests arrived (AssertionError after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{len(self.requests)} of {count} requests arrived"
                self._arrived.wait(remaining)
            return list(self.requests)


@contextlib.contextmanager
def running_receiver(statuses: list[int] | None = None, *, default_status: int = 200) -> Iterator[Receiver]:
    """Serve on a free 127.0.0.1 port until the block ends."""
    receiver: Receiver | None = None

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            assert receiver is not None
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = receiver.answer(self.path, dict(self.headers.items()), body)
            reply = b"ok" if status < 300 else b"nope"
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = Receiver(
        f"http://127.0.0.1:{server.server_address[1]}/hooks/omnibind", list(statuses or []), default_status
    )
    thread = threading.Thread(target=server.serve_forever, name="http-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

"""The HTTP API served by a real uvicorn on loopback, in a thread of the test process.

`serve_api(settings) -> ApiServer` (a factory fixture) binds a free port, starts uvicorn
with the app of `create_app(settings)` and returns once it accepts connections; every
server is shut down (gracefully) after the test. Requests go through real sockets and
real HTTP parsing, exactly as a platform's would.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from producers.http.server import uvicorn_config
from shared.config import Settings
from tests.support.waiting import wait_until

START_TIMEOUT_S = 30.0


@dataclass
class ApiServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_api_server(settings: Settings, **config: Any) -> ApiServer:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv_config = uvicorn_config(settings, host="127.0.0.1", port=port)
    for key, value in config.items():
        setattr(uv_config, key, value)
    server = uvicorn.Server(uv_config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="api-server", daemon=True)
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError("the API server did not start: its thread ended")
        return server.started

    wait_until(started, timeout_s=START_TIMEOUT_S, what="the API server to start", poll_s=0.02)
    return ApiServer(f"http://127.0.0.1:{port}", server, thread)


@pytest.fixture
def serve_api() -> Iterator[Any]:
    """Factory: `serve_api(settings, **uvicorn_config_overrides) -> ApiServer`."""
    servers: list[ApiServer] = []

    def factory(settings: Settings, **config: Any) -> ApiServer:
        server = start_api_server(settings, **config)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()

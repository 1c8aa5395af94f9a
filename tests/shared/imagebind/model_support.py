"""Test support for the model, checkpoint and embedder tests: golden fixture access and a
Range-capable HTTP file server on loopback (the download path is tested against it)."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch

from shared.imagebind.config import TINY
from shared.imagebind.model import ImageBindModel, build_model

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "golden" / "model"
TINY_STATE_DICT = GOLDEN_DIR / "tiny_state_dict.pt"


@lru_cache(maxsize=1)
def golden_io() -> dict[str, np.ndarray]:
    """Inputs and reference outputs of `tools/golden/make_model_fixtures.py` (read once)."""
    with np.load(GOLDEN_DIR / "tiny_io.npz") as data:
        return {key: data[key] for key in data.files}


def reference_tiny_state_dict() -> dict[str, torch.Tensor]:
    """The reference's tiny model weights (all six modalities, 169 keys)."""
    state: dict[str, torch.Tensor] = torch.load(TINY_STATE_DICT, map_location="cpu", weights_only=True)
    return state


def tiny_vision_model() -> ImageBindModel:
    """Our model in the tiny configuration, vision trunk only, with the reference's weights."""
    model = build_model(TINY, ("vision",))
    state = {k: v for k, v in reference_tiny_state_dict().items() if k.split(".")[1] == "vision"}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


@dataclass
class ServedFile:
    """What `serve_file` serves and what it saw: the Range header of every GET."""

    url: str
    ranges: list[str | None] = field(default_factory=list)


_RANGE = re.compile(r"bytes=(\d+)-$")


@contextlib.contextmanager
def serve_file(
    data: bytes, *, name: str = "imagebind_huge.pth", honour_range: bool = True, drop_first_after: int | None = None
) -> Iterator[ServedFile]:
    """Serve `data` at ``http://127.0.0.1:<port>/<name>`` with HTTP Range support.

    `honour_range=False` answers every request with the whole file (a server without resume);
    `drop_first_after=N` makes the first response announce the full length but close the
    connection after N bytes (a download interrupted mid-file). Other paths answer 404.
    """
    served = ServedFile(url="")
    drop_pending = [drop_first_after]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            del format, args

        def do_GET(self) -> None:
            if self.path != f"/{name}":
                self.send_error(404)
                return
            header = self.headers.get("Range")
            served.ranges.append(header)
            match = _RANGE.match(header or "") if honour_range else None
            start = int(match.group(1)) if match else 0
            if match and start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206 if match else 200)
            if match:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            limit, drop_pending[0] = drop_pending[0], None
            self.wfile.write(body if limit is None else body[:limit])
            if limit is not None:
                self.wfile.flush()
                self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

"""Request size limits through real sockets: an over-size body is refused with 413 before
it is read whole."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from tests.http.conftest import API_KEY, RunningApi


def raw_request(url: str, head: bytes, body_parts: list[bytes], *, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """Send `head` and then each of `body_parts` on one connection (stopping if the server
    closes it), and return the response's status and body."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as sock:
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
        response = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            response += chunk
            if b"\r\n\r\n" in response and _complete(response):
                break
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def _head(path: str, content_type: str, length_header: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: {content_type}\r\n{length_header}\r\n\r\n"
    ).encode()


def test_declared_oversize_body_is_refused_before_it_is_sent(start_api: Callable[..., RunningApi]) -> None:
    api = start_api(limits={"max_bytes": 10_000}, api={"multipart_overhead_bytes": 1_000})
    # The server must answer without reading a body: none is ever sent.
    status, body = raw_request(
        api.url, _head("/v1/uploads", "multipart/form-data; boundary=x", "Content-Length: 50000000"), []
    )
    assert status == 413
    assert json.loads(body)["reason"] == "request_too_large"


def test_chunked_oversize_body_is_refused_once_past_the_limit(start_api: Callable[..., RunningApi]) -> None:
    api = start_api(api={"max_json_bytes": 4096})
    chunk = b"x" * 1024
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(64)] + [b"0\r\n\r\n"]
    status, body = raw_request(api.url, _head("/v1/uploads", "application/json", "Transfer-Encoding: chunked"), chunks)
    assert status == 413
    assert json.loads(body)["reason"] == "request_too_large"


def test_json_bodies_have_a_smaller_limit_than_files(start_api: Callable[..., RunningApi]) -> None:
    api = start_api(api={"max_json_bytes": 2048})
    with api.http() as http:
        big_json = http.post("/v1/uploads", json={"text": "y" * 4000})
        small_json = http.post("/v1/uploads", json={"text": "y" * 1000})
        file_of_4k = http.post("/v1/uploads", files={"file": ("a.txt", b"z " * 2000, "text/plain")})
    assert big_json.status_code == 413 and big_json.json()["reason"] == "request_too_large"
    assert small_json.status_code == 202
    assert file_of_4k.status_code == 202


def test_upload_over_the_pipeline_limit_is_refused(start_api: Callable[..., RunningApi]) -> None:
    api = start_api(limits={"max_bytes": 1000, "max_text_chars": 100})
    with api.http() as http:
        big_file = http.post("/v1/uploads", files={"file": ("a.txt", b"w " * 700, "text/plain")})
        long_text = http.post("/v1/uploads", json={"text": "v" * 101})
    assert big_file.status_code == 413 and big_file.json()["reason"] == "too_large"
    assert long_text.status_code == 413 and long_text.json()["reason"] == "text_too_long"


def test_a_search_file_over_the_pipeline_limit_is_refused_before_any_work(
    start_api: Callable[..., RunningApi],
) -> None:
    api = start_api(limits={"max_bytes": 1000})
    with api.http() as http:
        big_query = http.post("/v1/search", files={"file": ("q.txt", b"w " * 700, "text/plain")}, data={"k": "3"})
    assert big_query.status_code == 413, big_query.text
    assert big_query.json()["reason"] == "too_large" and "query file" in big_query.json()["message"]

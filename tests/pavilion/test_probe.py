"""The readiness probes: a TCP connection the kernel made to itself is not a server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pavilion.probe import http_ok, port_open
from tests.procs import free_port


def connected_to_itself(address: tuple[str, int], timeout: float | None = None, *_: object) -> socket.socket:
    """What the kernel hands a probe that drew the target port as its own source port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.settimeout(timeout)
    sock.bind(address)
    sock.connect(address)
    return sock


@pytest.fixture
def self_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "create_connection", connected_to_itself)


@pytest.fixture
def server() -> Iterator[int]:
    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/readyz" else 503)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.usefixtures("self_connecting")
def test_a_self_connected_port_probe_is_not_open() -> None:
    assert port_open(free_port()) is False


@pytest.mark.usefixtures("self_connecting")
def test_an_http_probe_that_reads_its_own_request_is_not_ok() -> None:
    # Before: http.client.BadStatusLine("GET /readyz HTTP/1.1") escaped and stopped `pavilion run`.
    assert http_ok(f"http://127.0.0.1:{free_port()}/readyz") is False


def test_probes_see_a_real_server_and_its_status(server: int) -> None:
    assert port_open(server) is True
    assert http_ok(f"http://127.0.0.1:{server}/readyz") is True
    assert http_ok(f"http://127.0.0.1:{server}/other") is False


def test_probes_of_a_closed_port_are_false() -> None:
    port = free_port()
    assert port_open(port) is False
    assert http_ok(f"http://127.0.0.1:{port}/readyz") is False

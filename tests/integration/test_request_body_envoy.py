"""A route's `max_request_body` through the real control plane and Envoy: a body within the limit reaches
the service whole, one past it is answered 413 by Envoy (with a Content-Length, and streamed in
chunks without one) and never reaches the service, a route without the limit still takes a large
body, and `envoy --mode validate` accepts the translated config."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.config.load import load_config
from controlplane.envoy_check import check_with_envoy
from tests.integration.gateway_procs import Gateway, running_gateway
from tests.integration.recording_upstream import seen, start_recording_upstream
from tests.procs import ENVOY, free_port

pytestmark = pytest.mark.integration

CONFIG = """regions: [eu-west]
listeners:
  - {{name: edge, address: 127.0.0.1, port: {edge}}}
services:
  - name: api
    endpoints: [{{address: 127.0.0.1:{api}, region: eu-west}}]
routes:
  - {{name: upload, listener: edge, match: {{prefix: /upload}}, service: api, max_request_body: 1KiB}}
  - {{name: bulk, listener: edge, match: {{prefix: /bulk}}, service: api}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, int, Path]]:
    routes = tmp_path_factory.mktemp("routes")
    edge = free_port()
    upstream = start_recording_upstream("api")
    (routes / "routes.yaml").write_text(CONFIG.format(edge=edge, api=upstream[1]))
    with running_gateway(routes, edge, {"api": upstream}) as gw:
        gw.plane.wait_synced(1)
        yield gw, upstream[1], routes


def post(port: int, path: str, body: bytes, *, chunked: bool = False) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if chunked:
            connection.putrequest("POST", path)
            connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            for start in range(0, len(body), 256):
                piece = body[start:start + 256]
                connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            connection.send(b"0\r\n\r\n")
        else:
            connection.request("POST", path, body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def received(port: int, path: str) -> list[int]:
    """The body sizes the service got on `path`."""
    return [len(entry["body"]) for entry in seen(port) if entry["path"] == path]


def test_a_body_within_the_limit_reaches_the_service_whole(gateway: tuple[Gateway, int, Path]) -> None:
    gw, api, _routes = gateway
    assert post(gw.listen_port, "/upload/within", b"x" * 1024)[0] == 200
    assert received(api, "/upload/within") == [1024]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_past_the_limit_is_refused_by_envoy_and_never_reaches_the_service(
        gateway: tuple[Gateway, int, Path], chunked: bool) -> None:
    gw, api, _routes = gateway
    path = f"/upload/past-{'chunked' if chunked else 'length'}"
    status, _body = post(gw.listen_port, path, b"y" * 1025 if not chunked else b"y" * 4096, chunked=chunked)
    assert status == 413
    assert received(api, path) == []


def test_a_route_without_a_limit_takes_a_large_body(gateway: tuple[Gateway, int, Path]) -> None:
    gw, api, _routes = gateway
    assert post(gw.listen_port, "/bulk/large", b"z" * 300_000, chunked=True)[0] == 200
    assert received(api, "/bulk/large") == [300_000]


def test_envoy_validates_the_translated_config(gateway: tuple[Gateway, int, Path]) -> None:
    _gw, _api, routes = gateway
    assert check_with_envoy(load_config(routes), ENVOY) == []

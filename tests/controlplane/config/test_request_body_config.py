"""A route's `max_request_body`: a size with a unit up to 64 MiB, on routes that call HTTP services and are
not websockets."""

from __future__ import annotations

import pytest

from controlplane.config.load import parse_sources
from pavilion.config_files import Source
from pavilion.errors import ConfigErrors

BASE = """regions: [eu]
listeners: [{name: public, address: 127.0.0.1, port: 10080}]
services:
  - {name: web, endpoints: [{address: 127.0.0.1:8080, region: eu}]}
  - {name: rpc, protocol: grpc, endpoints: [{address: 127.0.0.1:8081, region: eu}]}
routes:
"""


def route(extra: str) -> str:
    return BASE + "  - {name: a, match: {prefix: /a}, " + extra + "}\n"


def messages(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        parse_sources([Source("f.yaml", text)])
    return [str(error) for error in caught.value.errors]


@pytest.mark.parametrize(("size", "expected"), [
    ("512B", 512), ("64KiB", 65536), ("64 kB", 64000), ("1MB", 1_000_000), ("64MiB", 64 * 1024 * 1024)])
def test_sizes_take_decimal_and_binary_units(size: str, expected: int) -> None:
    config = parse_sources([Source("f.yaml", route(f"service: web, max_request_body: {size}"))])
    assert config.routes[0].max_request_body == expected


def test_absent_means_no_limit() -> None:
    assert parse_sources([Source("f.yaml", route("service: web"))]).routes[0].max_request_body is None


@pytest.mark.parametrize(("extra", "expected"), [
    ("service: web, max_request_body: 65536",
     "f.yaml:7:68: routes[a].max_request_body: expected a size with a unit (B, kB, KiB, MB, MiB), like 64KiB or "
     "1MB, got an integer (65536)"),
    ("service: web, max_request_body: 1GB", "f.yaml:7:68: routes[a].max_request_body: '1GB' is not a size"),
    ("service: web, max_request_body: 65MiB",
     "f.yaml:7:68: routes[a].max_request_body: '65MiB' is more than 64 MiB; give a size from 1 byte to 64MiB"),
    ("service: web, max_request_body: 0B", "f.yaml:7:68: routes[a].max_request_body: '0B' is no bytes"),
    ("service: rpc, max_request_body: 1MB",
     "f.yaml:7:68: routes[a].max_request_body: service 'rpc' speaks gRPC, whose streams Envoy would hold until "
     "they end"),
    ("service: web, websocket: true, max_request_body: 1MB",
     "f.yaml:7:85: routes[a].max_request_body: a websocket's upgrade request never ends"),
    ("direct_response: {status: 204}, max_request_body: 1MB",
     "f.yaml:7:86: routes[a].max_request_body: max_request_body applies to a route that calls a service, not to "
     "a direct_response"),
])
def test_refusals_name_the_field_and_place(extra: str, expected: str) -> None:
    (message,) = messages(route(extra))
    assert message.startswith(expected), message

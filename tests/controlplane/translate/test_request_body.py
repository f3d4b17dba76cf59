"""`max_request_body` → Envoy's buffer filter: in the chain of a listener with such a route only, disabled
there and after ext_authz and ratelimit (before the compressors and the router), and turned on per
route with the route's limit; other routes carry no buffer config, so they stream their bodies."""

from __future__ import annotations

from envoy.extensions.filters.http.buffer.v3 import buffer_pb2

from controlplane.config.model import Backend, Compression, Match, Route
from controlplane.translate._request_body import BUFFER_FILTER
from tests.controlplane.translate.test_compression import config, manager, routes_of

UPLOAD = Route("upload", "public", Match(prefix="/upload"), (Backend("accounts"),), max_request_body=64 * 1024)
BULK = Route("bulk", "public", Match(prefix="/bulk"), (Backend("accounts"),))


def test_the_filter_is_disabled_in_the_chain_after_the_checks_and_before_the_compressors() -> None:
    filters = manager(config(UPLOAD, BULK, compression=Compression(algorithms=("gzip",)))).http_filters
    names = [f.name for f in filters]
    assert names[names.index("envoy.filters.http.ratelimit") + 1] == BUFFER_FILTER
    assert names[names.index(BUFFER_FILTER) + 1:] == ["pavilion.compressor.gzip", "envoy.filters.http.router"]
    (buffer,) = [f for f in filters if f.name == BUFFER_FILTER]
    assert buffer.disabled


def test_a_route_with_a_limit_turns_the_filter_on_with_it_and_the_others_carry_nothing() -> None:
    routes = routes_of(config(UPLOAD, BULK))
    limit = buffer_pb2.BufferPerRoute()
    assert routes["upload"].typed_per_filter_config[BUFFER_FILTER].Unpack(limit)
    assert limit.buffer.max_request_bytes.value == 64 * 1024 and not limit.disabled
    assert BUFFER_FILTER not in routes["bulk"].typed_per_filter_config


def test_a_listener_without_such_a_route_has_no_buffer_filter() -> None:
    assert BUFFER_FILTER not in [f.name for f in manager(config(BULK)).http_filters]
    assert BUFFER_FILTER not in [f.name for f in manager(config(UPLOAD), "internal").http_filters]

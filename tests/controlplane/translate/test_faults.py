"""`fault` → Envoy's fault filter: in the chain of a listener with such a route only, disabled there with
no fault of its own, after ext_authz and ratelimit (before the buffer filter, the compressors and the
router); the route's HTTPFault turns it on with a fixed delay and status, never read from request
headers, a cap on active faults and no counters named by a request header."""

from __future__ import annotations

from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2

from controlplane.config.model import Backend, Compression, Fault, Match, Route
from controlplane.translate._faults import FAULT_FILTER, MAX_ACTIVE_FAULTS
from controlplane.translate._request_body import BUFFER_FILTER
from tests.controlplane.translate.test_compression import config, manager, routes_of

GATED = Route("gated", "public", Match(prefix="/gated"), (Backend("accounts"),), max_request_body=1024,
              fault=Fault(delay=0.2, delay_per_million=5000, abort_status=503, abort_per_million=1_000_000,
                          only_with_header="x-chaos"))
GRPC = Route("grpc", "public", Match(prefix="/grpc"), (Backend("extauthz"),),
             fault=Fault(abort_grpc_status=14, abort_per_million=500_000))
PLAIN = Route("plain", "public", Match(prefix="/plain"), (Backend("accounts"),))
FRACTION = percent_pb2.FractionalPercent


def route_fault(name: str, *routes: Route) -> fault_pb2.HTTPFault:
    fault = fault_pb2.HTTPFault()
    assert routes_of(config(*routes))[name].typed_per_filter_config[FAULT_FILTER].Unpack(fault)
    return fault


def test_the_filter_is_disabled_in_the_chain_after_the_checks_and_before_the_buffer_and_compressors() -> None:
    filters = manager(config(GATED, PLAIN, compression=Compression(algorithms=("gzip",)))).http_filters
    names = [f.name for f in filters]
    assert names[names.index("envoy.filters.http.ext_authz") + 1:] == [
        "envoy.filters.http.ratelimit", FAULT_FILTER, BUFFER_FILTER, "pavilion.compressor.gzip",
        "envoy.filters.http.router"]
    (chain,) = [f for f in filters if f.name == FAULT_FILTER]
    idle = fault_pb2.HTTPFault()
    assert chain.disabled and chain.typed_config.Unpack(idle)
    assert not idle.HasField("delay") and not idle.HasField("abort") and idle.disable_downstream_cluster_stats


def test_a_route_fault_has_a_fixed_delay_and_status_behind_its_header() -> None:
    fault = route_fault("gated", GATED, PLAIN)
    assert fault.delay.fixed_delay.ToMilliseconds() == 200 and not fault.delay.HasField("header_delay")
    assert fault.delay.percentage == FRACTION(numerator=5000, denominator=FRACTION.MILLION)
    assert fault.abort.http_status == 503 and fault.abort.WhichOneof("error_type") == "http_status"
    assert fault.abort.percentage == FRACTION(numerator=100, denominator=FRACTION.HUNDRED)
    (header,) = fault.headers
    assert header.name == "x-chaos" and header.present_match
    assert fault.max_active_faults.value == MAX_ACTIVE_FAULTS and fault.disable_downstream_cluster_stats
    assert not fault.HasField("response_rate_limit")


def test_a_grpc_abort_carries_the_grpc_status_and_no_header_gate() -> None:
    fault = route_fault("grpc", GRPC)
    assert fault.abort.WhichOneof("error_type") == "grpc_status" and fault.abort.grpc_status == 14
    assert fault.abort.percentage == FRACTION(numerator=50, denominator=FRACTION.HUNDRED)
    assert not fault.HasField("delay") and not fault.headers


def test_other_routes_and_listeners_carry_nothing() -> None:
    assert FAULT_FILTER not in routes_of(config(GATED, PLAIN))["plain"].typed_per_filter_config
    assert FAULT_FILTER not in [f.name for f in manager(config(PLAIN)).http_filters]
    assert FAULT_FILTER not in [f.name for f in manager(config(GATED), "internal").http_filters]

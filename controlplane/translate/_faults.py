"""A route's `fault` → Envoy's fault filter, on for that route only, with the route's HTTPFault.

The filter sits in the chain of a listener with such a route, `disabled` there (as the buffer filter of
_request_body), so routes without `fault` never run it; a route's HTTPFault in typed_per_filter_config
turns it on and replaces the chain's config whole. The chain's own config is a no-op: no delay, no abort.

Where it sits (`_listeners.http_filters`): after CORS, the local rate limits, RBAC, ext_authz and the
rate limiters, before the buffer filter, the compressors and the router, as Istio puts it just before
the router. A caller without a good token still gets ext_authz's 401/403 and one over a limit its 429,
so a fault never hides a refusal; a faulted request has been counted by the rate limiters, as a request
to a failing service would be. The route's `retries` never retry a fault (the router does not see it).

What a client must not control:
- Envoy honours the `x-envoy-fault-*` request headers only where the config asks for them
  (`header_abort`, `header_delay`, `response_rate_limit.header_limit`); Pavilion never sets those, so
  the headers do nothing (tests/integration/test_faults_envoy.py sends them).
- A request's `x-envoy-downstream-service-cluster` (which Envoy does not strip where the listener trusts
  `client_address.trusted_cidrs`) would make the filter keep counters named after whatever the client
  wrote: `disable_downstream_cluster_stats` turns that off.
- `max_active_faults`: Envoy's default is unlimited. Each delayed request holds a stream and up to 32 KiB
  of its body in the Envoy; with `only_with_header` on a public route anyone may ask for that. Past
  MAX_ACTIVE_FAULTS faults at once in one listener of one Envoy, a request is passed on untouched and
  counted in the listener's `fault.faults_overflow` stat.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.config.model import Config, Fault, Listener
from controlplane.translate._mirrors import fractional_percent
from controlplane.translate._protos import duration, route_enabled_filter, uint32

__all__ = ["FAULT_FILTER", "MAX_ACTIVE_FAULTS", "fault_filters", "route_fault"]

FAULT_FILTER = "envoy.filters.http.fault"
# Faults in progress at once per listener and Envoy (the count is the listener's filter's, all its routes').
MAX_ACTIVE_FAULTS = 1000


def fault_filters(item: Listener, config: Config) -> list[hcm_pb2.HttpFilter]:
    """The fault filter, disabled and without a fault of its own, when a route of `item` has `fault`."""
    if not any(r.fault is not None for r in config.routes if r.listener == item.name):
        return []
    return [route_enabled_filter(FAULT_FILTER, fault_pb2.HTTPFault(disable_downstream_cluster_stats=True))]


def route_fault(fault: Fault) -> fault_pb2.HTTPFault:
    """The route's HTTPFault: fixed delay and status (never from headers), no runtime overrides of its own."""
    result = fault_pb2.HTTPFault(max_active_faults=uint32(MAX_ACTIVE_FAULTS), disable_downstream_cluster_stats=True)
    if fault.delay is not None:
        result.delay.CopyFrom(common_fault_pb2.FaultDelay(
            fixed_delay=duration(fault.delay), percentage=fractional_percent(fault.delay_per_million)))
    if fault.abort_status is not None:
        result.abort.CopyFrom(fault_pb2.FaultAbort(
            http_status=fault.abort_status, percentage=fractional_percent(fault.abort_per_million)))
    elif fault.abort_grpc_status is not None:
        result.abort.CopyFrom(fault_pb2.FaultAbort(
            grpc_status=fault.abort_grpc_status, percentage=fractional_percent(fault.abort_per_million)))
    if fault.only_with_header is not None:
        result.headers.append(rc.HeaderMatcher(name=fault.only_with_header, present_match=True))
    return result

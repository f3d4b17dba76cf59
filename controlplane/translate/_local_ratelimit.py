"""`local_rate_limit` of listeners and routes → Envoy's local_ratelimit filter (token buckets in Envoy).

Two filter instances, both before RBAC, ext_authz and the ratelimit filter (see `_listeners.http_filters`),
after CORS (so a preflight is still answered, and a 429 still carries the CORS headers a page needs to
read it):

- `LISTENER_FILTER`, on a listener with `local_rate_limit`: its own config holds the bucket, so every
  request is checked, whatever route it takes (or none: a 404 flood is shed too).
- `ROUTE_FILTER`, on a listener one of whose routes has `local_rate_limit`: its own config has no bucket
  and no `filter_enabled`, so it does nothing; a route with a local limit replaces that config with its
  own through `typed_per_filter_config` (Envoy then keeps one bucket per route, per virtual host).
  Two instances, because a route's config replaces the filter's: with one, a route's limit would
  free its requests from the listener's.

A bucket refills `requests` per `unit` evenly (Envoy 1.40's token bucket refills continuously at
tokens_per_fill / fill_interval) up to `burst`. `per: client_ip` keys the bucket on Envoy's
`remote_address` descriptor, the client the connection manager settled on: the TCP peer, or behind a
load balancer the client a PROXY protocol header or a trusted X-Forwarded-For entry names (the listener's
`client_address`, see _client_address; tests/integration/test_client_address_envoy.py checks the
buckets): the filter's own `rate_limits` make the descriptor, and a descriptor entry with an
empty value gives each address its own bucket, kept in an LRU of `max_dynamic_descriptors`. The
default bucket is then not consumed (`always_consume_default_token_bucket: false`); it is there
because Envoy asks for one.

What a client over a local limit gets: 429 with body `local_rate_limited`, and the headers the
ratelimit service sends with its 429s (ratelimit/headers.py), from the config alone:
`RateLimit-Policy: "local";q=<burst>;w=<unit in seconds>`, `RateLimit: "local";r=0;t=<s>` and
`Retry-After: <s>`, where <s> is the time one token takes to come back, rounded up (at least 1). The
listener's guard calls its policy "local-listener". Envoy's own X-RateLimit-* headers stay off: they
would be added to every response, beside the service's RateLimit headers. A gRPC request gets
RESOURCE_EXHAUSTED (not UNAVAILABLE, which gRPC clients retry at once).
"""

from __future__ import annotations

import math

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.v3 import percent_pb2, token_bucket_pb2

from controlplane.config.model import Config, Listener, LocalRateLimit
from controlplane.translate._protos import boolean, duration, packed, uint32
from ratelimit.rules import UNIT_SECONDS

__all__ = [
    "LISTENER_FILTER", "LISTENER_POLICY", "REMOTE_ADDRESS", "ROUTE_FILTER", "ROUTE_POLICY", "local_rate_limit",
    "local_ratelimit_filters", "retry_seconds",
]

ROUTE_FILTER = "envoy.filters.http.local_ratelimit"
LISTENER_FILTER = "pavilion.listener_local_ratelimit"
ROUTE_POLICY = "local"
LISTENER_POLICY = "local-listener"
# The descriptor key Envoy's remote_address action sets.
REMOTE_ADDRESS = "remote_address"

_LocalRateLimit = local_rate_limit_pb2.LocalRateLimit
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_ALL = percent_pb2.FractionalPercent(numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED)
_NONE = percent_pb2.FractionalPercent(numerator=0, denominator=percent_pb2.FractionalPercent.HUNDRED)


def local_ratelimit_filters(item: Listener, config: Config) -> list[hcm_pb2.HttpFilter]:
    """The listener's guard (when it has one), then the routes' filter (when one of its routes has a limit)."""
    filters = []
    if item.local_rate_limit is not None:
        guard = local_rate_limit(item.local_rate_limit, f"local_ratelimit.listener.{item.name}", LISTENER_POLICY)
        filters.append(hcm_pb2.HttpFilter(name=LISTENER_FILTER, typed_config=packed(guard)))
    if any(r.local_rate_limit is not None for r in config.routes if r.listener == item.name):
        # No bucket and no filter_enabled: checks nothing until a route's own config replaces this one.
        idle = _LocalRateLimit(stat_prefix="local_ratelimit.route")
        filters.append(hcm_pb2.HttpFilter(name=ROUTE_FILTER, typed_config=packed(idle)))
    return filters


def local_rate_limit(limit: LocalRateLimit, stat_prefix: str, policy: str) -> local_rate_limit_pb2.LocalRateLimit:
    """The filter config (a listener's) or per-route config (a route's) enforcing `limit`."""
    bucket = token_bucket_pb2.TokenBucket(
        max_tokens=limit.burst, tokens_per_fill=uint32(limit.requests),
        fill_interval=duration(UNIT_SECONDS[limit.unit]))
    result = _LocalRateLimit(
        stat_prefix=stat_prefix,
        token_bucket=bucket,
        filter_enabled=base_pb2.RuntimeFractionalPercent(default_value=_ALL),
        filter_enforced=base_pb2.RuntimeFractionalPercent(default_value=_NONE if limit.shadow_mode else _ALL),
        response_headers_to_add=_rate_limited_headers(limit, policy),
        rate_limited_as_resource_exhausted=True,
    )
    if limit.per_client_ip:
        action = rc.RateLimit.Action(remote_address=rc.RateLimit.Action.RemoteAddress())
        result.rate_limits.append(rc.RateLimit(actions=[action]))
        # An empty value: one bucket per distinct address, not one shared by all.
        entry = ratelimit_pb2.RateLimitDescriptor.Entry(key=REMOTE_ADDRESS, value="")
        result.descriptors.append(ratelimit_pb2.LocalRateLimitDescriptor(entries=[entry], token_bucket=bucket))
        result.max_dynamic_descriptors.CopyFrom(uint32(limit.max_client_ips))
        result.always_consume_default_token_bucket.CopyFrom(boolean(False))
    return result


def retry_seconds(limit: LocalRateLimit) -> int:
    """Seconds until an empty bucket holds a token again, rounded up, at least 1."""
    return max(1, math.ceil(UNIT_SECONDS[limit.unit] / limit.requests))


def _rate_limited_headers(limit: LocalRateLimit, policy: str) -> list[base_pb2.HeaderValueOption]:
    wait = retry_seconds(limit)
    headers = (
        ("ratelimit-policy", f'"{policy}";q={limit.burst};w={UNIT_SECONDS[limit.unit]}'),
        ("ratelimit", f'"{policy}";r=0;t={wait}'),
        ("retry-after", str(wait)),
    )
    return [base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE)
            for key, value in headers]

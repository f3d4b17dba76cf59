"""A service's `load_balancing` → Cluster.lb_policy; a route's `hash_on` → RouteAction.hash_policy.

Every policy keeps the cluster's priorities (a node's own region first, failover to the others) and
locality weights: Envoy picks the priority and locality first, then the host with the policy. ring_hash
and maglev build one ring (table) per priority from host weight times locality weight, so a hash keeps
its host while the host is healthy, and moves only the keys of a host that leaves.

Every `hash_on` entry is `terminal`: the first one the request has (a header it sends, a cookie it
holds...) gives the whole hash, and the later ones are fallbacks. Without it Envoy would mix every
entry present into the hash, and a client would change hosts when, say, its address changed though
its session header did not. Envoy's own ring and table sizes (1024 to 8M entries, 65537) are kept.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc

from controlplane.config.model import HashKey
from controlplane.translate._protos import duration

__all__ = ["LB_POLICIES", "hash_policy"]

LB_POLICIES = {
    "round_robin": cluster_pb2.Cluster.ROUND_ROBIN,
    "least_request": cluster_pb2.Cluster.LEAST_REQUEST,
    "random": cluster_pb2.Cluster.RANDOM,
    "ring_hash": cluster_pb2.Cluster.RING_HASH,
    "maglev": cluster_pb2.Cluster.MAGLEV,
}

_Policy = rc.RouteAction.HashPolicy


def hash_policy(key: HashKey) -> rc.RouteAction.HashPolicy:
    if key.source == "header":
        return _Policy(header=_Policy.Header(header_name=key.name), terminal=True)
    if key.source == "query":
        return _Policy(query_parameter=_Policy.QueryParameter(name=key.name), terminal=True)
    if key.source == "source_ip":
        return _Policy(connection_properties=_Policy.ConnectionProperties(source_ip=True), terminal=True)
    cookie = _Policy.Cookie(name=key.name)
    if key.ttl is not None:  # with a ttl, even 0, Envoy sets the cookie on a request without it
        cookie.ttl.CopyFrom(duration(key.ttl))
    if key.path is not None:
        cookie.path = key.path
    return _Policy(cookie=cookie, terminal=True)

"""xDS type URLs and the order in which Envoy must receive them (make before break)."""

from __future__ import annotations

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
# Not translated: derived from the route tables, for Delta streams (VHDS, see controlplane.vhds).
VIRTUAL_HOST = "type.googleapis.com/envoy.config.route.v3.VirtualHost"

# Pavilion's own types (protos/pavilion/v1), for ext_authz and ratelimit nodes, never for Envoy.
TENANT_POLICY = "type.googleapis.com/pavilion.v1.TenantPolicy"
RATE_LIMIT_POLICY = "type.googleapis.com/pavilion.v1.RateLimitPolicy"
PAVILION_TYPES = (TENANT_POLICY, RATE_LIMIT_POLICY)

# ADS order: a cluster before its endpoints, secrets before listeners that name them,
# listeners before the routes they reference. These are the types translation produces.
ADS_ORDER = (CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE)
# Every type a stream may be pushed, in push order: a route table before its virtual hosts. A snapshot
# always holds the Envoy types and the virtual hosts; a Pavilion type only when translation produced
# it (for the role that uses it).
SERVED_ORDER = (*ADS_ORDER, VIRTUAL_HOST, *PAVILION_TYPES)



def short_type(type_url: str) -> str:
    """`RouteConfiguration` for its type URL: how metrics, logs and /status name a type."""
    return type_url.rsplit(".", 1)[-1]


# In SotW, a response for these types is the full state: a resource left out is deleted.
FULL_STATE_TYPES = frozenset({CLUSTER, LISTENER, *PAVILION_TYPES})

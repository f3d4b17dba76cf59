"""Pure translation of the route YAML model into Envoy v3 resources (xds-protos messages).

    translate(config, region, role) -> {type URL: [message, ...]}   sorted by name, no I/O
    translate_regional(...)         -> the region-dependent part of it (endpoints; secrets per region)
    resource_sources(config)        -> {(type URL, name): Location}  which YAML entry made a resource
    route_sources(config)           -> {route name: Location}        Envoy `Route.name` is the YAML name
    ext_authz_tenants(config)       -> (extauthz.tenant.Tenant, ...) what ext_authz accepts, by id
    ratelimit_rules(config)         -> (ratelimit.rules.Rule, ...)   what the ratelimit service enforces
    ratelimit_config(config)        -> ratelimit.matching.RateLimitConfig of those rules

Naming, so resources can be followed back to YAML: a Cluster and its ClusterLoadAssignment carry the
service name; a Listener and its RouteConfiguration carry the listener name; every Envoy Route
carries the YAML route name. Routes reach Envoy in precedence order (see _routes).
"""

from controlplane.translate._listeners import http_filters
from controlplane.translate._policy import EXT_AUTHZ_FILTER, RATELIMIT_FILTER, ext_authz_tenants
from controlplane.translate._ratelimit import ratelimit_config, ratelimit_rules
from controlplane.translate._routes import precedence
from controlplane.translate._translate import resource_sources, route_sources, translate, translate_regional

__all__ = [
    "EXT_AUTHZ_FILTER", "RATELIMIT_FILTER", "ext_authz_tenants", "http_filters", "precedence", "ratelimit_config",
    "ratelimit_rules", "resource_sources", "route_sources", "translate", "translate_regional",
]

"""`extauthz:`, `ratelimit:`, route `auth` and `rate_limits` → Envoy's ext_authz and ratelimit filters
and their per-route settings.

Filter order (see `_listeners.http_filters`): CORS (when a route of the listener has `cors`; it answers
preflights, which carry no token, before anything else sees them), ext_authz, then ratelimit, then the
router, so the rate limit descriptors can carry the tenant, client and subject ext_authz found in the token.

- ext_authz is on for every route of a listener; a route opts out with `auth: none`, or with
  `token: false` beside its `client_certificates` (`disabled`).
  Its `context_extensions` carry the route name and what the route requires of a token, each key
  only when required: the tenants (`tenant: "acme,beta"`), the scopes (`scopes: "a:read a:write"`)
  and the claims (`claims: '{"groups":["admins"]}'`, compact JSON with sorted names). Any failure
  to get an answer (timeout, connection refused, a gRPC error) is a 503: `failure_mode_allow` stays
  false, so an outage never lets a request through.
- Only the `authorization` and `dpop` headers go to ext_authz (path, method and host are sent apart
  from the headers): the ones the service reads (`dpop` carries a DPoP proof, RFC 9449, and is sent
  only by DPoP clients), and a small Check message for every request. A listener with a `websocket: true`
  route also sends `upgrade` and `sec-websocket-protocol`, and those routes carry `websocket: "1"`: a
  browser's websocket offers its token as a subprotocol, which ext_authz takes there alone.
- ratelimit: the service itself adds `RateLimit`, `RateLimit-Policy` and `Retry-After`
  (ratelimit/headers.py), so Envoy's own X-RateLimit headers stay off: no header twice.
"""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2
from envoy.config.ratelimit.v3 import rls_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import http_status_pb2

from controlplane.config.model import Config, ExtAuthzSettings, RateLimitSettings, Route
from controlplane.config.token_rules import claims_extension, scopes_extension
from controlplane.translate._protos import duration, packed
from controlplane.translate._ratelimit import route_rate_limits
from extauthz.tenant import Tenant

__all__ = [
    "EXT_AUTHZ_FILTER", "IDENTITY_HEADERS", "RATELIMIT_FILTER", "apply_route_policy", "ext_authz_filter",
    "ext_authz_per_route", "ext_authz_tenants", "identity_headers", "ratelimit_filter",
]

# The filter names are also the dynamic metadata namespace ext_authz writes the tenant, client and subject to.
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
RATELIMIT_FILTER = "envoy.filters.http.ratelimit"
# Headers ext_authz sets on the request it lets through (extauthz/decision.py); the signed assertion's
# header is `extauthz.identity_header`.
IDENTITY_HEADERS = ("x-pavilion-tenant", "x-pavilion-subject")
_SERVICE_UNAVAILABLE = http_status_pb2.HttpStatus(code=http_status_pb2.StatusCode.ServiceUnavailable)
_V3 = config_source_pb2.ApiVersion.V3
_CHECKED_HEADERS = ("authorization", "dpop")
_WEBSOCKET_HEADERS = ("upgrade", "sec-websocket-protocol")


def _grpc_service(cluster: str, timeout: float) -> grpc_service_pb2.GrpcService:
    return grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster), timeout=duration(timeout))


def ext_authz_filter(settings: ExtAuthzSettings, *, peer_certificate: bool = False,
                     websocket: bool = False) -> hcm_pb2.HttpFilter:
    """`peer_certificate`: send the client certificate (URL-encoded PEM) with each check, for tokens bound
    to one (RFC 8705); only where clients present certificates, as it adds ~1 KB to every check.
    `websocket`: also send `upgrade` and `sec-websocket-protocol`, where a browser's websocket may offer its
    token as a subprotocol (extauthz/websocket_token.py); only on listeners with a websocket route, so the
    others' config and checks stay as they were (plain requests carry neither header anyway)."""
    names = [*_CHECKED_HEADERS, *(_WEBSOCKET_HEADERS if websocket else ())]
    config = ext_authz_pb2.ExtAuthz(
        grpc_service=_grpc_service(settings.service, settings.timeout),
        transport_api_version=_V3,
        failure_mode_allow=False,
        status_on_error=_SERVICE_UNAVAILABLE,
        allowed_headers=string_pb2.ListStringMatcher(patterns=[string_pb2.StringMatcher(exact=n) for n in names]),
        include_peer_certificate=peer_certificate,
    )
    return hcm_pb2.HttpFilter(name=EXT_AUTHZ_FILTER, typed_config=packed(config))


def ratelimit_filter(settings: RateLimitSettings) -> hcm_pb2.HttpFilter:
    config = rate_limit_pb2.RateLimit(
        domain=settings.domain,
        timeout=duration(settings.timeout),
        failure_mode_deny=settings.failure_mode_deny,
        rate_limit_service=rls_pb2.RateLimitServiceConfig(
            grpc_service=_grpc_service(settings.service, settings.timeout), transport_api_version=_V3),
        # The service answers with its own RateLimit headers; Envoy's would repeat them.
        enable_x_ratelimit_headers=rate_limit_pb2.RateLimit.OFF,
        # With failure_mode_deny, an unanswered check is refused like an ext_authz error: 503, not 500.
        status_on_error=_SERVICE_UNAVAILABLE,
        # A gRPC call over its limit ends RESOURCE_EXHAUSTED, as with the local limits; Envoy's default,
        # UNAVAILABLE, is the status gRPC clients retry at once, feeding the flood.
        rate_limited_as_resource_exhausted=True,
    )
    return hcm_pb2.HttpFilter(name=RATELIMIT_FILTER, typed_config=packed(config))


def ext_authz_per_route(route: Route) -> ext_authz_pb2.ExtAuthzPerRoute:
    auth = route.auth
    if auth is not None and not auth.asks_token:
        return ext_authz_pb2.ExtAuthzPerRoute(disabled=True)
    extensions = {"route": route.name}
    # A key is present only when the route requires something: ext_authz reads a missing key as "any".
    if auth is not None and auth.tenants:
        extensions["tenant"] = ",".join(auth.tenants)
    if auth is not None and auth.scopes:
        extensions["scopes"] = scopes_extension(auth.scopes)
    if auth is not None and auth.claims:
        extensions["claims"] = claims_extension(auth.claims)
    if auth is not None and auth.identity_audience:
        extensions["identity_audience"] = auth.identity_audience  # extauthz/identity_assertion.py
    if route.websocket:
        extensions["websocket"] = "1"  # a token may come as a subprotocol here alone (extauthz/websocket_token.py)
    return ext_authz_pb2.ExtAuthzPerRoute(check_settings=ext_authz_pb2.CheckSettings(context_extensions=extensions))


def ext_authz_tenants(config: Config) -> tuple[Tenant, ...]:
    """The tenants ext_authz must know, ordered by id (so moving one between files changes nothing);
    empty without an `extauthz:` section, since then no token is checked."""
    if config.extauthz is None:
        return ()
    return tuple(sorted(config.tenants, key=lambda t: t.id))


def identity_headers(config: Config) -> list[str]:
    """Headers only ext_authz may set: its own, the identity assertion's and every tenant's claim headers,
    sorted."""
    claims = {header for tenant in config.tenants for _claim, header in tenant.claims_to_headers}
    assertion = {config.extauthz.identity_header} if config.extauthz is not None else set()
    return sorted(claims | assertion | set(IDENTITY_HEADERS))


def apply_route_policy(message: rc.Route, route: Route, config: Config, identity: list[str]) -> None:
    """Add the route's ext_authz settings and rate-limit actions to its Envoy Route."""
    if config.extauthz is not None:
        message.typed_per_filter_config[EXT_AUTHZ_FILTER].CopyFrom(packed(ext_authz_per_route(route)))
        if route.auth is not None and not route.auth.asks_token:
            # ext_authz is not asked on a public route (nor on one asking for a client certificate alone),
            # so nothing overwrites identity headers a client made up: remove them, or the upstream would
            # trust `x-user-id: admin`.
            known = set(message.request_headers_to_remove)
            message.request_headers_to_remove.extend(h for h in identity if h not in known)
    # A redirect or direct response has no RouteAction to carry actions (loading refuses rate_limits there).
    if config.ratelimit is not None and message.HasField("route"):
        message.route.rate_limits.extend(route_rate_limits(route))

"""Route `cors` → Envoy's CORS filter (first in the chain) and its per-route CorsPolicy.

The filter answers a preflight (OPTIONS with Origin and Access-Control-Request-Method) itself, so
ext_authz and the ratelimit filter after it never see one: a preflight carries no token, and must not
be counted. A preflight from an origin not allowed is answered too, without any Access-Control-Allow-*
header (`forward_not_matching_preflights: false`): it never reaches ext_authz or the service either.

A preflight is an OPTIONS request: a route whose `methods` leave OPTIONS out would not match it, and
the preflight would fall through to another route. Such a route gets a companion Envoy route just
before it, `<name>/preflight`: the same route (action, policy, per-filter settings) matching the same
path, hosts and headers for OPTIONS requests that carry Origin and name one of the route's methods in
Access-Control-Request-Method. It
must forward like the route itself: Envoy's CORS filter skips a route with a direct response (no
route entry), so the filter answers the companion's requests only because it forwards. Should the
filter ever not answer, ext_authz still asks for a token as on the route.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2

from controlplane.config.model import Cors, Route
from controlplane.translate._protos import packed

__all__ = ["CORS_FILTER", "cors_filter", "cors_policy", "needs_preflight_route", "preflight_route"]

CORS_FILTER = "envoy.filters.http.cors"
PREFLIGHT_SUFFIX = "/preflight"


def cors_filter() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=CORS_FILTER, typed_config=packed(cors_pb2.Cors()))


def cors_policy(cors: Cors) -> cors_pb2.CorsPolicy:
    origins = [string_pb2.StringMatcher(exact=origin) for origin in cors.exact_origins]
    origins += [string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))
                for pattern in cors.origin_patterns]
    result = cors_pb2.CorsPolicy(
        allow_origin_string_match=origins,
        allow_methods=",".join(cors.allow_methods),
        allow_headers=",".join(cors.allow_headers),
        expose_headers=",".join(cors.expose_headers),
        allow_credentials=wrappers_pb2.BoolValue(value=cors.allow_credentials),
        # Answer preflights from other origins here too (with no allow headers): forwarded, they would
        # reach ext_authz without a token.
        forward_not_matching_preflights=wrappers_pb2.BoolValue(value=False),
    )
    if cors.max_age is not None:
        result.max_age = str(cors.max_age)
    return result


def needs_preflight_route(route: Route) -> bool:
    return route.cors is not None and bool(route.match.methods) and "OPTIONS" not in route.match.methods


def preflight_route(message: rc.Route, route: Route) -> rc.Route:
    """The companion of `message` (the translated `route`, policy applied) that takes its preflights."""
    result = rc.Route()
    result.CopyFrom(message)
    result.name = route.name + PREFLIGHT_SUFFIX
    kept = [h for h in result.match.headers if h.name != ":method"]
    del result.match.headers[:]
    result.match.headers.extend(kept)
    # The preflight names the method the page will send: only the route's own methods find it, so
    # two routes on one path with different methods (and policies) each answer their own preflights.
    methods = sorted(set(route.match.methods))
    asked = (string_pb2.StringMatcher(exact=methods[0]) if len(methods) == 1 else
             string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex="|".join(methods))))
    result.match.headers.extend([
        rc.HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact="OPTIONS")),
        rc.HeaderMatcher(name="origin", present_match=True),
        rc.HeaderMatcher(name="access-control-request-method", string_match=asked),
    ])
    return result

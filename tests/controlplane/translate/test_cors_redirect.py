"""Route `cors`, `redirect`, `direct_response` and listener `redirect_to_https` → Envoy: the CORS filter
first in the chain with a CorsPolicy per route, preflight companions, redirect and direct response
actions without ext_authz or rate limits, and the listener that only redirects to https."""

from __future__ import annotations

from dataclasses import replace

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.config.model import (
    Backend,
    Config,
    Cors,
    DirectResponse,
    Endpoint,
    ExtAuthzSettings,
    HeaderMatch,
    Listener,
    Match,
    RateLimitSettings,
    Redirect,
    Route,
    RouteAuth,
    RouteRateLimit,
    Service,
)
from tests.controlplane.translate.sample import translated

CORS = Cors(exact_origins=("https://app.example.com",), origin_patterns=(r"https://([a-z0-9-]+\.)+example\.com",),
            allow_methods=("GET", "POST"), allow_headers=("authorization", "dpop"),
            expose_headers=("www-authenticate",), max_age=600)
ACCOUNTS = Route("accounts", "public", Match(prefix="/v1/accounts", methods=("GET", "POST")),
                 (Backend("accounts", 100),), cors=CORS,
                 rate_limits=(RouteRateLimit(per=(), unit="second", requests=5),))
OLD = Route("old", "public", Match(prefix="/old/"), (), redirect=Redirect(host="new.example.com",
                                                                           prefix_rewrite="/new/", code=308),
            auth=RouteAuth(public=True))
HEALTH = Route("health", "public", Match(path="/healthz"), (), direct_response=DirectResponse(204),
               auth=RouteAuth(public=True))
TEAPOT = Route("teapot", "public", Match(path="/tea"), (), direct_response=DirectResponse(418, "short"),
               auth=RouteAuth(tenants=("acme",)))
OTHER = Route("other", "internal", Match(prefix="/"), (Backend("accounts", 100),))


def config(*routes: Route, https_port: int | None = None, policy: bool = True) -> Config:
    endpoint = (Endpoint("127.0.0.1", 9001, "eu-west"),)
    services = (Service("accounts", endpoint), Service("extauthz", endpoint, protocol="grpc"))
    listeners = (Listener("public", "127.0.0.1", 10080), Listener("internal", "127.0.0.1", 10081),
                 Listener("plain", "127.0.0.1", 10082, https_port=https_port))
    return Config(("eu-west",), listeners if https_port else listeners[:2], services, routes,
                  extauthz=ExtAuthzSettings("extauthz") if policy else None,
                  ratelimit=RateLimitSettings("extauthz") if policy else None)


def route_table(cfg: Config, name: str = "public") -> route_pb2.RouteConfiguration:
    (found,) = [item for item in translated(route_pb2.RouteConfiguration, cfg, "eu-west") if item.name == name]
    return found


def routes_of(cfg: Config, name: str = "public") -> list[rc.Route]:
    (host,) = route_table(cfg, name).virtual_hosts
    return list(host.routes)


def filters(cfg: Config, name: str = "public") -> list[str]:
    (item,) = [x for x in translated(listener_pb2.Listener, cfg, "eu-west") if x.name == name]
    manager = hcm_pb2.HttpConnectionManager()
    assert item.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return [f.name for f in manager.http_filters]


def unpack_cors(message: rc.Route) -> cors_pb2.CorsPolicy:
    policy = cors_pb2.CorsPolicy()
    assert message.typed_per_filter_config["envoy.filters.http.cors"].Unpack(policy)
    return policy


def test_cors_filter_comes_first_so_preflights_never_reach_ext_authz_or_ratelimit() -> None:
    cfg = config(ACCOUNTS, OTHER)
    assert filters(cfg) == ["envoy.filters.http.cors", "envoy.filters.http.ext_authz", "envoy.filters.http.ratelimit",
                            "envoy.filters.http.router"]
    # Only where a route has `cors`: the other listener's chain is unchanged.
    assert filters(cfg, "internal") == ["envoy.filters.http.ext_authz", "envoy.filters.http.ratelimit",
                                        "envoy.filters.http.router"]
    assert filters(config(replace(ACCOUNTS, cors=None))) == filters(cfg, "internal")


def test_cors_policy_per_route() -> None:
    accounts = next(r for r in routes_of(config(ACCOUNTS)) if r.name == "accounts")
    policy = unpack_cors(accounts)
    assert [m.exact for m in policy.allow_origin_string_match] == ["https://app.example.com", ""]
    assert policy.allow_origin_string_match[1].safe_regex.regex == r"https://([a-z0-9-]+\.)+example\.com"
    assert (policy.allow_methods, policy.allow_headers, policy.expose_headers, policy.max_age) == (
        "GET,POST", "authorization,dpop", "www-authenticate", "600")
    assert policy.HasField("allow_credentials") and policy.allow_credentials.value is False
    # A preflight from another origin is answered by Envoy too, never forwarded to ext_authz.
    assert policy.HasField("forward_not_matching_preflights") and not policy.forward_not_matching_preflights.value
    # The old RouteAction.cors stays unused.
    assert not accounts.route.HasField("cors")
    # Allow-Origin echoes the request's origin: caches must keep one answer per origin.
    assert [(h.header.key, h.header.value, h.append_action) for h in accounts.response_headers_to_add] == [
        ("vary", "Origin", base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD)]
    no_age = unpack_cors(next(r for r in routes_of(config(replace(ACCOUNTS, cors=replace(CORS, max_age=None))))
                              if r.name == "accounts"))
    assert no_age.max_age == ""


def test_a_route_limited_to_methods_gets_a_preflight_companion_just_before_it() -> None:
    cfg = config(ACCOUNTS, replace(ACCOUNTS, name="zz", match=Match(prefix="/v1/zz")))
    messages = routes_of(cfg)
    names = [m.name for m in messages]
    assert names.index("accounts/preflight") == names.index("accounts") - 1
    companion, original = messages[names.index("accounts/preflight")], messages[names.index("accounts")]
    assert companion.match.prefix == "/v1/accounts"
    assert [(h.name, h.string_match.exact, h.string_match.safe_regex.regex, h.present_match)
            for h in companion.match.headers] == [
        (":method", "OPTIONS", "", False),
        ("origin", "", "", True),
        ("access-control-request-method", "", "GET|POST", False),  # only the route's own methods
    ]
    # It forwards like the route (Envoy's CORS filter skips routes that do not), with the same policy
    # and the same ext_authz settings: should the filter not answer, a token is still asked for.
    assert companion.route == original.route
    assert companion.typed_per_filter_config == original.typed_per_filter_config
    # One method: an exact match; the route's header conditions are kept.
    single = replace(ACCOUNTS, match=Match(prefix="/v1/accounts", methods=("DELETE",),
                                          headers=(HeaderMatch("x-team", "a"),)))
    companion = routes_of(config(single))[0]
    assert [(h.name, h.string_match.exact) for h in companion.match.headers] == [
        ("x-team", "a"), (":method", "OPTIONS"), ("origin", ""), ("access-control-request-method", "DELETE")]
    # No companion where the route itself takes OPTIONS, or any method.
    for match in (Match(prefix="/v1/accounts"), Match(prefix="/v1/accounts", methods=("GET", "OPTIONS"))):
        assert [m.name for m in routes_of(config(replace(ACCOUNTS, match=match)))] == ["accounts"]


def test_redirect_and_direct_response_actions() -> None:
    messages = {m.name: m for m in routes_of(config(OLD, HEALTH, TEAPOT))}
    old = messages["old"]
    assert old.WhichOneof("action") == "redirect"
    assert old.redirect == rc.RedirectAction(host_redirect="new.example.com", prefix_rewrite="/new/",
                                             response_code=rc.RedirectAction.PERMANENT_REDIRECT)
    assert messages["health"].direct_response == rc.DirectResponseAction(status=204)
    assert messages["teapot"].direct_response.body.inline_string == "short"
    secure = Route("secure", "public", Match(prefix="/"), (), redirect=Redirect(https=True, port=8443, path="/x",
                                                                               strip_query=True, code=302))
    (message,) = routes_of(config(secure, policy=False))
    assert message.redirect == rc.RedirectAction(https_redirect=True, port_redirect=8443, path_redirect="/x",
                                                 strip_query=True, response_code=rc.RedirectAction.FOUND)


def test_no_token_on_a_redirect_unless_auth_asks_and_no_rate_limit_action() -> None:
    messages = {m.name: m for m in routes_of(config(OLD, HEALTH, TEAPOT))}
    for name, disabled in (("old", True), ("health", True), ("teapot", False)):
        per_route = ext_authz_pb2.ExtAuthzPerRoute()
        assert messages[name].typed_per_filter_config["envoy.filters.http.ext_authz"].Unpack(per_route)
        assert per_route.disabled is disabled
        # ratelimit is configured, but the answer has no RouteAction to carry actions (nor should it get one).
        assert not messages[name].HasField("route")
    per_route = ext_authz_pb2.ExtAuthzPerRoute()
    messages["teapot"].typed_per_filter_config["envoy.filters.http.ext_authz"].Unpack(per_route)
    assert per_route.check_settings.context_extensions == {"route": "teapot", "tenant": "acme"}


def test_redirect_to_https_listener_redirects_everything_with_the_router_alone() -> None:
    cfg = config(ACCOUNTS, https_port=8443)
    table = route_table(cfg, "plain")
    (host,) = table.virtual_hosts
    assert list(host.domains) == ["*"]
    (only,) = host.routes
    assert only.match == rc.RouteMatch(prefix="/")
    assert only.redirect == rc.RedirectAction(https_redirect=True, port_redirect=8443,
                                              response_code=rc.RedirectAction.MOVED_PERMANENTLY)
    assert not only.typed_per_filter_config
    # No token and no count for a request that is only sent elsewhere.
    assert filters(cfg, "plain") == ["envoy.filters.http.router"]
    # On 443, the browser's default: no port in Location.
    (only,) = route_table(config(ACCOUNTS, https_port=443), "plain").virtual_hosts[0].routes
    assert only.redirect.port_redirect == 0 and only.redirect.https_redirect

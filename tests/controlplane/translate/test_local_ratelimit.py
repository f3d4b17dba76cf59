"""`local_rate_limit` → Envoy's local_ratelimit filter: where the two instances sit in the chain (after
CORS, before RBAC, ext_authz and ratelimit), the listener guard's config, the routes' per-route configs
(the filter's own idle), per client_ip through a dynamic descriptor, shadow mode, the 429's headers, and
nothing at all where no limit is written."""

from __future__ import annotations

from dataclasses import replace

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.v3 import percent_pb2

from controlplane.config.model import (
    Backend,
    ClientCertificate,
    Config,
    Cors,
    Endpoint,
    ExtAuthzSettings,
    Listener,
    LocalRateLimit,
    Match,
    RateLimitSettings,
    Route,
    RouteAuth,
    RouteRateLimit,
    Service,
)
from controlplane.config.model import ListenerTls as Tls
from controlplane.translate._local_ratelimit import LISTENER_FILTER, ROUTE_FILTER, retry_seconds
from tests.controlplane.translate.sample import translated

_LRL = local_rate_limit_pb2.LocalRateLimit
PER_IP = LocalRateLimit(requests=50, unit="second", burst=100, per_client_ip=True, max_client_ips=500)
WHOLE = LocalRateLimit(requests=10, unit="minute", burst=10)
ACCOUNTS = Route("accounts", "public", Match(prefix="/v1/accounts"), (Backend("accounts"),),
                 rate_limits=(RouteRateLimit(per=("tenant",), unit="second", requests=5),), local_rate_limit=WHOLE)
OTHER = Route("other", "public", Match(prefix="/other"), (Backend("accounts"),))


def config(*routes: Route, guard: LocalRateLimit | None = None, policy: bool = True,
           tls: Tls | None = None) -> Config:
    endpoint = (Endpoint("127.0.0.1", 9001, "eu-west"),)
    services = (Service("accounts", endpoint), Service("extauthz", endpoint, protocol="grpc"))
    listeners = (Listener("public", "127.0.0.1", 10080, local_rate_limit=guard, tls=tls),
                 Listener("internal", "127.0.0.1", 10081))
    return Config(("eu-west",), listeners, services, routes,
                  extauthz=ExtAuthzSettings("extauthz") if policy else None,
                  ratelimit=RateLimitSettings("extauthz") if policy else None)


def manager(cfg: Config, name: str = "public") -> hcm_pb2.HttpConnectionManager:
    (item,) = [x for x in translated(listener_pb2.Listener, cfg, "eu-west") if x.name == name]
    result = hcm_pb2.HttpConnectionManager()
    assert item.filter_chains[0].filters[0].typed_config.Unpack(result)
    return result


def filters(cfg: Config, name: str = "public") -> list[str]:
    return [f.name for f in manager(cfg, name).http_filters]


def filter_config(cfg: Config, name: str) -> local_rate_limit_pb2.LocalRateLimit:
    (found,) = [f for f in manager(cfg).http_filters if f.name == name]
    result = _LRL()
    assert found.typed_config.Unpack(result)
    return result


def routes_of(cfg: Config) -> dict[str, rc.Route]:
    (table,) = [t for t in translated(route_pb2.RouteConfiguration, cfg, "eu-west") if t.name == "public"]
    return {r.name: r for host in table.virtual_hosts for r in host.routes}


def per_route(message: rc.Route) -> local_rate_limit_pb2.LocalRateLimit:
    result = _LRL()
    assert message.typed_per_filter_config[ROUTE_FILTER].Unpack(result)
    return result


def headers(config_: local_rate_limit_pb2.LocalRateLimit) -> list[tuple[str, str]]:
    assert {h.append_action for h in config_.response_headers_to_add} == {
        base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD}
    return [(h.header.key, h.header.value) for h in config_.response_headers_to_add]


def test_local_filters_run_after_cors_and_before_rbac_ext_authz_and_ratelimit() -> None:
    certificate = RouteAuth(client_certificates=(ClientCertificate("dns", "billing.example"),))
    tls = Tls(b"chain", b"key", client_ca=b"ca")
    cors = Cors(exact_origins=("https://app.example.com",))
    cfg = config(replace(ACCOUNTS, cors=cors, auth=certificate), OTHER, guard=PER_IP, tls=tls)
    assert filters(cfg) == [
        "envoy.filters.http.cors", LISTENER_FILTER, ROUTE_FILTER, "envoy.filters.http.rbac",
        "envoy.filters.http.ext_authz", "envoy.filters.http.ratelimit", "envoy.filters.http.router"]


def test_without_local_limits_the_chain_and_routes_are_unchanged() -> None:
    cfg = config(replace(ACCOUNTS, local_rate_limit=None), OTHER)
    assert filters(cfg) == ["envoy.filters.http.ext_authz", "envoy.filters.http.ratelimit",
                            "envoy.filters.http.router"]
    assert all(ROUTE_FILTER not in r.typed_per_filter_config for r in routes_of(cfg).values())
    # Another listener's chain stays as it was when one listener's routes have limits.
    assert filters(config(ACCOUNTS, guard=PER_IP), "internal") == filters(cfg)
    # Without ext_authz and ratelimit, a local limit still works alone.
    assert filters(config(ACCOUNTS, policy=False)) == [ROUTE_FILTER, "envoy.filters.http.router"]


def test_the_route_filter_is_idle_until_a_route_config_replaces_it() -> None:
    idle = filter_config(config(ACCOUNTS, OTHER), ROUTE_FILTER)
    # No bucket and no filter_enabled (Envoy's default: 0 %): a route without a limit costs nothing.
    assert not idle.HasField("token_bucket") and not idle.HasField("filter_enabled")
    assert idle.stat_prefix == "local_ratelimit.route"
    assert ROUTE_FILTER not in routes_of(config(ACCOUNTS, OTHER))["other"].typed_per_filter_config


def test_a_route_limit_is_one_bucket_of_the_route() -> None:
    limit = per_route(routes_of(config(ACCOUNTS, OTHER))["accounts"])
    assert limit.stat_prefix == "local_ratelimit.route.accounts"
    bucket = limit.token_bucket
    assert (bucket.max_tokens, bucket.tokens_per_fill.value, bucket.fill_interval.seconds) == (10, 10, 60)
    all_ = percent_pb2.FractionalPercent(numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED)
    assert limit.filter_enabled.default_value == all_ and limit.filter_enforced.default_value == all_
    assert not limit.descriptors and not limit.rate_limits
    assert limit.enable_x_ratelimit_headers == 0  # OFF: the service's RateLimit headers are the ones clients read
    assert limit.rate_limited_as_resource_exhausted
    assert headers(limit) == [("ratelimit-policy", '"local";q=10;w=60'), ("ratelimit", '"local";r=0;t=6'),
                              ("retry-after", "6")]


def test_the_global_rate_limit_actions_are_untouched_by_a_local_limit() -> None:
    with_local, without = (routes_of(config(route))["accounts"] for route in
                           (ACCOUNTS, replace(ACCOUNTS, local_rate_limit=None)))
    assert list(with_local.route.rate_limits) == list(without.route.rate_limits)
    assert all(not a.HasField("remote_address") for r in with_local.route.rate_limits for a in r.actions)


def test_per_client_ip_is_a_dynamic_remote_address_descriptor_in_an_lru() -> None:
    route = replace(ACCOUNTS, local_rate_limit=PER_IP)
    limit = per_route(routes_of(config(route))["accounts"])
    (policy,) = limit.rate_limits
    (action,) = policy.actions
    assert action.HasField("remote_address")
    (descriptor,) = limit.descriptors
    assert [(e.key, e.value) for e in descriptor.entries] == [("remote_address", "")]  # "": one bucket per value
    assert descriptor.token_bucket == limit.token_bucket
    assert (descriptor.token_bucket.max_tokens, descriptor.token_bucket.tokens_per_fill.value) == (100, 50)
    assert limit.max_dynamic_descriptors.value == 500
    # The default bucket is Envoy's requirement only: one shared by every address would undo `per`.
    assert limit.HasField("always_consume_default_token_bucket")
    assert limit.always_consume_default_token_bucket.value is False


def test_the_listener_guard_holds_its_bucket_in_the_filter_itself() -> None:
    guard = filter_config(config(OTHER, guard=PER_IP), LISTENER_FILTER)
    assert guard.stat_prefix == "local_ratelimit.listener.public"
    assert guard.token_bucket.max_tokens == 100 and guard.filter_enabled.default_value.numerator == 100
    assert [e.key for e in guard.descriptors[0].entries] == ["remote_address"]
    assert headers(guard)[0] == ("ratelimit-policy", '"local-listener";q=100;w=1')
    # Only the guard: no route of this listener has a limit of its own.
    assert ROUTE_FILTER not in filters(config(OTHER, guard=PER_IP))


def test_shadow_mode_counts_without_enforcing() -> None:
    limit = per_route(routes_of(config(replace(ACCOUNTS, local_rate_limit=replace(WHOLE, shadow_mode=True))))[
        "accounts"])
    assert limit.filter_enabled.default_value.numerator == 100
    assert limit.HasField("filter_enforced") and limit.filter_enforced.default_value.numerator == 0


def test_retry_after_is_the_time_one_token_takes_rounded_up() -> None:
    assert retry_seconds(LocalRateLimit(requests=50, unit="second", burst=50)) == 1
    assert retry_seconds(LocalRateLimit(requests=7, unit="minute", burst=7)) == 9
    assert retry_seconds(LocalRateLimit(requests=1, unit="hour", burst=5)) == 3600


def test_a_preflight_companion_carries_the_same_route_limit() -> None:
    cors = Cors(exact_origins=("https://app.example.com",), allow_methods=("GET",))
    route = replace(ACCOUNTS, match=Match(prefix="/v1/accounts", methods=("GET",)), cors=cors)
    messages = routes_of(config(route))
    # The CORS filter answers preflights before the local filter; should it not, the route's bucket applies.
    assert per_route(messages["accounts/preflight"]) == per_route(messages["accounts"])

from __future__ import annotations

from dataclasses import replace

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from controlplane.config.model import Backend, Config, HeaderMatch, HeaderRules, Listener, Match, Retries, Route
from controlplane.translate._routes import literal_start
from tests.controlplane.translate.sample import sample_config, translated


def route_configs(config: Config | None = None) -> dict[str, route_pb2.RouteConfiguration]:
    return {r.name: r for r in translated(route_pb2.RouteConfiguration, config or sample_config(), "eu-west")}


def only(*routes: Route) -> Config:
    return replace(sample_config(), listeners=(Listener("public", "127.0.0.1", 10080),), routes=routes)


def single(route: Route) -> rc.Route:
    (vhost,) = route_configs(only(route))["public"].virtual_hosts
    (result,) = vhost.routes
    return result


def plain(name: str = "r", match: Match | None = None, **fields: object) -> Route:
    return Route(name=name, listener="public", match=match or Match(prefix="/"), backends=(Backend("accounts"),),
                 **fields)  # type: ignore[arg-type]


def test_one_route_configuration_per_listener_named_after_it() -> None:
    found = route_configs()
    assert sorted(found) == ["internal", "public"]
    assert [v.name for v in found["internal"].virtual_hosts] == ["*"]


def test_each_yaml_route_becomes_a_route_named_after_it() -> None:
    names = {r.name for v in route_configs()["public"].virtual_hosts for r in v.routes}
    assert names == {"accounts", "accounts-admin", "billing", "invoice"}


def test_match_kinds() -> None:
    assert single(plain(match=Match(prefix="/v1"))).match.prefix == "/v1"
    assert single(plain(match=Match(path="/exact"))).match.path == "/exact"
    regex = single(plain(match=Match(regex="/items/[0-9]+"))).match
    assert regex.safe_regex.regex == "/items/[0-9]+"
    assert not regex.safe_regex.HasField("google_re2")  # deprecated field; RE2 is Envoy's default engine


def test_header_matches_are_exact() -> None:
    (header,) = single(plain(match=Match(prefix="/", headers=(HeaderMatch("x-tenant", "acme"),)))).match.headers
    assert header.name == "x-tenant"
    assert header.string_match.exact == "acme"


def test_one_method_is_an_exact_match_several_a_regex() -> None:
    (one,) = single(plain(match=Match(prefix="/", methods=("GET",)))).match.headers
    assert (one.name, one.string_match.exact) == (":method", "GET")
    (several,) = single(plain(match=Match(prefix="/", methods=("PUT", "GET", "PUT")))).match.headers
    assert (several.name, several.string_match.safe_regex.regex) == (":method", "GET|PUT")


def test_single_service_and_weighted_backends() -> None:
    assert single(plain()).route.cluster == "accounts"
    split = single(replace(plain(), backends=(Backend("billing", 80), Backend("billing-v2", 20)))).route
    assert not split.cluster
    assert [(c.name, c.weight.value) for c in split.weighted_clusters.clusters] == [("billing", 80), ("billing-v2", 20)]


def test_rewrite_and_timeout() -> None:
    action = single(plain(rewrite_prefix="/accounts", timeout=2.5)).route
    assert action.prefix_rewrite == "/accounts"
    assert action.timeout.ToNanoseconds() == 2_500_000_000
    assert not single(plain()).route.HasField("timeout")  # Envoy's default (15 s) applies


def test_retries() -> None:
    retries = Retries(attempts=3, on=("5xx", "reset"), backoff_base=0.025, backoff_max=0.25, per_try_timeout=0.5)
    policy = single(plain(retries=retries)).route.retry_policy
    assert policy.retry_on == "5xx,reset"
    assert policy.num_retries.value == 3
    assert policy.retry_back_off.base_interval.ToNanoseconds() == 25_000_000
    assert policy.retry_back_off.max_interval.ToNanoseconds() == 250_000_000
    assert policy.per_try_timeout.ToNanoseconds() == 500_000_000
    assert policy.retry_priority.name == "envoy.retry_priorities.previous_priorities"
    assert [p.name for p in policy.retry_host_predicate] == ["envoy.retry_host_predicates.previous_hosts"]
    assert not single(plain()).route.HasField("retry_policy")


def test_header_rules_overwrite_and_remove() -> None:
    result = single(plain(request_headers=HeaderRules(add=(("x-from", "gateway"),), remove=("x-debug",)),
                          response_headers=HeaderRules(add=(("hsts", "1"),), remove=("server-timing",))))
    (added,) = result.request_headers_to_add
    assert (added.header.key, added.header.value) == ("x-from", "gateway")
    assert added.append_action == added.OVERWRITE_IF_EXISTS_OR_ADD
    assert list(result.request_headers_to_remove) == ["x-debug"]
    assert [(h.header.key, h.header.value) for h in result.response_headers_to_add] == [("hsts", "1")]
    assert list(result.response_headers_to_remove) == ["server-timing"]


def order(*routes: Route) -> list[str]:
    (vhost,) = route_configs(only(*routes))["public"].virtual_hosts
    return [r.name for r in vhost.routes]


def test_more_specific_routes_come_first_whatever_the_yaml_order() -> None:
    routes = [
        plain("catch-all", Match(prefix="/")),
        plain("regex-catch-all", Match(regex="/.*")),
        plain("short", Match(prefix="/v1")),
        plain("long", Match(prefix="/v1/accounts")),
        plain("regex", Match(regex="/v1/items/[0-9]+")),
        plain("exact", Match(path="/v1/accounts/me")),
        plain("exact-short", Match(path="/")),
        plain("with-method", Match(prefix="/v1", methods=("GET",))),
        plain("with-headers", Match(prefix="/v1", headers=(HeaderMatch("a", "1"), HeaderMatch("b", "2")))),
        plain("regex-short", Match(regex="/v1.*")),
    ]
    expected = ["exact", "exact-short", "long", "regex", "regex-short", "with-method", "with-headers", "short",
                "regex-catch-all", "catch-all"]
    assert order(*routes) == expected
    assert order(*reversed(routes)) == expected


@pytest.mark.parametrize(("regex", "start"), [
    ("/v1/items/[0-9]+", "/v1/items/"),
    ("/.*", "/"),
    ("^/v1/x", "/v1/x"),
    ("/v1s?/x", "/v1"),  # the s is optional
    ("/v1/(a|b)", "/v1/"),
    ("/a|/b", ""),  # a top-level alternation: no common start
    ("/plain", "/plain"),
])
def test_literal_start_of_a_regex(regex: str, start: str) -> None:
    assert literal_start(regex) == start


def test_ties_go_by_route_name() -> None:
    assert order(plain("b", Match(prefix="/x")), plain("a", Match(prefix="/y"))) == ["a", "b"]


def vhosts(*routes: Route) -> dict[tuple[str, ...], list[str]]:
    found = route_configs(only(*routes))["public"].virtual_hosts
    return {tuple(v.domains): [r.name for r in v.routes] for v in found}


def test_routes_with_the_same_hosts_share_one_virtual_host() -> None:
    hosts = ("a.example.com", "b.example.com")
    assert vhosts(plain("x", hosts=hosts), plain("y", Match(prefix="/y"), hosts=tuple(reversed(hosts)))) == {
        hosts: ["y", "x"]}


def test_wildcard_routes_also_serve_specific_hosts() -> None:
    found = vhosts(
        plain("everyone", Match(prefix="/health")),
        plain("api-only", Match(prefix="/v1"), hosts=("api.example.com",)),
        plain("subdomains", Match(prefix="/sub"), hosts=("*.example.com",)),
    )
    # Route order within each is by precedence: /health, then /sub, then /v1 (longer prefix first).
    assert found == {
        ("*",): ["everyone"],
        ("*.example.com",): ["everyone", "subdomains"],
        ("api.example.com",): ["everyone", "subdomains", "api-only"],
    }


def test_no_domain_is_in_two_virtual_hosts() -> None:
    # Envoy rejects a route config naming a domain twice; overlapping `hosts` sets must not cause it.
    found = vhosts(plain("x", hosts=("a.com", "b.com")), plain("y", Match(prefix="/y"), hosts=("A.com", "c.com")))
    domains = [d for group in found for d in group]
    assert sorted(domains) == ["a.com", "b.com", "c.com"]
    assert found[("a.com",)] == ["y", "x"]


def test_listener_without_routes_gets_an_empty_route_configuration() -> None:
    config = replace(sample_config(), routes=())
    assert [len(r.virtual_hosts) for r in route_configs(config).values()] == [0, 0]

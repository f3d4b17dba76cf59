"""ext_authz and ratelimit in the translation: the filter chain, per-route settings, HTTP/2 upstreams,
and ratelimit rules that match exactly what Envoy's actions send (checked with the real matcher
and the real Limiter)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import descriptor_pool, text_format

from controlplane import resources as urls
from controlplane.config.load import load_config, parse_sources
from controlplane.config.model import Config, RateLimitSettings, Route, RouteAuth, RouteRateLimit
from controlplane.translate import ext_authz_tenants, ratelimit_config, ratelimit_rules, translate
from pavilion.config_files import Source
from ratelimit.clock import ManualClock
from ratelimit.limiter import Code, Descriptor, Limiter
from ratelimit.memory_store import MemoryStore
from ratelimit.rules import Limit
from tests.controlplane.translate.sample import sample_config, translated

PROTECTED = Path(__file__).resolve().parents[3] / "examples" / "protected"
GOLDEN = Path(__file__).parent / "golden" / "protected.textproto"
EXT_AUTHZ = "envoy.filters.http.ext_authz"


def protected() -> Config:
    return load_config(PROTECTED)


def manager(config: Config) -> hcm_pb2.HttpConnectionManager:
    listener = translated(listener_pb2.Listener, config, "local")[0]
    result = hcm_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[0].typed_config.Unpack(result)
    return result


def routes(config: Config) -> dict[str, rc.Route]:
    table = translated(route_pb2.RouteConfiguration, config, "local")[0]
    return {r.name: r for vh in table.virtual_hosts for r in vh.routes}


def test_filter_chain_order() -> None:
    config = protected()
    assert [f.name for f in manager(config).http_filters] == [
        EXT_AUTHZ, "envoy.filters.http.ratelimit", "envoy.filters.http.router"]
    assert [f.name for f in manager(replace(config, ratelimit=None, routes=())).http_filters] == [
        EXT_AUTHZ, "envoy.filters.http.router"]
    assert [f.name for f in manager(replace(config, extauthz=None)).http_filters] == [
        "envoy.filters.http.ratelimit", "envoy.filters.http.router"]
    assert [f.name for f in manager(sample_config()).http_filters] == ["envoy.filters.http.router"]


def test_ext_authz_error_is_a_503_never_a_pass() -> None:
    authz = ext_authz_pb2.ExtAuthz()
    assert manager(protected()).http_filters[0].typed_config.Unpack(authz)
    assert authz.grpc_service.envoy_grpc.cluster_name == "extauthz"
    assert authz.grpc_service.timeout.ToMilliseconds() == 250
    assert authz.transport_api_version == 2  # V3
    assert authz.failure_mode_allow is False
    assert authz.status_on_error.code == 503
    assert [p.exact for p in authz.allowed_headers.patterns] == ["authorization", "dpop"]
    assert not authz.HasField("with_request_body")


def test_ratelimit_filter() -> None:
    limit = rate_limit_pb2.RateLimit()
    config = protected()
    assert manager(config).http_filters[1].typed_config.Unpack(limit)
    assert limit.domain == "pavilion"
    assert limit.timeout.ToMilliseconds() == 50
    assert limit.failure_mode_deny is False
    assert limit.rate_limit_service.grpc_service.envoy_grpc.cluster_name == "ratelimit"
    assert limit.rate_limit_service.transport_api_version == 2
    # The service adds RateLimit headers itself (ratelimit/headers.py): Envoy's would double them.
    assert limit.enable_x_ratelimit_headers == rate_limit_pb2.RateLimit.OFF
    # gRPC callers over the limit get RESOURCE_EXHAUSTED, which they do not retry at once (UNAVAILABLE they do).
    assert limit.rate_limited_as_resource_exhausted
    strict = replace(config, ratelimit=RateLimitSettings("ratelimit", "edge", 0.02, True))
    assert manager(strict).http_filters[1].typed_config.Unpack(limit)
    assert (limit.domain, limit.failure_mode_deny, limit.status_on_error.code) == ("edge", True, 503)


def per_route(route: rc.Route) -> ext_authz_pb2.ExtAuthzPerRoute:
    result = ext_authz_pb2.ExtAuthzPerRoute()
    assert route.typed_per_filter_config[EXT_AUTHZ].Unpack(result)
    return result


def test_per_route_ext_authz_settings() -> None:
    found = routes(protected())
    assert dict(per_route(found["accounts"]).check_settings.context_extensions) == {
        "tenant": "acme", "route": "accounts"}
    # No `auth`: any tenant, so no tenant list; ext_authz still checks.
    reports = per_route(found["reports"])
    assert dict(reports.check_settings.context_extensions) == {"route": "reports"} and not reports.disabled
    assert per_route(found["status"]).disabled
    two = replace(protected(), routes=tuple(
        replace(r, auth=RouteAuth(("acme", "beta"))) if r.name == "accounts" else r for r in protected().routes))
    assert per_route(routes(two)["accounts"]).check_settings.context_extensions["tenant"] == "acme,beta"


def extensions_of(auth: RouteAuth) -> dict[str, str]:
    config = protected()
    config = replace(config, routes=tuple(replace(r, auth=auth) if r.name == "accounts" else r for r in config.routes))
    found = per_route(routes(config)["accounts"])
    assert not found.disabled
    return dict(found.check_settings.context_extensions)


def test_scopes_and_claims_become_context_extensions() -> None:
    auth = RouteAuth(tenants=("acme", "beta"), scopes=("accounts:write", "accounts:read"),
                     claims=(("plan", ("gold",)), ("groups", ("ops", "admins")), ("名前", ("値", 'a"b\\c'))))
    assert extensions_of(auth) == {
        "route": "accounts",
        "tenant": "acme,beta",
        # Scopes in config order; claim names sorted, each claim's values in config order; compact, ASCII.
        "scopes": "accounts:write accounts:read",
        "claims": '{"groups":["ops","admins"],"plan":["gold"],"\\u540d\\u524d":["\\u5024","a\\"b\\\\c"]}',
    }


@pytest.mark.parametrize(("auth", "expected"), [
    (RouteAuth(scopes=("x",)), {"route": "accounts", "scopes": "x"}),
    (RouteAuth(claims=(("groups", ("admins",)),)), {"route": "accounts", "claims": '{"groups":["admins"]}'}),
    (RouteAuth(tenants=("acme",), claims=(("b", ("1",)), ("a", ("2",)))),
     {"route": "accounts", "tenant": "acme", "claims": '{"a":["2"],"b":["1"]}'}),
    (RouteAuth(tenants=("acme",)), {"route": "accounts", "tenant": "acme"}),
])
def test_a_key_is_sent_only_when_the_route_requires_it(auth: RouteAuth, expected: dict[str, str]) -> None:
    assert extensions_of(auth) == expected


def test_loaded_scopes_and_claims_reach_envoy() -> None:
    """From the YAML: `auth: {scopes: [x]}` with no tenants sends no `tenant` key; `auth: none` stays disabled."""
    text = (PROTECTED / "routes.yaml").read_text(encoding="utf-8")
    assert "auth: {tenants: [acme]}" in text
    config = parse_sources([
        Source(str(path), path.read_text(encoding="utf-8")) for path in sorted(PROTECTED.glob("*.yaml"))
        if path.name != "routes.yaml"] + [Source(str(PROTECTED / "routes.yaml"), text.replace(
            "auth: {tenants: [acme]}", "auth: {scopes: [x, 'y:z'], claims: {groups: [admins, ops], plan: [gold]}}"))])
    found = routes(config)
    assert dict(per_route(found["accounts"]).check_settings.context_extensions) == {
        "route": "accounts", "scopes": "x y:z", "claims": '{"groups":["admins","ops"],"plan":["gold"]}'}
    assert per_route(found["status"]).disabled
    assert not per_route(found["accounts"]).disabled
    # Only the public route drops identity headers; a scopes-only route is checked by ext_authz.
    assert list(found["accounts"].request_headers_to_remove) == []


def test_public_route_drops_identity_headers_a_client_sent() -> None:
    found = routes(protected())
    assert list(found["status"].request_headers_to_remove) == ["x-pavilion-identity", "x-pavilion-subject",
                                                               "x-pavilion-tenant", "x-user-id"]
    assert list(found["accounts"].request_headers_to_remove) == []


def test_public_route_drops_the_identity_header_named_in_extauthz() -> None:
    config = protected()
    assert config.extauthz is not None
    found = routes(replace(config, extauthz=replace(config.extauthz, identity_header="x-assertion")))
    assert list(found["status"].request_headers_to_remove) == ["x-assertion", "x-pavilion-subject",
                                                               "x-pavilion-tenant", "x-user-id"]


def test_without_extauthz_routes_have_no_ext_authz_settings() -> None:
    config = replace(protected(), extauthz=None, ratelimit=None)
    assert all(not r.typed_per_filter_config and not r.route.rate_limits for r in routes(config).values())


def test_grpc_and_http2_services_speak_http2() -> None:
    config = protected()
    config = replace(config, services=tuple(replace(s, protocol="http2") if s.name == "reports" else s
                                            for s in config.services))
    clusters = {c.name: c for c in translated(cluster_pb2.Cluster, config, "local")}
    for name, http2 in (("extauthz", True), ("ratelimit", True), ("reports", True), ("accounts", False)):
        options = http_protocol_options_pb2.HttpProtocolOptions()
        assert clusters[name].typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(options)
        assert options.explicit_http_config.HasField("http2_protocol_options") is http2, name
        assert options.explicit_http_config.HasField("http_protocol_options") is not http2, name


def test_rate_limit_actions() -> None:
    accounts = routes(protected())["accounts"].route.rate_limits
    assert len(accounts) == 2
    text = text_format.MessageToString(accounts[1], as_one_line=True)
    assert text == (
        'actions { generic_key { descriptor_value: "accounts" descriptor_key: "route" } } '
        'actions { generic_key { descriptor_value: "1" descriptor_key: "limit" } } '
        'actions { metadata { descriptor_key: "tenant" metadata_key { key: "envoy.filters.http.ext_authz" '
        'path { key: "tenant" } } } } '
        'actions { metadata { descriptor_key: "subject" metadata_key { key: "envoy.filters.http.ext_authz" '
        'path { key: "subject" } } } }')


def envoy_descriptor(limit: rc.RateLimit, metadata: dict[str, str], client: str) -> tuple[tuple[str, str], ...] | None:
    """What Envoy sends for one route rate limit: each action adds an entry; a missing metadata
    value takes the action's default_value, and without one (not skip_if_absent) means no descriptor at all."""
    entries: list[tuple[str, str]] = []
    for action in limit.actions:
        kind = action.WhichOneof("action_specifier")
        if kind == "generic_key":
            entries.append((action.generic_key.descriptor_key or "generic_key", action.generic_key.descriptor_value))
        elif kind == "remote_address":
            entries.append(("remote_address", client))
        elif kind == "metadata":
            key = action.metadata.metadata_key
            assert key.key == EXT_AUTHZ and action.metadata.source == rc.RateLimit.Action.MetaData.DYNAMIC
            assert not action.metadata.skip_if_absent
            value = metadata.get(key.path[0].key) or action.metadata.default_value or None
            if value is None:
                return None
            entries.append((action.metadata.descriptor_key, value))
        else:
            raise AssertionError(f"unexpected action {kind}")
    return tuple(entries)


def test_every_route_action_finds_its_own_rule() -> None:
    config = protected()
    lookup = ratelimit_config(config)
    by_route = {r.name: r for r in config.routes}
    checked = 0
    for name, message in routes(config).items():
        for index, action in enumerate(message.route.rate_limits):
            for tenant, subject, client in (("acme", "alice", "10.0.0.1"), ("beta", "bob", "10.0.0.2")):
                entries = envoy_descriptor(action, {"tenant": tenant, "subject": subject}, client)
                assert entries is not None
                rule = lookup.match("pavilion", entries)
                assert rule is not None, (name, entries)
                assert rule.key_path[:2] == (("route", name), ("limit", str(index)))
                wanted = by_route[name].rate_limits[index]
                assert rule.limits == (Limit(wanted.unit, wanted.requests, wanted.unit_multiplier, wanted.algorithm,
                                             wanted.burst),)
                assert (rule.shadow_mode, rule.on_backend_error) == (wanted.shadow_mode, wanted.on_backend_error)
                checked += 1
    assert checked == 8
    # Nothing else matches: another route's name or an index past the end finds no rule.
    assert lookup.match("pavilion", (("route", "nope"), ("limit", "0"), ("tenant", "acme"))) is None
    assert lookup.match("pavilion", (("route", "accounts"), ("limit", "2"), ("tenant", "acme"))) is None


def test_no_tenant_metadata_means_no_descriptor() -> None:
    limit = routes(protected())["accounts"].route.rate_limits[0]
    assert envoy_descriptor(limit, {}, "10.0.0.1") is None


def test_rules_are_pure_and_ordered_by_route_name() -> None:
    config = protected()
    rules = ratelimit_rules(config)
    assert rules == ratelimit_rules(load_config(PROTECTED))
    assert [(r.key_path[0][1], r.key_path[1][1]) for r in rules] == [
        ("accounts", "0"), ("accounts", "1"), ("reports", "0"), ("status", "0")]
    assert rules[1].key_path == (("route", "accounts"), ("limit", "1"), ("tenant", None), ("subject", None))
    assert rules[3].key_path == (("route", "status"), ("limit", "0"), ("remote_address", None))
    assert ratelimit_rules(replace(config, ratelimit=None)) == ()
    assert ratelimit_config(replace(config, routes=())).has_domain("pavilion")


def test_limiter_keeps_a_counter_per_tenant_and_per_subject() -> None:
    config = protected()
    accounts = next(r for r in config.routes if r.name == "accounts")
    tight = replace(config, routes=(replace(accounts, rate_limits=(
        RouteRateLimit(("tenant",), "minute", 3),
        RouteRateLimit(("tenant", "subject"), "minute", 2),
    )),))
    actions = routes(tight)["accounts"].route.rate_limits
    limiter = Limiter(ratelimit_config(tight), MemoryStore(ManualClock()), clock=ManualClock())

    async def ask(tenant: str, subject: str) -> Code:
        descriptors = []
        for action in actions:
            entries = envoy_descriptor(action, {"tenant": tenant, "subject": subject}, "10.0.0.1")
            assert entries is not None
            descriptors.append(Descriptor(entries))
        return (await limiter.should_rate_limit("pavilion", descriptors)).code

    async def run() -> list[Code]:
        return [await ask(t, s) for t, s in (
            ("acme", "alice"), ("acme", "alice"),  # alice's own limit is 2
            ("acme", "bob"),                       # bob counts apart; acme's 3rd request
            ("acme", "carol"),                     # acme is over its 3, though carol is new
            ("beta", "alice"), ("beta", "alice"),  # beta, and beta's alice, count apart
            ("beta", "alice"),                     # beta's alice is over her 2
        )]

    OK, OVER = Code.OK, Code.OVER_LIMIT
    assert asyncio.run(run()) == [OK, OK, OK, OVER, OK, OK, OVER]


def test_routes_without_rate_limits_send_nothing() -> None:
    config = protected()
    bare = replace(config, routes=tuple(replace(r, rate_limits=()) for r in config.routes))
    assert all(not r.route.rate_limits for r in routes(bare).values())
    assert ratelimit_rules(bare) == ()


def render(config: Config) -> str:
    resources = translate(config, "local")
    parts = []
    for type_url in urls.ADS_ORDER:
        for message in resources[type_url]:
            text = text_format.MessageToString(message, descriptor_pool=descriptor_pool.Default())
            parts.append(f"# {type_url}\n{text}")
    return "\n".join(parts)


def test_protected_example_matches_golden() -> None:
    text = render(protected())
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert GOLDEN.exists(), "run with UPDATE_GOLDEN=1 to create it"
    assert text == GOLDEN.read_text(), "translation differs from protected.textproto; if intended, UPDATE_GOLDEN=1"


@pytest.mark.parametrize("route", ["accounts", "reports", "status"])
def test_route_source_is_kept_on_rules(route: str) -> None:
    config = protected()
    source = next(r.source for r in config.routes if r.name == route)
    assert {r.source for r in ratelimit_rules(config) if r.key_path[0] == ("route", route)} == {source}


def test_route_model_names_are_unchanged() -> None:
    # Other helpers code against these names.
    assert Route.__dataclass_fields__.keys() >= {"auth", "rate_limits"}


def test_a_limit_without_per_is_one_counter_for_the_route() -> None:
    config = protected()
    status = next(r for r in config.routes if r.name == "status")
    whole = replace(config, routes=(replace(status, rate_limits=(RouteRateLimit((), "second", 1),)),))
    action = routes(whole)["status"].route.rate_limits[0]
    first = envoy_descriptor(action, {}, "10.0.0.1")
    assert first == (("route", "status"), ("limit", "0"))
    assert envoy_descriptor(action, {}, "10.0.0.2") == first  # every client shares it
    rule = ratelimit_config(whole).match("pavilion", first)
    assert rule is not None and rule.limits[0].requests_per_unit == 1


def test_ext_authz_tenants_by_id_only_with_extauthz() -> None:
    config = protected()
    swapped = replace(config, tenants=tuple(reversed(config.tenants)))
    assert [t.id for t in ext_authz_tenants(swapped)] == ["acme", "beta"]
    assert ext_authz_tenants(swapped) == ext_authz_tenants(config)
    assert ext_authz_tenants(replace(config, extauthz=None)) == ()

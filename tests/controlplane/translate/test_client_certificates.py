"""Route `auth.client_certificates` → Envoy: the RBAC filter after CORS and before ext_authz and
ratelimit, only on listeners with such a route; an RBACPerRoute allowing only certificates with one of
the route's SANs (URI exact or prefix, DNS by a case-insensitive regex); ext_authz off with `token: false`."""

from __future__ import annotations

import re
from dataclasses import replace

from envoy.config.listener.v3 import listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.rbac.principals.mtls_authenticated.v3 import mtls_authenticated_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2

from controlplane.config.model import (
    Backend,
    ClientCertificate,
    Config,
    Cors,
    Endpoint,
    ExtAuthzSettings,
    Listener,
    ListenerTls,
    Match,
    RateLimitSettings,
    Route,
    RouteAuth,
    Service,
)
from controlplane.translate._rbac import san_matcher
from tests.controlplane.translate.sample import translated

BILLING = ClientCertificate("uri", "spiffe://pavilion.example/ns/partners/sa/billing")
OPS = ClientCertificate("uri", "spiffe://pavilion.example/ns/ops/", wildcard=True)
HOST = ClientCertificate("dns", "billing.partners.example")
ANY_PARTNER = ClientCertificate("dns", "partners.example", wildcard=True)
MTLS = ListenerTls(b"chain", b"key", client_ca=b"ca")

PARTNERS = Route("partners", "public", Match(prefix="/v1/partners"), (Backend("accounts", 100),),
                 auth=RouteAuth(client_certificates=(BILLING, OPS, HOST, ANY_PARTNER), token=False))
BOTH = Route("both", "public", Match(prefix="/v1/both"), (Backend("accounts", 100),),
             auth=RouteAuth(tenants=("acme",), client_certificates=(BILLING,)))
OPEN = Route("open", "public", Match(prefix="/"), (Backend("accounts", 100),))
OTHER = Route("other", "internal", Match(prefix="/"), (Backend("accounts", 100),))
RBAC = "envoy.filters.http.rbac"


def config(*routes: Route, policy: bool = True) -> Config:
    endpoint = (Endpoint("127.0.0.1", 9001, "eu-west"),)
    services = (Service("accounts", endpoint), Service("extauthz", endpoint, protocol="grpc"))
    listeners = (Listener("public", "127.0.0.1", 10443, tls=MTLS), Listener("internal", "127.0.0.1", 10081, tls=MTLS))
    return Config(("eu-west",), listeners, services, routes,
                  extauthz=ExtAuthzSettings("extauthz") if policy else None,
                  ratelimit=RateLimitSettings("extauthz") if policy else None)


def filters(cfg: Config, name: str = "public") -> list[str]:
    (item,) = [x for x in translated(listener_pb2.Listener, cfg, "eu-west") if x.name == name]
    manager = hcm_pb2.HttpConnectionManager()
    assert item.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return [f.name for f in manager.http_filters]


def listener_rbac(cfg: Config) -> http_rbac_pb2.RBAC:
    (item,) = [x for x in translated(listener_pb2.Listener, cfg, "eu-west") if x.name == "public"]
    manager = hcm_pb2.HttpConnectionManager()
    assert item.filter_chains[0].filters[0].typed_config.Unpack(manager)
    (found,) = [f for f in manager.http_filters if f.name == RBAC]
    config_ = http_rbac_pb2.RBAC()
    assert found.typed_config.Unpack(config_)
    return config_


def routes_of(cfg: Config) -> dict[str, rc.Route]:
    (table,) = [t for t in translated(route_pb2.RouteConfiguration, cfg, "eu-west") if t.name == "public"]
    return {r.name: r for host in table.virtual_hosts for r in host.routes}


def per_route(message: rc.Route) -> http_rbac_pb2.RBACPerRoute:
    found = http_rbac_pb2.RBACPerRoute()
    assert message.typed_per_filter_config[RBAC].Unpack(found)
    return found


def matchers(policy: rbac_pb2.Policy) -> list[common_pb2.SubjectAltNameMatcher]:
    found = []
    for principal in policy.principals:
        assert principal.custom.name == "envoy.rbac.principals.mtls_authenticated"
        config_ = mtls_authenticated_pb2.Config()
        assert principal.custom.typed_config.Unpack(config_)
        assert not config_.any_validated_client_certificate
        found.append(config_.san_matcher)
    return found


def test_rbac_comes_after_cors_and_before_ext_authz_and_ratelimit() -> None:
    cors = replace(OPEN, cors=Cors(exact_origins=("https://app.example.com",)))
    assert filters(config(PARTNERS, cors, OTHER)) == [
        "envoy.filters.http.cors", RBAC, "envoy.filters.http.ext_authz", "envoy.filters.http.ratelimit",
        "envoy.filters.http.router"]
    # Without ext_authz and ratelimit sections, the certificate check stays.
    assert filters(config(PARTNERS, policy=False)) == [RBAC, "envoy.filters.http.router"]


def test_only_listeners_with_such_a_route_get_the_filter() -> None:
    with_certificates = config(PARTNERS, OPEN, OTHER)
    without = config(OPEN, OTHER)
    assert RBAC not in filters(with_certificates, "internal")
    assert filters(without) == ["envoy.filters.http.ext_authz", "envoy.filters.http.ratelimit",
                                "envoy.filters.http.router"]
    # Every other resource is byte for byte what it was without the route.
    others = [m for m in translated(listener_pb2.Listener, with_certificates, "eu-west") if m.name == "internal"]
    assert others == [m for m in translated(listener_pb2.Listener, without, "eu-west") if m.name == "internal"]
    assert routes_of(with_certificates)["open"] == routes_of(without)["open"]


def test_the_listener_filter_enforces_nothing_by_itself() -> None:
    # No rules: a route without an RBACPerRoute passes whatever certificate it comes with.
    found = listener_rbac(config(PARTNERS, OPEN))
    assert not found.HasField("rules") and not found.HasField("matcher") and not found.HasField("shadow_rules")
    assert RBAC not in routes_of(config(PARTNERS, OPEN))["open"].typed_per_filter_config


def test_a_route_allows_only_certificates_with_its_sans() -> None:
    rules = per_route(routes_of(config(PARTNERS))["partners"]).rbac.rules
    assert rules.action == rbac_pb2.RBAC.ALLOW
    ((name, policy),) = rules.policies.items()
    assert name == "client-certificates"
    assert [p.any for p in policy.permissions] == [True]
    san = common_pb2.SubjectAltNameMatcher
    assert [(m.san_type, m.matcher.WhichOneof("match_pattern")) for m in matchers(policy)] == [
        (san.URI, "exact"), (san.URI, "prefix"), (san.DNS, "safe_regex"), (san.DNS, "safe_regex")]
    uri, prefix = matchers(policy)[:2]
    assert uri.matcher.exact == "spiffe://pavilion.example/ns/partners/sa/billing"
    assert prefix.matcher.prefix == "spiffe://pavilion.example/ns/ops/"


def _dns_matches(entry: ClientCertificate, san: str) -> bool:
    # Envoy's safe_regex is RE2 and matches the whole value; Python's re agrees on these patterns.
    return re.fullmatch(san_matcher(entry).matcher.safe_regex.regex, san) is not None


def test_dns_names_match_one_label_exactly_and_never_a_certificate_wildcard() -> None:
    assert _dns_matches(HOST, "billing.partners.example") and _dns_matches(HOST, "Billing.Partners.Example")
    for other in ("billingXpartners.example", "x.billing.partners.example", "*.partners.example",
                  "billing.partners.example.evil"):
        assert not _dns_matches(HOST, other), other
    assert _dns_matches(ANY_PARTNER, "billing.partners.example")
    for other in ("partners.example", "a.b.partners.example", "*.partners.example", "billing.partnersXexample"):
        assert not _dns_matches(ANY_PARTNER, other), other


def test_token_false_turns_ext_authz_off_and_removes_identity_headers() -> None:
    message = routes_of(config(PARTNERS, BOTH))["partners"]
    settings = ext_authz_pb2.ExtAuthzPerRoute()
    assert message.typed_per_filter_config["envoy.filters.http.ext_authz"].Unpack(settings)
    assert settings.disabled
    # No ext_authz to overwrite them: a client's own x-pavilion-tenant must not reach the service.
    assert "x-pavilion-tenant" in message.request_headers_to_remove


def test_certificate_and_token_both_apply() -> None:
    message = routes_of(config(PARTNERS, BOTH))["both"]
    settings = ext_authz_pb2.ExtAuthzPerRoute()
    assert message.typed_per_filter_config["envoy.filters.http.ext_authz"].Unpack(settings)
    assert not settings.disabled
    assert dict(settings.check_settings.context_extensions) == {"route": "both", "tenant": "acme"}
    assert [m.matcher.exact for m in matchers(per_route(message).rbac.rules.policies["client-certificates"])] == [
        BILLING.name]
    assert "x-pavilion-tenant" not in message.request_headers_to_remove

"""`allow_networks` → Envoy's one RBAC filter: `remote_ip` principals (the client Envoy detected, never the TCP
peer's `direct_remote_ip`); a listener's networks as the filter's own policy, and in every route policy of
that listener too (an RBACPerRoute replaces the filter's); all parts needed at once with client
certificates; the filter after CORS and before ext_authz and ratelimit."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_network

from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc

from controlplane.config.model import (
    Backend,
    ClientCertificate,
    Config,
    Cors,
    Endpoint,
    ExtAuthzSettings,
    IPNetwork,
    Listener,
    ListenerTls,
    Match,
    RateLimitSettings,
    Route,
    RouteAuth,
    Service,
)
from controlplane.translate._rbac import MTLS_PRINCIPAL
from tests.controlplane.translate.test_client_certificates import filters, listener_rbac, per_route, routes_of

RBAC = "envoy.filters.http.rbac"
BILLING = ClientCertificate("uri", "spiffe://pavilion.example/ns/partners/sa/billing")
OFFICE = (ip_network("192.0.2.0/24"), ip_network("2001:db8::/32"))
VPN = (ip_network("10.8.0.0/16"),)
CLUSTER = (ip_network("10.0.0.0/8"), ip_network("fd00::/8"))


def route(name: str, prefix: str, networks: tuple[IPNetwork, ...] = (), **kwargs: object) -> Route:
    return Route(name, "public", Match(prefix=prefix), (Backend("accounts", 100),), allow_networks=networks,
                 **kwargs)  # type: ignore[arg-type]


def config(*routes: Route, listener_networks: tuple[IPNetwork, ...] = ()) -> Config:
    endpoint = (Endpoint("127.0.0.1", 9001, "eu-west"),)
    services = (Service("accounts", endpoint), Service("extauthz", endpoint, protocol="grpc"))
    listeners = (Listener("public", "127.0.0.1", 10443, tls=ListenerTls(b"chain", b"key", client_ca=b"ca"),
                          allow_networks=listener_networks),
                 Listener("other", "127.0.0.1", 10081))
    return Config(("eu-west",), listeners, services, routes, extauthz=ExtAuthzSettings("extauthz"),
                  ratelimit=RateLimitSettings("extauthz"))


def rules(message: rc.Route) -> rbac_pb2.RBAC:
    return per_route(message).rbac.rules


def cidrs(principal: rbac_pb2.Principal) -> list[str]:
    """The networks of a remote_ip principal, or of an or_ids of them."""
    ids = principal.or_ids.ids if principal.HasField("or_ids") else [principal]
    assert all(p.WhichOneof("identifier") == "remote_ip" for p in ids), ids
    return [f"{p.remote_ip.address_prefix}/{p.remote_ip.prefix_len.value}" for p in ids]


def only_policy(found: rbac_pb2.RBAC) -> tuple[str, rbac_pb2.Policy]:
    assert found.action == rbac_pb2.RBAC.ALLOW
    ((name, policy),) = found.policies.items()
    assert [p.any for p in policy.permissions] == [True]
    return name, policy


def test_a_route_admits_only_clients_of_its_networks_by_the_detected_address() -> None:
    name, policy = only_policy(rules(routes_of(config(route("admin", "/v1/admin", OFFICE + VPN)))["admin"]))
    assert name == "allow-networks"
    # The policy's principals are alternatives: any one network admits.
    assert [cidrs(p) for p in policy.principals] == [["192.0.2.0/24"], ["2001:db8::/32"], ["10.8.0.0/16"]]
    assert "direct_remote_ip" not in str(policy)


def test_the_filter_is_placed_once_after_cors_before_ext_authz_and_ratelimit() -> None:
    cfg = config(route("admin", "/v1/admin", VPN, cors=Cors(exact_origins=("https://app.example.com",))),
                 route("partners", "/v1/partners", VPN, auth=RouteAuth(client_certificates=(BILLING,), token=False)))
    names = filters(cfg)
    assert names.count(RBAC) == 1
    assert names.index("envoy.filters.http.cors") < names.index(RBAC) < names.index("envoy.filters.http.ext_authz")
    assert names.index(RBAC) < names.index("envoy.filters.http.ratelimit")
    # A listener with no networks and no such route keeps no RBAC filter; nor does a route without them get a policy.
    assert RBAC not in filters(config(route("open", "/")), "other")
    assert RBAC not in filters(config(route("open", "/")))
    built = routes_of(config(route("admin", "/v1/admin", VPN), route("open", "/")))
    assert RBAC not in built["open"].typed_per_filter_config


def test_networks_and_client_certificates_are_both_needed() -> None:
    partners = route("partners", "/v1/partners", VPN, auth=RouteAuth(client_certificates=(BILLING,), token=False))
    name, policy = only_policy(rules(routes_of(config(partners))["partners"]))
    assert name == "allow-networks+client-certificates"
    ((both,),) = [policy.principals]
    networks, certificate = both.and_ids.ids
    assert cidrs(networks) == ["10.8.0.0/16"]
    assert certificate.custom.name == MTLS_PRINCIPAL


def test_a_listeners_networks_hold_for_every_request_and_inside_every_route_policy() -> None:
    cfg = config(route("open", "/"), route("admin", "/v1/admin", VPN),
                 route("partners", "/v1/partners", auth=RouteAuth(client_certificates=(BILLING,), token=False)),
                 listener_networks=CLUSTER)
    # The filter's own policy: routes without one of their own, and requests no route takes.
    name, policy = only_policy(listener_rbac(cfg).rules)
    assert name == "listener-networks"
    assert [cidrs(p) for p in policy.principals] == [["10.0.0.0/8"], ["fd00::/8"]]
    built = routes_of(cfg)
    assert RBAC not in built["open"].typed_per_filter_config
    # A route's policy replaces the filter's in Envoy: it carries the listener's networks too, so it can only narrow.
    name, policy = only_policy(rules(built["admin"]))
    assert name == "listener-networks+allow-networks"
    ((both,),) = [policy.principals]
    assert [cidrs(p) for p in both.and_ids.ids] == [["10.0.0.0/8", "fd00::/8"], ["10.8.0.0/16"]]
    name, policy = only_policy(rules(built["partners"]))
    assert name == "listener-networks+client-certificates"
    ((both,),) = [policy.principals]
    listener_part, certificate = both.and_ids.ids
    assert cidrs(listener_part) == ["10.0.0.0/8", "fd00::/8"]
    assert certificate.custom.name == MTLS_PRINCIPAL


def test_a_certificate_route_alone_is_as_before() -> None:
    """Without networks a client certificate route keeps its own policy name and principal list."""
    partners = route("partners", "/v1/partners", auth=RouteAuth(client_certificates=(BILLING,), token=False))
    name, policy = only_policy(rules(routes_of(config(partners))["partners"]))
    assert name == "client-certificates"
    assert [p.custom.name for p in policy.principals] == [MTLS_PRINCIPAL]
    # Its listener's filter enforces nothing by itself.
    assert not listener_rbac(config(partners)).HasField("rules")


def test_the_http3_twin_checks_the_same_networks() -> None:
    cfg = config(route("open", "/"), listener_networks=VPN)
    public = cfg.listeners[0]
    assert public.tls is not None
    quic = replace(cfg, listeners=(replace(public, tls=replace(public.tls, http3=True)),))
    assert RBAC in filters(quic, "public-h3")

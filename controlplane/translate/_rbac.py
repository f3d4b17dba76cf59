"""Route `auth.client_certificates` and `allow_networks` (listener and route) → Envoy's RBAC HTTP filter
and its per-route policy.

A listener gets the filter only when it has `allow_networks` or one of its routes names client
certificates or networks, so every other listener stays as it was. Without listener networks the
filter's own config has no rules: Envoy then enforces nothing, and a route without a per-route policy
is not affected. A route with `client_certificates` gets an
RBACPerRoute that allows only a request whose connection carries a validated client certificate
with one of the SANs named (the `envoy.rbac.principals.mtls_authenticated` principal). Anything
else is answered 403 by Envoy, with the body `RBAC: access denied`.

Why that principal, and not `authenticated.principal_name`: the latter matches its string against
every URI SAN, then every DNS SAN, then the subject, so a DNS name written in a route would also
admit a certificate carrying it as a URI, and a certificate with no SAN at all by its subject's
text. mtls_authenticated compares one SAN type (URI or DNS), on certificates the listener verified.
DNS names are compared by a regex, not `exact`: an exact DNS match in Envoy lets a certificate's
wildcard SAN `*.partners.example` stand for `billing.partners.example`, and one client certificate
with a wildcard would pass for every named client under it.

`allow_networks` (of the listener, of the route) uses the same filter: the `remote_ip` principal, the
client address Envoy detected (the downstream remote address, which `client_address` sets from a PROXY
header or trusted X-Forwarded-For entries), never `direct_remote_ip`, the TCP peer (a load balancer).
A listener's networks are the filter's own policy, so they hold for every request of it, those of no
route (404) too. A route's RBACPerRoute replaces that policy, not adds to it: so a route's policy holds
its listener's networks as well, and requires each part at once (`and_ids`): the listener's networks,
the route's, its client certificates. Refused requests show `rbac_access_denied_matched_policy[none]`
in the access log's `details`.

Filter order (see `_listeners.http_filters`): after CORS, so preflights are still answered, and
before ext_authz and ratelimit, so a refused certificate or network costs no token check and no counter.
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, extension_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.rbac.principals.mtls_authenticated.v3 import mtls_authenticated_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from controlplane.config.model import ClientCertificate, Config, IPNetwork, Listener, Route
from controlplane.translate._protos import packed, uint32

__all__ = ["MTLS_PRINCIPAL", "RBAC_FILTER", "needs_rbac", "needs_route_rbac", "principal", "rbac_filter",
           "rbac_per_route"]

RBAC_FILTER = "envoy.filters.http.rbac"
MTLS_PRINCIPAL = "envoy.rbac.principals.mtls_authenticated"
POLICY = "client-certificates"
LISTENER_NETWORKS = "listener-networks"
ROUTE_NETWORKS = "allow-networks"
_SAN = common_pb2.SubjectAltNameMatcher


def needs_rbac(item: Listener, config: Config) -> bool:
    return bool(item.allow_networks) or any(needs_route_rbac(r) for r in config.routes if r.listener == item.name)


def needs_route_rbac(route: Route) -> bool:
    """Whether the route gets its own RBACPerRoute (else its listener's policy, if any, applies)."""
    return bool(route.allow_networks) or (route.auth is not None and bool(route.auth.client_certificates))


def rbac_filter(item: Listener) -> hcm_pb2.HttpFilter:
    """The listener's networks, or no rules: then it enforces nothing by itself, and only routes with an
    RBACPerRoute are checked."""
    config = http_rbac_pb2.RBAC()
    if item.allow_networks:
        config.rules.CopyFrom(_allow({LISTENER_NETWORKS: [remote_ip(n) for n in item.allow_networks]}))
    return hcm_pb2.HttpFilter(name=RBAC_FILTER, typed_config=packed(config))


def rbac_per_route(route: Route, listener: Listener) -> http_rbac_pb2.RBACPerRoute:
    """Allow a request only from the listener's and the route's networks (when given), and only with a client
    certificate carrying one of the route's SANs (when given)."""
    certificates = route.auth.client_certificates if route.auth is not None else ()
    parts = {name: principals for name, principals in (
        (LISTENER_NETWORKS, [remote_ip(n) for n in listener.allow_networks]),
        (ROUTE_NETWORKS, [remote_ip(n) for n in route.allow_networks]),
        (POLICY, [principal(entry) for entry in certificates]),
    ) if principals}
    return http_rbac_pb2.RBACPerRoute(rbac=http_rbac_pb2.RBAC(rules=_allow(parts)))


def _allow(parts: dict[str, list[rbac_pb2.Principal]]) -> rbac_pb2.RBAC:
    """One ALLOW policy, named after its parts, that needs one principal of each part. A single part keeps
    its principals as the policy's list (any one of them allows)."""
    if len(parts) == 1:
        [principals] = parts.values()
    else:
        principals = [rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=[_one_of(p) for p in parts.values()]))]
    policy = rbac_pb2.Policy(permissions=[rbac_pb2.Permission(any=True)], principals=principals)
    return rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies={"+".join(parts): policy})


def _one_of(principals: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    if len(principals) == 1:
        return principals[0]
    return rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=principals))


def remote_ip(network: IPNetwork) -> rbac_pb2.Principal:
    """The client Envoy detected (after the PROXY protocol and trusted X-Forwarded-For), not the TCP peer."""
    return rbac_pb2.Principal(remote_ip=address_pb2.CidrRange(address_prefix=str(network.network_address),
                                                              prefix_len=uint32(network.prefixlen)))


def principal(entry: ClientCertificate) -> rbac_pb2.Principal:
    config = mtls_authenticated_pb2.Config(san_matcher=san_matcher(entry))
    return rbac_pb2.Principal(custom=extension_pb2.TypedExtensionConfig(name=MTLS_PRINCIPAL,
                                                                        typed_config=packed(config)))


def san_matcher(entry: ClientCertificate) -> common_pb2.SubjectAltNameMatcher:
    if entry.san == "uri":
        matcher = (string_pb2.StringMatcher(prefix=entry.name) if entry.wildcard
                   else string_pb2.StringMatcher(exact=entry.name))
        return _SAN(san_type=_SAN.URI, matcher=matcher)
    # DNS names are case-insensitive; a label holds no '.', and never '*' (a certificate's wildcard).
    # The name holds only letters, digits, '-' and '.' (checked at load): only the dots need escaping.
    pattern = "(?i)" + (r"[^.*]+\." if entry.wildcard else "") + entry.name.replace(".", r"\.")
    return _SAN(san_type=_SAN.DNS, matcher=string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern)))

"""Route `auth.client_certificates` → Envoy's RBAC HTTP filter and its per-route policy.

A listener gets the filter only when one of its routes names client certificates, so every other
listener stays as it was. The filter's own config has no rules: Envoy then enforces nothing, and a
route without a per-route policy is not affected. A route with `client_certificates` gets an
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

Filter order (see `_listeners.http_filters`): after CORS, so preflights are still answered, and
before ext_authz and ratelimit, so a refused certificate costs no token check and no counter.
"""

from __future__ import annotations

from envoy.config.core.v3 import extension_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.rbac.principals.mtls_authenticated.v3 import mtls_authenticated_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from controlplane.config.model import ClientCertificate, Config, Listener, Route
from controlplane.translate._protos import packed

__all__ = ["MTLS_PRINCIPAL", "RBAC_FILTER", "needs_rbac", "principal", "rbac_filter", "rbac_per_route"]

RBAC_FILTER = "envoy.filters.http.rbac"
MTLS_PRINCIPAL = "envoy.rbac.principals.mtls_authenticated"
POLICY = "client-certificates"
_SAN = common_pb2.SubjectAltNameMatcher


def needs_rbac(item: Listener, config: Config) -> bool:
    return any(r.auth is not None and r.auth.client_certificates for r in config.routes if r.listener == item.name)


def rbac_filter() -> hcm_pb2.HttpFilter:
    """No rules: enforces nothing by itself; only routes with an RBACPerRoute are checked."""
    return hcm_pb2.HttpFilter(name=RBAC_FILTER, typed_config=packed(http_rbac_pb2.RBAC()))


def rbac_per_route(route: Route) -> http_rbac_pb2.RBACPerRoute:
    """Allow a request only when its client certificate carries one of the route's SANs."""
    certificates = route.auth.client_certificates if route.auth is not None else ()
    policy = rbac_pb2.Policy(permissions=[rbac_pb2.Permission(any=True)],
                             principals=[principal(entry) for entry in certificates])
    rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies={POLICY: policy})
    return http_rbac_pb2.RBACPerRoute(rbac=http_rbac_pb2.RBAC(rules=rules))


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

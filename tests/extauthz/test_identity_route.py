"""The route YAML side of identity assertions: `auth: {identity: {audience}}` becomes ext_authz's
`identity_audience` context extension; a bad audience or one with `token: false` is refused at its line;
public routes drop a client's `x-pavilion-identity` (ext_authz never sees them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2

from controlplane.config.load import parse_sources
from controlplane.config.model import Config
from pavilion.config_files import Source
from pavilion.errors import ConfigError
from tests.controlplane.translate.sample import translated

PROTECTED = Path(__file__).resolve().parents[2] / "examples" / "protected"
EXT_AUTHZ = "envoy.filters.http.ext_authz"


def config_with(routes_yaml: str) -> Config:
    sources = [Source(str(path), path.read_text(encoding="utf-8")) for path in sorted(PROTECTED.glob("*.yaml"))
               if path.name != "routes.yaml"]
    return parse_sources([*sources, Source(str(PROTECTED / "routes.yaml"), routes_yaml)])


ROUTES = """services:
  - name: accounts
    endpoints: [{address: 127.0.0.1:9001, region: local}]
routes:
  - name: accounts
    match: {prefix: /v1/accounts}
    service: accounts
    auth: AUTH
  - name: status
    match: {path: /status}
    service: accounts
    auth: none
"""


def routes(config: Config) -> dict[str, rc.Route]:
    table = translated(route_pb2.RouteConfiguration, config, "local")[0]
    return {r.name: r for vh in table.virtual_hosts for r in vh.routes}


def extensions(route: rc.Route) -> dict[str, str]:
    settings = ext_authz_pb2.ExtAuthzPerRoute()
    assert route.typed_per_filter_config[EXT_AUTHZ].Unpack(settings)
    return dict(settings.check_settings.context_extensions)


@pytest.mark.parametrize(("auth", "expected"), [
    ("{scopes: [accounts:read], identity: {audience: accounts-api}}",
     {"route": "accounts", "scopes": "accounts:read", "identity_audience": "accounts-api"}),
    ("{tenants: [acme], identity: {audience: 'spiffe://acme.test/accounts'}}",
     {"route": "accounts", "tenant": "acme", "identity_audience": "spiffe://acme.test/accounts"}),
    ("{tenants: [acme]}", {"route": "accounts", "tenant": "acme"}),
])
def test_identity_becomes_the_identity_audience_extension(auth: str, expected: dict[str, str]) -> None:
    found = routes(config_with(ROUTES.replace("AUTH", auth)))
    assert extensions(found["accounts"]) == expected
    assert "x-pavilion-identity" in found["status"].request_headers_to_remove  # public: a client's own is dropped
    assert "x-pavilion-identity" not in found["accounts"].request_headers_to_remove


@pytest.mark.parametrize(("auth", "message"), [
    ("{tenants: [acme], identity: {audience: ' spaced'}}", "auth.identity.audience"),
    ("{tenants: [acme], identity: {}}", "audience"),
    ("{tenants: [acme], identity: {audience: x, issuer: y}}", "auth.identity.issuer"),
    ("{identity: {audience: x}}", "give at least one of tenants"),
    ("{client_certificates: ['spiffe://a/b'], token: false, identity: {audience: x}}", "auth.identity"),
])
def test_a_bad_identity_is_refused_at_its_line(auth: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_with(ROUTES.replace("AUTH", auth))
    assert message in str(caught.value) and "routes.yaml:8:" in str(caught.value)

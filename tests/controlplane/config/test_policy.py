"""Tenants, `extauthz:`, `ratelimit:`, route `auth` and `rate_limits`: what loading yields."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from controlplane.config import model
from controlplane.config.load import Source, load_config, parse_sources
from controlplane.config.schema import json_schema
from controlplane.config.tenants import TENANT_SCHEMA
from extauthz import config as extauthz_config
from extauthz.tenant import JwksSource
from pavilion.errors import ConfigErrors
from tests.controlplane.config.test_schema import load_yaml

ROOT = Path(__file__).resolve().parents[3]
PROTECTED = ROOT / "examples" / "protected"

SETUP = """
regions: [local]
listeners: [{name: public, address: 127.0.0.1, port: 10080}]
services:
  - {name: authz, protocol: grpc, endpoints: [{address: 127.0.0.1:9191, region: local}]}
  - {name: limits, protocol: grpc, endpoints: [{address: 127.0.0.1:8081, region: local}]}
  - {name: app, endpoints: [{address: 127.0.0.1:9001, region: local}]}
extauthz: {service: authz}
ratelimit: {service: limits}
"""

TENANT = """
tenants:
  - id: acme
    issuer: https://idp.acme.test
    audiences: [api]
    jwks: {file: keys/acme.json, refresh: 10m}
    clock_skew: 5s
    claims_to_headers: {sub: x-user-id}
"""


def load(*texts: str) -> model.Config:
    return parse_sources([Source(f"/conf/f{i}.yaml", text) for i, text in enumerate(texts)])


def test_protected_example() -> None:
    config = load_config(PROTECTED)
    assert config.extauthz == model.ExtAuthzSettings("extauthz", 0.25)
    assert config.ratelimit == model.RateLimitSettings("ratelimit", "pavilion", 0.05, False)
    assert [t.id for t in config.tenants] == ["acme", "beta"]
    assert config.service("extauthz").protocol == "grpc"
    assert config.service("accounts").protocol == "http1"
    routes = {r.name: r for r in config.routes}
    assert routes["accounts"].auth == model.RouteAuth(("acme",))
    assert routes["accounts"].rate_limits == (
        model.RouteRateLimit(("tenant",), "minute", 600),
        model.RouteRateLimit(("tenant", "subject"), "second", 5, algorithm="token_bucket", burst=10),
    )
    assert routes["reports"].auth is None
    assert routes["reports"].rate_limits[0].shadow_mode
    assert routes["status"].auth == model.RouteAuth(public=True)
    assert routes["status"].rate_limits == (model.RouteRateLimit(("client_ip",), "second", 20),)


@pytest.mark.parametrize("path", sorted(PROTECTED.glob("*.yaml")), ids=lambda p: p.name)
def test_protected_example_passes_the_schema(path: Path) -> None:
    jsonschema.Draft202012Validator(json_schema()).validate(load_yaml(path))


def test_tenant_is_read_by_the_ext_authz_parser() -> None:
    """One parser: the same entry gives the same Tenant in the route YAML and in ext_authz's file."""
    config = load(SETUP, TENANT)
    own = extauthz_config.parse_tenants(TENANT, "/conf/f1.yaml")
    assert config.tenants == own
    tenant = config.tenants[0]
    assert tenant.jwks == JwksSource(file="/conf/keys/acme.json", refresh=600.0)
    assert tenant.clock_skew == 5.0 and tenant.claims_to_headers == (("sub", "x-user-id"),)


def test_tenant_schema_lists_the_parser_fields() -> None:
    assert set(TENANT_SCHEMA["properties"]) == extauthz_config._TENANT_FIELDS
    assert set(TENANT_SCHEMA["properties"]["jwks"]["properties"]) == extauthz_config._JWKS_FIELDS


def test_defaults() -> None:
    config = load(SETUP, TENANT, """
routes:
  - name: x
    match: {prefix: /}
    service: app
    rate_limits: [{unit: second, requests: 3}]
""")
    assert config.extauthz == model.ExtAuthzSettings("authz", 0.25)
    assert config.ratelimit == model.RateLimitSettings("limits", "pavilion", 0.05, False)
    route = config.routes[0]
    assert route.auth is None
    # No `per`: one counter for the whole route.
    assert route.rate_limits == (model.RouteRateLimit((), "second", 3, 1, "fixed_window", 0, False, "allow"),)


def test_per_is_kept_in_canonical_order() -> None:
    config = load(SETUP, TENANT, """
routes:
  - name: x
    match: {prefix: /}
    service: app
    auth: {tenants: [acme]}
    rate_limits: [{per: [client_ip, subject, tenant], unit: minute, requests: 3, unit_multiplier: 5}]
""")
    assert config.routes[0].rate_limits[0].per == ("tenant", "subject", "client_ip")
    assert config.routes[0].rate_limits[0].unit_multiplier == 5


def test_sections_may_sit_in_any_file() -> None:
    gateway, _, rest = SETUP.partition("extauthz:")
    config = load(gateway, "extauthz:" + rest, TENANT)
    assert config.extauthz is not None and config.ratelimit is not None and len(config.tenants) == 1


def test_tenants_across_files_are_unique() -> None:
    with pytest.raises(ConfigErrors) as caught:
        load(SETUP, TENANT, TENANT)
    assert [str(e) for e in caught.value.errors] == [
        "/conf/f2.yaml:3:5: tenants[acme].id: tenant 'acme' is already defined at /conf/f1.yaml:3:5"]


def test_auth_none_needs_no_extauthz() -> None:
    config = load("""
regions: [local]
listeners: [{name: public, address: 127.0.0.1, port: 10080}]
services: [{name: app, endpoints: [{address: 127.0.0.1:9001, region: local}]}]
routes: [{name: x, match: {prefix: /}, service: app, auth: none}]
""")
    assert config.extauthz is None and config.routes[0].auth == model.RouteAuth(public=True)


def test_section_naming_an_unknown_service() -> None:
    with pytest.raises(ConfigErrors) as caught:
        load(SETUP.replace("extauthz: {service: authz}", "extauthz: {service: auth}"))
    assert [str(e) for e in caught.value.errors] == [
        "/conf/f0.yaml:8:21: extauthz.service: unknown service 'auth'; did you mean 'authz'?"]

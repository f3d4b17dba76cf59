"""Tenants, `extauthz:`, `ratelimit:`, route `auth` and `rate_limits`: what loading yields."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from controlplane.config import model, token_rules
from controlplane.config.load import load_config, parse_sources
from controlplane.config.schema import json_schema
from controlplane.config.tenants import TENANT_SCHEMA
from extauthz import config as extauthz_config
from extauthz.tenant import JwksSource
from pavilion.config_files import Source
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


def test_per_client_sits_between_tenant_and_subject() -> None:
    config = load(SETUP, TENANT, """
routes:
  - name: x
    match: {prefix: /}
    service: app
    auth: {tenants: [acme]}
    rate_limits:
      - {per: [client_ip, subject, client, tenant], unit: minute, requests: 3}
      - {per: [client, tenant], unit: minute, requests: 3}
      - {per: [tenant, client_ip, client], unit: minute, requests: 3}
""")
    assert [limit.per for limit in config.routes[0].rate_limits] == [
        ("tenant", "client", "subject", "client_ip"), ("tenant", "client"), ("tenant", "client", "client_ip")]


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


def test_identity_header_is_read_and_checked() -> None:
    named = "extauthz: {service: authz, identity_header: X-Assertion}"
    config = load(SETUP.replace("extauthz: {service: authz}", named))
    assert config.extauthz == model.ExtAuthzSettings("authz", 0.25, "x-assertion")
    assert load(SETUP).extauthz == model.ExtAuthzSettings("authz", 0.25, "x-pavilion-identity")
    with pytest.raises(ConfigErrors) as caught:
        load(SETUP.replace("extauthz: {service: authz}", "extauthz: {service: authz, identity_header: Authorization}"))
    assert [str(e) for e in caught.value.errors] == [
        "/conf/f0.yaml:8:45: extauthz.identity_header: 'authorization' is a reserved header; an identity assertion "
        "cannot travel in it"]


ROUTE = """
routes:
  - name: x
    match: {prefix: /}
    service: app
"""


def test_auth_with_scopes_and_claims() -> None:
    config = load(SETUP, TENANT, ROUTE + """
    auth:
      tenants: [acme]
      scopes: [accounts:write, accounts:read, "urn:x:!#$[]~"]
      claims: {plan: [gold], groups: [ops, admins], "名前": ["値"]}
""")
    assert config.routes[0].auth == model.RouteAuth(
        tenants=("acme",), scopes=("accounts:write", "accounts:read", "urn:x:!#$[]~"),
        claims=(("plan", ("gold",)), ("groups", ("ops", "admins")), ("名前", ("値",))))


@pytest.mark.parametrize(("auth", "expected"), [
    ("{scopes: [accounts:read]}", model.RouteAuth(scopes=("accounts:read",))),
    ("{claims: {groups: [admins]}}", model.RouteAuth(claims=(("groups", ("admins",)),))),
    ("{tenants: [acme]}", model.RouteAuth(tenants=("acme",))),
    ("none", model.RouteAuth(public=True)),
])
def test_tenants_are_optional(auth: str, expected: model.RouteAuth) -> None:
    route = load(SETUP, TENANT, ROUTE + f"    auth: {auth}\n").routes[0]
    assert route.auth == expected
    assert route.auth is not None and route.auth.public is (auth == "none")


def test_token_facts_are_counted_on_a_scopes_only_route() -> None:
    """`per: tenant` needs a token; a route that requires only scopes still has one (it is not public)."""
    route = load(SETUP, TENANT, ROUTE + """    auth: {scopes: [a]}
    rate_limits: [{per: [tenant, subject], unit: second, requests: 3}, {per: [client, tenant], unit: hour, requests: 9}]
""").routes[0]
    assert [limit.per for limit in route.rate_limits] == [("tenant", "subject"), ("tenant", "client")]


def test_scopes_and_claims_need_extauthz() -> None:
    gateway = SETUP.replace("extauthz: {service: authz}\n", "")
    with pytest.raises(ConfigErrors) as caught:
        load(gateway, ROUTE + "    auth: {scopes: [a]}\n",
             ROUTE.replace("name: x", "name: y") + "    auth: {claims: {g: [a]}}\n")
    assert [str(e) for e in caught.value.errors] == [
        "/conf/f1.yaml:6:11: routes[x].auth: auth needs ext_authz: add an `extauthz:` section naming its service",
        "/conf/f2.yaml:6:11: routes[y].auth: auth needs ext_authz: add an `extauthz:` section naming its service",
    ]


def test_empty_auth_points_to_auth_none() -> None:
    with pytest.raises(ConfigErrors) as caught:
        load(SETUP, TENANT, ROUTE + "    auth: {}\n")
    assert [str(e) for e in caught.value.errors] == [
        "/conf/f2.yaml:6:11: routes[x].auth: give at least one of tenants, scopes, claims or client_certificates; "
        "for a public route write `auth: none`"]


def test_extensions_longer_than_ext_authz_reads_are_refused() -> None:
    """ext_authz answers 503 on a route whose `claims` extension is over 8192 characters: refuse it here."""
    def auth(count: int) -> str:
        values = ", ".join(f'"{"v" * 1000}{i}"' for i in range(count))
        return ROUTE + f"    auth: {{claims: {{big: [{values}]}}}}\n"
    assert load(SETUP, TENANT, auth(8)).routes[0].auth is not None  # 8041 characters
    with pytest.raises(ConfigErrors) as caught:
        load(SETUP, TENANT, auth(9))
    assert [str(e) for e in caught.value.errors] == [
        "/conf/f2.yaml:6:20: routes[x].auth.claims: claims come to 9045 characters for ext_authz, "
        "more than the 8192 it reads"]


def test_auth_passes_the_schema_as_the_loader_does() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    route = {"name": "x", "match": {"prefix": "/"}, "service": "app"}
    good = {"tenants": ["acme"], "scopes": ["a:b", "~!#"], "claims": {"groups": ["admins"], "名前": ["値"]}}
    assert not list(validator.iter_errors({"routes": [{**route, "auth": good}]}))
    cases: list[dict[str, Any]] = [
        {}, {"scopes": ["a b"]}, {"scopes": ["a\\b"]}, {"scopes": []}, {"claims": {"scope": ["x"]}},
        {"claims": {"scp": ["x"]}}, {"claims": {"g": []}}, {"claims": {"g": ["a\nb"]}},
        {"claims": {"g": ["x" * 1025]}}, {"claims": {"g\t": ["x"]}}, {"claims": {"g": [1]}}]
    for bad in cases:
        assert list(validator.iter_errors({"routes": [{**route, "auth": bad}]})), bad


@pytest.mark.parametrize("text", ["a", "accounts:read", "!", "#", "[", "]", "~", "a\"b", "a\\b", "a b", "", " ",
                                  "caf\u00e9", "a\x7f", "a\tb", "\x20", "https://x/y?z=1&w"])
def test_scope_pattern_matches_scope_token(text: str) -> None:
    try:
        token_rules.scope_token(text)
        accepted = True
    except ValueError:
        accepted = False
    assert bool(re.search(token_rules.SCOPE_PATTERN, text)) == accepted
    # RFC 6749 section 3.3 NQCHAR, spelled out.
    assert accepted == (text != "" and all(c == "\x21" or "\x23" <= c <= "\x5b" or "\x5d" <= c <= "\x7e" for c in text))


@pytest.mark.parametrize("text", ["admins", "名前", "a b", "", "a\nb", "\x7f", "\x85", "\x9f", "\xa0", "\u2028"])
def test_claim_pattern_matches_the_control_character_check(text: str) -> None:
    try:
        token_rules.claim_value(text)
        accepted = True
    except ValueError:
        accepted = False
    assert bool(re.search(token_rules.CLAIM_TEXT_PATTERN, text)) == accepted
    assert accepted == (text != "" and all(unicodedata.category(c) != "Cc" for c in text))

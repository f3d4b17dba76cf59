"""The real `envoy --mode validate` on translated ext_authz and ratelimit config (examples/protected)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2

from controlplane.config.load import load_config, parse_sources
from controlplane.envoy_check import check_with_envoy
from pavilion.config_files import Source
from tests.controlplane.translate.sample import translated
from tests.procs import ENVOY

pytestmark = pytest.mark.integration

PROTECTED = Path(__file__).resolve().parents[2] / "examples" / "protected"


def test_protected_example_is_accepted_by_envoy() -> None:
    assert check_with_envoy(load_config(PROTECTED), ENVOY) == []


def test_each_filter_alone_is_accepted_by_envoy() -> None:
    config = load_config(PROTECTED)
    no_limits = tuple(replace(r, rate_limits=()) for r in config.routes)
    assert check_with_envoy(replace(config, ratelimit=None, routes=no_limits), ENVOY) == []
    only_ip = tuple(replace(r, auth=None, rate_limits=tuple(x for x in r.rate_limits if x.per == ("client_ip",)))
                    for r in config.routes)
    assert check_with_envoy(replace(config, extauthz=None, tenants=(), routes=only_ip), ENVOY) == []


def test_scopes_and_claims_are_accepted_by_envoy() -> None:
    """A route requiring scopes and claims (no tenants, non-ASCII and quotes in values) validates."""
    auth = "auth: {scopes: [accounts:read, 'urn:x:!#[]~'], claims: {groups: [admins, 'a\"b'], 名前: [値]}}"
    sources = []
    for path in sorted(PROTECTED.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        sources.append(Source(str(path), text.replace("auth: {tenants: [acme]}", auth)))
    config = parse_sources(sources)
    accounts = next(r for r in config.routes if r.name == "accounts")
    assert accounts.auth is not None and accounts.auth.scopes and accounts.auth.claims and not accounts.auth.tenants
    table = translated(route_pb2.RouteConfiguration, config, "local")[0]
    route = next(r for vh in table.virtual_hosts for r in vh.routes if r.name == "accounts")
    per_route = ext_authz_pb2.ExtAuthzPerRoute()
    assert route.typed_per_filter_config["envoy.filters.http.ext_authz"].Unpack(per_route)
    assert set(per_route.check_settings.context_extensions) == {"route", "scopes", "claims"}
    assert check_with_envoy(config, ENVOY) == []


def test_per_client_is_accepted_by_envoy() -> None:
    """`per: [tenant, client, subject]` (client's metadata action with default_value "-") validates."""
    sources = []
    for path in sorted(PROTECTED.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        sources.append(Source(str(path), text.replace("{per: [tenant, subject],", "{per: [tenant, client, subject],")))
    config = parse_sources(sources)
    accounts = next(r for r in config.routes if r.name == "accounts")
    assert [limit.per for limit in accounts.rate_limits] == [("tenant",), ("tenant", "client", "subject")]
    table = translated(route_pb2.RouteConfiguration, config, "local")[0]
    route = next(r for vh in table.virtual_hosts for r in vh.routes if r.name == "accounts")
    client = [a.metadata for a in route.route.rate_limits[1].actions if a.metadata.descriptor_key == "client"]
    assert [(m.metadata_key.path[0].key, m.default_value) for m in client] == [("client", "-")]
    assert check_with_envoy(config, ENVOY) == []


def test_envoy_checks_the_filters_too() -> None:
    """The check sees the filters: a ratelimit filter without a domain is refused by Envoy itself."""
    config = load_config(PROTECTED)
    assert config.ratelimit is not None
    broken = replace(config, ratelimit=replace(config.ratelimit, domain=""))
    problems = check_with_envoy(broken, ENVOY)
    assert "RateLimitValidationError.Domain" in " ".join(problems)

"""The `introspection:` block of a tenant: the tenant file and the route YAML (one parser), errors at
FILE:LINE, the secret read at load and never shown, and the TenantPolicy that carries it over xDS."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.translate._pavilion import tenant_policy
from extauthz.config import load_tenants
from extauthz.keys import key_set_for
from extauthz.tenant import NO_KEYS, IntrospectionPolicy, JwksSource, Tenant
from extauthz.tenant_proto import tenants_from_policies
from pavilion.errors import ConfigError

SECRET = "idp-client-secret-42"

TENANTS = """tenants:
  - id: legacy
    issuer: https://idp.legacy.test
    audiences: [accounts-api]
    introspection:
{block}
"""
GOOD = """      endpoint: https://idp.legacy.test/oauth2/introspect
      client_id: pavilion-gateway
      client_secret_file: secrets/introspection-secret
      cache: 2m
      negative_cache: 10s
      timeout: 500ms"""


def write(tmp_path: Path, block: str = GOOD, extra: str = "") -> Path:
    (tmp_path / "secrets").mkdir(exist_ok=True)
    (tmp_path / "secrets" / "introspection-secret").write_text(SECRET + "\n")
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS.format(block=block) + extra)
    return path


def test_the_block_is_read_and_the_secret_file_relative_to_the_config(tmp_path: Path) -> None:
    (tenant,) = load_tenants(write(tmp_path))
    policy = tenant.introspection
    assert policy is not None
    assert (policy.endpoint, policy.client_id, policy.cache, policy.negative_cache, policy.timeout) == (
        "https://idp.legacy.test/oauth2/introspect", "pavilion-gateway", 120.0, 10.0, 0.5)
    assert policy.client_secret == SECRET  # the trailing newline of the file dropped
    assert policy.client_secret_file == str(tmp_path / "secrets" / "introspection-secret")
    assert tenant.jwks.inline == NO_KEYS and not tenant.has_keys
    assert SECRET not in repr(tenant)
    key_set_for(tenant)  # a tenant without keys is fine when it introspects


def test_the_defaults(tmp_path: Path) -> None:
    block = "      endpoint: https://idp.legacy.test/i\n      client_id: gw\n"
    (tenant,) = load_tenants(write(tmp_path, block + "      client_secret_file: secrets/introspection-secret"))
    assert tenant.introspection is not None
    assert (tenant.introspection.cache, tenant.introspection.negative_cache, tenant.introspection.timeout) == (
        60.0, 5.0, 1.0)


@pytest.mark.parametrize(("block", "where", "message"), [
    (GOOD.replace("secrets/introspection-secret", "secrets/missing"),
     "8:27: tenants[0].introspection.client_secret_file", "cannot read the secret file"),
    (GOOD.replace("https://idp.legacy.test", "http://idp.legacy.test"), "6:17: tenants[0].introspection.endpoint",
     "plain http"),
    (GOOD.replace("cache: 2m", "cache: soon"), "9:14: tenants[0].introspection.cache", "duration"),
    (GOOD.replace("timeout: 500ms", "timeout: 1m"), "11:16: tenants[0].introspection.timeout", "between"),
    (GOOD.replace("client_id: pavilion-gateway", "client: x"), "7:15: tenants[0].introspection.client",
     "unknown field"),
    (GOOD.replace("      client_id: pavilion-gateway\n", ""), "6:7: tenants[0].introspection",
     "missing required field `client_id`"),
    (GOOD.replace("      endpoint: https://idp.legacy.test/oauth2/introspect\n", ""),
     "6:7: tenants[0].introspection.endpoint", "needs an endpoint unless"),
])
def test_errors_name_the_file_line_and_field(tmp_path: Path, block: str, where: str, message: str) -> None:
    path = write(tmp_path, block)
    with pytest.raises(ConfigError) as caught:
        load_tenants(path)
    text = str(caught.value)
    assert f"{path}:{where}:" in text and message in text
    assert SECRET not in text


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path)
    (tmp_path / "secrets" / "introspection-secret").write_text("\n")
    with pytest.raises(ConfigError, match="empty or holds control characters"):
        load_tenants(path)


def test_a_tenant_needs_keys_or_introspection(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("tenants:\n  - id: a\n    issuer: https://a.test\n    audiences: [x]\n")
    with pytest.raises(ConfigError, match=r"t.yaml:2:5: tenants\[0\]: give exactly one of `jwks` or `discovery`"):
        load_tenants(path)


def test_an_empty_key_set_without_introspection_is_still_refused() -> None:
    tenant = Tenant(id="a", issuer="https://a.test", audiences=("x",), jwks=JwksSource(inline=NO_KEYS))
    with pytest.raises(ConfigError, match="no usable key"):
        key_set_for(tenant)


def test_the_route_yaml_reads_the_same_block(tmp_path: Path) -> None:
    from controlplane.config.tenants import read_tenant_node
    from pavilion.yaml_nodes import Mapping, Sequence, parse_documents

    path = write(tmp_path)
    root = parse_documents(path.read_text(), str(path))[0]
    assert isinstance(root, Mapping)
    tenants = root.items[0][1]
    assert isinstance(tenants, Sequence)
    errors: list[ConfigError] = []
    tenant = read_tenant_node(tenants.items[0], "tenants[legacy]", errors)
    assert errors == [] and tenant is not None
    assert tenant == load_tenants(path)[0]


def test_the_policy_travels_over_xds_without_the_secret(tmp_path: Path) -> None:
    (tenant,) = load_tenants(write(tmp_path))
    message = tenant_policy(tenant)
    assert message.introspection.client_secret_file == str(tmp_path / "secrets" / "introspection-secret")
    assert SECRET.encode() not in message.SerializeToString()
    assert tenants_from_policies({"legacy": message}) == (tenant,)


def test_a_discovered_endpoint_travels_as_empty(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("x")
    tenant = Tenant(id="d", issuer="https://d.test", audiences=("x",), jwks=JwksSource(discovery="https://d.test"),
                    introspection=IntrospectionPolicy(client_id="gw", client_secret_file=str(secret)))
    message = tenant_policy(tenant)
    assert message.introspection.endpoint == ""
    assert tenants_from_policies({"d": message}) == (tenant,)


def test_a_policy_whose_secret_file_is_missing_is_refused_by_name(tmp_path: Path) -> None:
    (tenant,) = load_tenants(write(tmp_path))
    message = tenant_policy(tenant)
    message.introspection.client_secret_file = str(tmp_path / "gone")
    with pytest.raises(ConfigError) as caught:
        tenants_from_policies({"legacy": message})
    assert "xds:TenantPolicy/legacy" in str(caught.value)
    assert "introspection.client_secret_file" in str(caught.value)


def test_a_changed_secret_makes_a_new_tenant(tmp_path: Path) -> None:
    path = write(tmp_path)
    before = load_tenants(path)[0]
    (tmp_path / "secrets" / "introspection-secret").write_text("rotated")
    assert load_tenants(path)[0] != before  # a reload builds a new introspector with the new secret

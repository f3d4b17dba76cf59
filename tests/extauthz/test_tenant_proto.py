"""Tenant → pavilion.v1.TenantPolicy (control plane) → Tenant (ext_authz) gives the same tenant."""

from __future__ import annotations

import pytest

from controlplane.translate._pavilion import tenant_policy
from extauthz.tenant import JwksSource, Tenant
from extauthz.tenant_proto import tenant_from_policy, tenants_from_policies
from pavilion.errors import ConfigErrors
from pavilion.v1 import tenant_pb2

KEY = {"kty": "EC", "crv": "P-256", "kid": "k1", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
       "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}

TENANTS = [
    Tenant(id="acme", issuer="https://idp.acme.test", audiences=("accounts-api",),
           jwks=JwksSource(uri="https://idp.acme.test/jwks.json")),
    Tenant(id="beta", issuer="https://login.beta.test", audiences=("a", "b"), algorithms=("ES256", "EdDSA"),
           jwks=JwksSource(discovery="https://login.beta.test/.well-known/openid-configuration", timeout=0.75,
                           refresh=120.5, min_refresh=10, max_refresh=3600, cooldown=5, error_retry=0.25,
                           max_bytes=4096, max_keys=4),
           clock_skew=0.0, max_lifetime=3600.0, claims_to_headers=(("sub", "x-user-id"), ("email", "x-user-email")),
           on_store_error="allow", token_type="at+jwt", max_token_bytes=4096),
    Tenant(id="local", issuer="http://127.0.0.1:1/", audiences=("x",), jwks=JwksSource.of_keys([KEY])),
    Tenant(id="files", issuer="https://files.test", audiences=("x",), jwks=JwksSource(file="/etc/keys.json")),
    Tenant(id="loop", issuer="https://loop.test", audiences=("x",),
           jwks=JwksSource(uri="http://127.0.0.1:8080/jwks", allow_http_loopback=True)),
]


@pytest.mark.parametrize("tenant", TENANTS, ids=[t.id for t in TENANTS])
def test_round_trip_gives_an_equal_tenant(tenant: Tenant) -> None:
    message = tenant_policy(tenant)
    wire = tenant_pb2.TenantPolicy.FromString(message.SerializeToString())
    back = tenant_from_policy(wire)
    assert back == tenant
    assert back.jwks == tenant.jwks  # JwksSource fields too (Tenant equality covers them; said for the reader)


def test_unset_fields_take_the_tenant_defaults() -> None:
    message = tenant_pb2.TenantPolicy(id="acme", issuer="https://i.test", audiences=["a"],
                                      jwks=tenant_pb2.JwksSource(uri="https://i.test/jwks"))
    assert tenant_from_policy(message) == Tenant(id="acme", issuer="https://i.test", audiences=("a",),
                                                 jwks=JwksSource(uri="https://i.test/jwks"))


def bad(**changes: object) -> tenant_pb2.TenantPolicy:
    message = tenant_policy(TENANTS[1])
    for name, value in changes.items():
        if isinstance(value, list):
            message.ClearField(name)  # type: ignore[arg-type]
            getattr(message, name).extend(value)
        elif isinstance(value, tenant_pb2.JwksSource):
            message.jwks.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


@pytest.mark.parametrize(("message", "name", "expected"), [
    (bad(on_store_error="maybe"), "beta", "on_store_error"),
    (bad(algorithms=["HS256"]), "beta", "algorithms"),
    (bad(claims_to_headers=[tenant_pb2.ClaimHeader(claim="sub", header="authorization")]), "beta", "reserved"),
    (bad(id="Not An Id"), "Not An Id", "tenant id"),
    (bad(), "other", "resource name differs"),
    (tenant_pb2.TenantPolicy(id="beta", issuer="https://i.test", audiences=["a"]), "beta", "missing jwks"),
    (bad(jwks=tenant_pb2.JwksSource(uri="http://idp.example/jwks")), "beta", "plain http"),
])
def test_a_bad_policy_is_refused_naming_the_resource(message: tenant_pb2.TenantPolicy, name: str,
                                                     expected: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        tenants_from_policies({"acme": tenant_policy(TENANTS[0]), name: message})
    text = str(caught.value)
    assert f"xds:TenantPolicy/{name}" in text and expected in text
    assert "acme" not in text


def test_two_tenants_with_one_issuer_are_refused() -> None:
    twin = tenant_policy(TENANTS[0])
    twin.id = "acme2"
    with pytest.raises(ConfigErrors, match="belongs to two tenants"):
        tenants_from_policies({"acme": tenant_policy(TENANTS[0]), "acme2": twin})


def test_an_update_gives_every_tenant_sorted_by_id() -> None:
    policies = {t.id: tenant_policy(t) for t in TENANTS}
    assert tenants_from_policies(policies) == tuple(sorted(TENANTS, key=lambda t: t.id))

"""The tenant `dpop:` block (tenant file, route YAML, TenantPolicy over xDS) and the DPoP commands
(`pavilion dpop-key`, `pavilion token --dpop-key`, `pavilion dpop-proof`), whose output passes the checks."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from envoy.service.auth.v3 import attribute_context_pb2

from controlplane.config.load import load_config
from controlplane.translate._pavilion import tenant_policy
from extauthz.authorizer import Authorizer
from extauthz.config import parse_tenants
from extauthz.dpop_sign import key_thumbprint
from extauthz.local_keys import ensure_local_key
from extauthz.revocation import MemoryRevocations
from extauthz.signing import load_private_key
from extauthz.tenant import DEFAULT_DPOP_ALGORITHMS, DpopPolicy, JwksSource, Tenant
from extauthz.tenant_proto import tenant_from_policy
from extauthz.tenant_set import build_tenants, retire
from extauthz.tokens import b64url_decode, parse_token
from pavilion.cli import main
from pavilion.errors import ConfigError, ConfigErrors
from pavilion.v1 import tenant_pb2
from tests.extauthz.test_token_cli import write_config

TENANT = """tenants:
  - id: acme
    issuer: https://idp.acme.test
    audiences: [api]
    jwks: {{inline: {{keys: []}}}}
    dpop: {dpop}
"""


def test_a_tenant_without_dpop_takes_the_defaults() -> None:
    tenant = parse_tenants(TENANT.format(dpop="{}"), "t.yaml")[0]
    assert tenant.dpop == DpopPolicy(required=False, max_age=60.0, algorithms=DEFAULT_DPOP_ALGORITHMS)


def test_the_dpop_block_is_read() -> None:
    tenant = parse_tenants(TENANT.format(dpop="{required: true, max_age: 2m, algorithms: [ES384, EdDSA], nonce: true}"),
                           "t.yaml")[0]
    assert tenant.dpop == DpopPolicy(required=True, max_age=120.0, algorithms=("ES384", "EdDSA"), nonce=True)


@pytest.mark.parametrize(("dpop", "message"), [
    ("{algorithms: [HS256]}", "dpop.algorithms: must be a non-empty list of"),
    ("{algorithms: [none]}", "dpop.algorithms: must be a non-empty list of"),
    ("{max_age: 0s}", "dpop.max_age: must be between 1s and 1h"),
    ("{max_age: 2h}", "dpop.max_age: must be between 1s and 1h"),
    ("{required: yes please}", "dpop.required: must be true or false"),
    ("{htu: https://api.test}", "dpop.htu: unknown field"),
    ("{nonce: 1}", "dpop.nonce: must be true or false"),
    ("true", "dpop: must be a mapping"),
])
def test_a_bad_dpop_block_is_refused_at_its_line(dpop: str, message: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_tenants(TENANT.format(dpop=dpop), "t.yaml")
    text = str(caught.value)
    assert message in text and "t.yaml:6:" in text, text


@pytest.mark.parametrize("dpop", [DpopPolicy(), DpopPolicy(required=True, max_age=15.5, algorithms=("PS256",)),
                                  DpopPolicy(nonce=True)])
def test_dpop_settings_travel_over_xds(dpop: DpopPolicy) -> None:
    tenant = Tenant(id="acme", issuer="https://idp.acme.test", audiences=("api",),
                    jwks=JwksSource(uri="https://idp.acme.test/jwks"), dpop=dpop)
    message = tenant_policy(tenant)
    assert message.HasField("dpop") is (dpop != DpopPolicy())  # defaults are not sent
    back = tenant_from_policy(tenant_pb2.TenantPolicy.FromString(message.SerializeToString()))
    assert back.dpop == dpop and back == tenant


def test_a_bad_dpop_policy_over_xds_is_refused_by_field() -> None:
    message = tenant_pb2.TenantPolicy(id="acme", issuer="https://i.test", audiences=["a"],
                                      jwks=tenant_pb2.JwksSource(uri="https://i.test/jwks"),
                                      dpop=tenant_pb2.DpopPolicy(algorithms=["HS256"]))
    with pytest.raises(ConfigError) as caught:
        tenant_from_policy(message)
    assert caught.value.path == "dpop.algorithms"


def test_the_route_yaml_accepts_a_tenants_dpop_block(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    yaml = config / "gateway.yaml"
    yaml.write_text(yaml.read_text().replace("    max_lifetime: 2h\n",
                                             "    max_lifetime: 2h\n    dpop: {required: true, max_age: 30s}\n"))
    tenant = load_config(config).tenants[0]
    assert tenant.dpop == DpopPolicy(required=True, max_age=30.0)
    yaml.write_text(yaml.read_text().replace("max_age: 30s", "max_age: forever"))
    with pytest.raises(ConfigErrors) as caught:
        load_config(config)
    assert "dpop" in str(caught.value) and "gateway.yaml:" in str(caught.value)


async def test_the_commands_make_a_bound_token_and_proofs_that_pass(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    tenant = load_config(config).tenants[0]
    ensure_local_key(tenant)
    key = tmp_path / "client.pem"
    assert main(["dpop-key", str(key)]) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert main(["dpop-key", str(key)]) == 1  # never overwritten
    capsys.readouterr()
    assert main(["token", "--tenant", "demo", "--config", str(config), "--dpop-key", str(key)]) == 0
    token = capsys.readouterr().out.strip()
    thumbprint = key_thumbprint(load_private_key(key.read_bytes()))
    assert parse_token(token, 8192).claims["cnf"] == {"jkt": thumbprint}
    url = "http://127.0.0.1:10080/orders"
    assert main(["dpop-proof", "--key", str(key), "--method", "POST", "--url", url + "?x=1#f", "--token", token]) == 0
    out = capsys.readouterr().out
    proof = out.strip()
    assert out.count("\n") == 1 and "PRIVATE" not in out
    claims = json.loads(b64url_decode(proof.split(".")[1].encode(), "payload"))
    assert claims["htu"] == url and "nonce" not in claims
    assert main(["dpop-proof", "--key", str(key), "--url", url, "--nonce", "abc"]) == 0
    assert json.loads(b64url_decode(capsys.readouterr().out.strip().split(".")[1].encode(), "p"))["nonce"] == "abc"
    assert main(["dpop-proof", "--key", str(tmp_path / "missing.pem"), "--url", url]) == 1
    assert main(["dpop-proof", "--key", str(key), "--url", "ftp://x/y"]) == 1
    assert "dpop-proof: --url" in capsys.readouterr().err

    tenants = await build_tenants([tenant])
    try:
        authorizer = Authorizer(tenants, MemoryRevocations())
        attributes = attribute_context_pb2.AttributeContext(request=attribute_context_pb2.AttributeContext.Request(
            http=attribute_context_pb2.AttributeContext.HttpRequest(method="POST", scheme="http",
                                                                      host="127.0.0.1:10080", path="/orders")))
        headers = {"authorization": f"DPoP {token}", "dpop": proof}
        assert (await authorizer.check(headers, "/orders", {}, attributes)).allowed
        assert (await authorizer.check(headers, "/orders", {}, attributes)).reason == "dpop_replayed"
    finally:
        await retire(tenants, None)

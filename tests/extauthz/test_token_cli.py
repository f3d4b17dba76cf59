"""`pavilion token` and the local demo keys: the token verifies with the tenant's own checks, the private
key is the owner's only and never printed, and a restart keeps the key (earlier tokens stay valid)."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

from controlplane.config.load import load_config
from extauthz.keys import key_set_for
from extauthz.local_keys import ensure_local_key, is_local, private_key_path
from extauthz.verify import verify_token
from pavilion.cli import main


def write_config(root: Path) -> Path:
    config = root / "routes"
    config.mkdir()
    (config / "gateway.yaml").write_text("""
regions: [local]
listeners: [{name: public, address: 127.0.0.1, port: 10080}]
services:
  - {name: app, endpoints: [{address: 127.0.0.1:9001, region: local}]}
  - {name: extauthz, protocol: grpc, endpoints: [{address: 127.0.0.1:9191, region: local}]}
extauthz: {service: extauthz}
tenants:
  - id: demo
    issuer: https://demo.test
    audiences: [demo-api, other-api]
    algorithms: [ES256]
    jwks: {file: ../.run/demo-jwks.json}
    max_lifetime: 2h
routes:
  - {name: app, match: {prefix: /}, service: app}
""")
    return config


def verified_claims(config: Path, token: str) -> dict[str, object]:
    tenant = load_config(config).tenants[0]

    async def verify() -> dict[str, object]:
        keys = key_set_for(tenant)
        await keys.start()
        try:
            return dict((await verify_token(token, tenant, keys, time.time())).claims)
        finally:
            await keys.close()

    return asyncio.run(verify())


def test_token_of_the_local_tenant_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    tenant = load_config(config).tenants[0]
    assert is_local(tenant, tmp_path / ".run")
    assert not is_local(tenant, tmp_path)
    assert ensure_local_key(tenant) is True
    key = private_key_path(tenant)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert main(["token", "--tenant", "demo", "--config", str(config), "--subject", "alice", "--ttl", "10m",
                 "--claims", '{"email": "alice@demo.test"}']) == 0
    out = capsys.readouterr().out
    token = out.strip()
    assert out.count("\n") == 1 and token.count(".") == 2
    assert "PRIVATE" not in out and key.read_text().split("\n")[1] not in out
    claims = verified_claims(config, token)
    assert claims["sub"] == "alice" and claims["aud"] == "demo-api" and claims["iss"] == "https://demo.test"
    assert claims["email"] == "alice@demo.test"
    assert 590 <= int(claims["exp"]) - int(claims["iat"]) <= 600  # type: ignore[call-overload]


def test_a_token_bound_to_a_client_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.extauthz.test_cert_binding import RP_ONE

    config = write_config(tmp_path)
    ensure_local_key(load_config(config).tenants[0])
    pem = tmp_path / "client.pem"
    pem.write_text(unquote(RP_ONE[0]))
    assert main(["token", "--tenant", "demo", "--config", str(config), "--bind-certificate", str(pem)]) == 0
    assert verified_claims(config, capsys.readouterr().out.strip())["cnf"] == {"x5t#S256": RP_ONE[1]}
    assert main(["token", "--tenant", "demo", "--config", str(config), "--bind-certificate", str(config)]) == 1
    assert "not a PEM certificate" in capsys.readouterr().err


def test_a_restart_keeps_the_key_and_rewrites_a_lost_jwks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    tenant = load_config(config).tenants[0]
    ensure_local_key(tenant)
    main(["token", "--tenant", "demo", "--config", str(config)])
    token = capsys.readouterr().out.strip()
    jwks = Path(tenant.jwks.file or "")
    before = json.loads(jwks.read_text())
    jwks.unlink()
    assert ensure_local_key(tenant) is False
    assert json.loads(jwks.read_text()) == before
    assert verified_claims(config, token)["sub"] == "demo-user"


def test_refusals_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert main(["token", "--tenant", "demo", "--config", str(config)]) == 1
    assert "no private key at" in capsys.readouterr().err
    ensure_local_key(load_config(config).tenants[0])
    assert main(["token", "--tenant", "acme", "--config", str(config)]) == 1
    assert "no tenant 'acme'" in capsys.readouterr().err
    assert main(["token", "--tenant", "demo", "--config", str(config), "--ttl", "3h"]) == 1
    assert "max_lifetime" in capsys.readouterr().err
    assert main(["token", "--tenant", "demo", "--config", str(config), "--claims", "[1]"]) == 1
    assert "JSON object" in capsys.readouterr().err

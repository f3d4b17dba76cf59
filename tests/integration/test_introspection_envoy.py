"""Opaque tokens through the real Envoy: control plane (route YAML with a tenant that introspects), Envoy,
ext_authz fed over xDS (it reads the client secret from the file the TenantPolicy names), a real local
RFC 7662 endpoint, an echo upstream. An active token reaches the upstream with its identity headers (the
client's spoofed ones replaced), an inactive one is 401, a repeated token costs no second call, and
`pavilion revoke` (real Redis) refuses an opaque token by its jti though its answer is cached. A client
secret rotated in its file (and at the IdP) is used by ext_authz without any config change."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.extauthz.introspection_server import IntrospectionServer, in_thread
from tests.extauthz.issuer import Issuer
from tests.integration.gateway_procs import running_gateway, start_upstreams, start_xds_service
from tests.procs import PAVILION, Proc, free_port, start_redis

pytestmark = pytest.mark.integration

ACME = Issuer(algs=("ES256",))
LEGACY = "https://idp.legacy.test"

CONFIG = """regions: [eu-west]
listeners:
  - {{name: public, address: 127.0.0.1, port: {port}}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:{accounts}, region: eu-west}}]
  - name: extauthz
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:{extauthz}, region: eu-west}}]
extauthz: {{service: extauthz, timeout: 2s}}
tenants:
  - id: acme
    issuer: {issuer}
    audiences: [{audience}]
    algorithms: [ES256]
    jwks: {{inline: {jwks}}}
  - id: legacy
    issuer: {legacy}
    audiences: [accounts-api]
    claims_to_headers: {{client_id: x-client-id}}
    introspection:
      endpoint: {endpoint}
      allow_http_loopback: true
      client_id: pavilion-gateway
      client_secret_file: introspection-secret
      cache: 60s
      negative_cache: 5s
      timeout: 1s
routes:
  - name: legacy
    match: {{prefix: /legacy}}
    service: accounts
    auth: {{tenants: [legacy], scopes: [accounts:read]}}
  - {{name: accounts, match: {{prefix: /}}, service: accounts}}
"""


@dataclass
class Setup:
    port: int
    idp: IntrospectionServer
    redis_url: str
    secret_file: Path
    extauthz: Proc


def active(idp: IntrospectionServer, token: str, **claims: object) -> None:
    answer = {"active": True, "iss": LEGACY, "aud": "accounts-api", "sub": "user-7", "client_id": "rp-app",
              "scope": "accounts:read", "exp": int(time.time()) + 600, "iat": int(time.time())}
    answer.update(claims)
    idp.answers[token] = answer


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    routes = tmp_path_factory.mktemp("routes")
    port, extauthz_port = free_port(), free_port()
    redis, redis_port = start_redis()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    try:
        with in_thread(IntrospectionServer()) as idp:
            (routes / "introspection-secret").write_text(idp.client_secret + "\n")
            upstreams = start_upstreams({"accounts": "eu-west"})
            (routes / "gateway.yaml").write_text(CONFIG.format(
                port=port, accounts=upstreams["accounts"][1], extauthz=extauthz_port, issuer=ACME.issuer,
                audience=ACME.audience, jwks=json.dumps(ACME.jwks()), legacy=LEGACY, endpoint=idp.url))
            with running_gateway(routes, port, upstreams) as gateway:
                extauthz = start_xds_service("extauthz", gateway.plane, extauthz_port, "extauthz-introspection",
                                             "--redis", redis_url)
                try:
                    gateway.envoys[0].proc.wait_port(port)
                    yield Setup(port, idp, redis_url, routes / "introspection-secret", extauthz)
                finally:
                    extauthz.stop()
                logged = extauthz.output() + gateway.plane.proc.output()
                assert idp.client_secret not in logged and "opaque-" not in logged  # neither secret nor tokens
    finally:
        redis.stop()


def send(setup: Setup, path: str, token: str, *extra: tuple[str, str]) -> tuple[int, dict[str, str], str]:
    connection = http.client.HTTPConnection("127.0.0.1", setup.port, timeout=5)
    try:
        connection.putrequest("GET", path)
        connection.putheader("authorization", f"Bearer {token}")
        for name, value in extra:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        connection.close()


def eventually(setup: Setup, path: str, token: str, status: int, timeout: float = 20.0) -> tuple[dict[str, str], str]:
    """The services take their config over xDS after starting: wait for the expected status."""
    deadline = time.monotonic() + timeout
    while True:
        got, headers, body = send(setup, path, token)
        if got == status or time.monotonic() > deadline:
            assert got == status, body
            return headers, body
        time.sleep(0.1)


def test_an_active_opaque_token_reaches_the_upstream_with_its_identity(setup: Setup) -> None:
    active(setup.idp, "opaque-active-1")
    eventually(setup, "/legacy/accounts", "opaque-active-1", 200)
    status, _, body = send(setup, "/legacy/accounts", "opaque-active-1", ("x-pavilion-subject", "admin"))
    assert status == 200, body
    seen = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
    assert seen["x-pavilion-subject"] == "user-7"  # the client's spoofed value replaced
    assert seen["x-pavilion-tenant"] == "legacy"
    assert seen["x-client-id"] == "rp-app"


def test_the_answer_is_cached_and_the_call_was_form_post_with_basic_auth(setup: Setup) -> None:
    active(setup.idp, "opaque-cached")
    eventually(setup, "/legacy/x", "opaque-cached", 200)
    calls = [r for r in setup.idp.requests if r["form"].get("token") == "opaque-cached"]
    for _ in range(3):
        assert send(setup, "/legacy/x", "opaque-cached")[0] == 200
    assert [r for r in setup.idp.requests if r["form"].get("token") == "opaque-cached"] == calls
    assert len(calls) == 1
    assert calls[0]["form"]["token_type_hint"] == "access_token"
    assert calls[0]["headers"]["Authorization"].startswith("Basic ")


def test_an_inactive_token_is_401(setup: Setup) -> None:
    active(setup.idp, "opaque-warmup")
    eventually(setup, "/legacy/a", "opaque-warmup", 200)
    status, headers, body = send(setup, "/legacy/a", "opaque-unknown")
    assert (status, json.loads(body)) == (401, {"error": "token_inactive"})
    assert headers["www-authenticate"].startswith('Bearer error="invalid_token"')


def test_route_scopes_apply_and_a_route_without_tenants_uses_the_one_introspecting_tenant(setup: Setup) -> None:
    active(setup.idp, "opaque-noscope", scope="profile")
    _, body = eventually(setup, "/legacy/a", "opaque-noscope", 403)
    assert json.loads(body) == {"error": "missing_scope"}
    active(setup.idp, "opaque-any-route")
    _, body = eventually(setup, "/other", "opaque-any-route", 200)
    assert json.loads(body)["headers"]["x-pavilion-tenant"] == "legacy"
    jwt = ACME.token("ES256")
    assert send(setup, "/other", jwt)[0] == 200  # a JWT of the other tenant: verified locally as before
    assert not any(r["form"].get("token") == jwt for r in setup.idp.requests)


def test_revoking_an_opaque_tokens_jti_refuses_it_though_its_answer_is_cached(setup: Setup) -> None:
    active(setup.idp, "opaque-revoked", jti="op-jti-1")
    eventually(setup, "/legacy/r", "opaque-revoked", 200)
    done = subprocess.run([PAVILION, "revoke", "--redis", setup.redis_url, "--tenant", "legacy", "--issuer", LEGACY,
                           "--jti", "op-jti-1", "--expires", str(int(time.time()) + 600)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    _, body = eventually(setup, "/legacy/r", "opaque-revoked", 401, timeout=5)
    assert json.loads(body) == {"error": "revoked"}
    assert len([r for r in setup.idp.requests if r["form"].get("token") == "opaque-revoked"]) == 1


def test_a_rotated_client_secret_file_is_used_without_a_config_change(setup: Setup) -> None:
    active(setup.idp, "opaque-before-rotation")
    eventually(setup, "/legacy/s", "opaque-before-rotation", 200)
    setup.idp.client_secret = "Zq9 rotated+secret"
    active(setup.idp, "opaque-during-rotation")
    status, _, body = send(setup, "/legacy/s", "opaque-during-rotation")
    assert (status, json.loads(body)) == (503, {"error": "introspection_refused"})  # the file has the old one
    new = setup.secret_file.with_name(".introspection-secret.new")
    new.write_text("Zq9 rotated+secret\n")
    os.replace(new, setup.secret_file)  # a new file in place, as a Secret volume's ..data swap
    active(setup.idp, "opaque-after-rotation")
    eventually(setup, "/legacy/s", "opaque-after-rotation", 200, timeout=10)
    # ext_authz re-read the file itself (a tenant update over xDS would carry only the file's path).
    assert "introspection_secret_reloaded" in setup.extauthz.output()

"""DPoP (RFC 9449) through the real Envoy: control plane, Envoy, ext_authz fed over xDS with its replay store
in a real Redis, an echo upstream. A request with a DPoP-bound token and a fresh proof passes; the same proof
again, a proof for another path, the token as a bearer token and two proofs are refused with their answers. A 200
gives the next nonce. And (without Envoy) `--workers 2` without Redis accept each other's nonces."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc

from extauthz.dpop_nonce import NONCE_WINDOW, Nonces
from extauthz.dpop_replay import NONCE_SECRET_KEY
from extauthz.dpop_sign import key_thumbprint, make_proof
from tests.extauthz.issuer import Issuer
from tests.integration.extauthz_stack import start_extauthz
from tests.integration.gateway_procs import running_gateway, start_upstreams, start_xds_service
from tests.procs import free_port, start_redis

pytestmark = pytest.mark.integration

ACME = Issuer(algs=("ES256",))
APP = "https://app.acme.test"
NONCED = "https://idp.nonced.test"
CLIENT = ec.generate_private_key(ec.SECP256R1())

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
    dpop: {{required: true, max_age: 30s, algorithms: [ES256]}}
  - id: nonced
    issuer: {nonced_issuer}
    audiences: [{audience}]
    algorithms: [ES256]
    jwks: {{inline: {jwks}}}
    dpop: {{nonce: true}}
routes:
  - name: accounts
    match: {{prefix: /}}
    service: accounts
    cors:
      allow_origins: [{app}]
      allow_headers: [authorization, dpop]
      expose_headers: [www-authenticate, dpop-nonce]
"""


@dataclass
class Setup:
    port: int
    redis_port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    routes = tmp_path_factory.mktemp("routes")
    port, extauthz_port = free_port(), free_port()
    upstreams = start_upstreams({"accounts": "eu-west"})
    (routes / "gateway.yaml").write_text(CONFIG.format(
        port=port, accounts=upstreams["accounts"][1], extauthz=extauthz_port, issuer=ACME.issuer,
        audience=ACME.audience, jwks=json.dumps(ACME.jwks()), nonced_issuer=NONCED, app=APP))
    redis, redis_port = start_redis()
    try:
        with running_gateway(routes, port, upstreams) as gateway:
            extauthz = start_xds_service("extauthz", gateway.plane, extauthz_port, "extauthz-dpop",
                                         "--redis", f"redis://127.0.0.1:{redis_port}/0")
            try:
                gateway.envoys[0].proc.wait_port(port)
                yield Setup(port, redis_port)
            finally:
                extauthz.stop()
    finally:
        redis.stop()


def send(setup: Setup, path: str, headers: list[tuple[str, str]],
         method: str = "GET") -> tuple[int, dict[str, str], str]:
    """(status, lower-cased headers, body) of one request on a new connection; headers may repeat."""
    connection = http.client.HTTPConnection("127.0.0.1", setup.port, timeout=5)
    try:
        connection.putrequest(method, path)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        connection.close()


def dpop(setup: Setup, token: str, path: str = "/accounts", proof_path: str | None = None,
         method: str = "GET") -> tuple[str, tuple[int, dict[str, str], str]]:
    """A request with a new proof for `proof_path` (default: the request's own path); (proof, answer)."""
    proof = make_proof(CLIENT, method=method, url=setup.url(proof_path or path.partition("?")[0]),
                       access_token=token)
    return proof, send(setup, path, [("authorization", f"DPoP {token}"), ("dpop", proof)], method)


def eventually_ok(setup: Setup, token: str, timeout: float = 20.0) -> None:
    """The services take their config over xDS after starting: wait for the first 200."""
    deadline = time.monotonic() + timeout
    while True:
        _, (status, _, body) = dpop(setup, token)
        if status == 200 or time.monotonic() > deadline:
            assert status == 200, body
            return
        time.sleep(0.1)


def test_a_fresh_proof_passes_and_its_replay_is_refused(setup: Setup) -> None:
    token = ACME.token("ES256", jti="envoy-1", cnf={"jkt": key_thumbprint(CLIENT)})
    eventually_ok(setup, token)
    proof, (status, _, body) = dpop(setup, token, "/accounts?page=2")  # the query is not part of htu
    assert status == 200, body
    assert json.loads(body)["name"] == "accounts"
    status, headers, body = send(setup, "/accounts?page=2", [("authorization", f"DPoP {token}"), ("dpop", proof)])
    assert (status, json.loads(body)) == (401, {"error": "dpop_replayed"})
    assert headers["www-authenticate"].startswith('DPoP error="invalid_dpop_proof"')
    assert 'algs="ES256"' in headers["www-authenticate"]


def test_a_proof_for_another_path_or_method_is_refused(setup: Setup) -> None:
    token = ACME.token("ES256", jti="envoy-2", cnf={"jkt": key_thumbprint(CLIENT)})
    eventually_ok(setup, token)
    _, (status, _, body) = dpop(setup, token, "/accounts/admin", proof_path="/accounts")
    assert (status, json.loads(body)) == (401, {"error": "dpop_htu_mismatch"})
    proof = make_proof(CLIENT, method="POST", url=setup.url("/accounts"), access_token=token)
    status, _, body = send(setup, "/accounts", [("authorization", f"DPoP {token}"), ("dpop", proof)])
    assert (status, json.loads(body)) == (401, {"error": "dpop_htm_mismatch"})


def test_bearer_use_and_two_proofs_are_refused(setup: Setup) -> None:
    token = ACME.token("ES256", jti="envoy-3", cnf={"jkt": key_thumbprint(CLIENT)})
    eventually_ok(setup, token)
    status, headers, body = send(setup, "/accounts", [("authorization", f"Bearer {token}")])
    assert (status, json.loads(body)) == (401, {"error": "dpop_bound_bearer"})
    assert headers["www-authenticate"].startswith('DPoP error="invalid_token"')
    unbound = ACME.token("ES256", jti="envoy-4")
    status, _, body = send(setup, "/accounts", [("authorization", f"Bearer {unbound}")])
    assert (status, json.loads(body)) == (401, {"error": "dpop_required"})
    proofs = [make_proof(CLIENT, method="GET", url=setup.url("/accounts"), access_token=token) for _ in range(2)]
    status, _, body = send(setup, "/accounts", [("authorization", f"DPoP {token}"), ("dpop", proofs[0]),
                                                ("dpop", proofs[1])])
    assert (status, json.loads(body)) == (400, {"error": "dpop_multiple_proofs"})


def test_a_nonce_is_given_through_envoy_and_a_proof_carrying_it_passes(setup: Setup) -> None:
    token = ACME.token("ES256", iss=NONCED, jti="envoy-nonce", cnf={"jkt": key_thumbprint(CLIENT)})
    deadline = time.monotonic() + 20
    while True:  # as eventually_ok: wait for the tenants over xDS
        _, (status, headers, body) = dpop(setup, token)
        if (status == 401 and "dpop-nonce" in headers) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (status, json.loads(body)) == (401, {"error": "dpop_nonce_required"})
    assert headers["www-authenticate"].startswith('DPoP error="use_dpop_nonce"')
    proof = make_proof(CLIENT, method="GET", url=setup.url("/accounts"), access_token=token,
                       claims={"nonce": headers["dpop-nonce"]})
    status, _, body = send(setup, "/accounts", [("authorization", f"DPoP {token}"), ("dpop", proof)])
    assert status == 200, body


def test_a_200_gives_the_next_nonce_and_a_proof_carrying_it_passes_without_a_401(setup: Setup) -> None:
    """A proof with the previous window's nonce (made here from the replicas' secret in Redis, rather than
    waiting a minute) passes, and its 200 carries the current nonce, readable by a browser's script through
    CORS `expose_headers`; the next proof signs that one and passes with no 401 in between."""
    token = ACME.token("ES256", iss=NONCED, jti="envoy-nonce-200", cnf={"jkt": key_thumbprint(CLIENT)})
    deadline = time.monotonic() + 20
    while True:  # the tenants over xDS, and the nonce secret written to Redis by the first nonce check
        _, (status, headers, body) = dpop(setup, token)
        if (status == 401 and "dpop-nonce" in headers) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "dpop-nonce" in headers, body
    client = redis.Redis(port=setup.redis_port, decode_responses=True)
    try:
        stored = client.get(NONCE_SECRET_KEY)
        assert isinstance(stored, str)
        secret = bytes.fromhex(stored)
    finally:
        client.close()

    def with_nonce(nonce: str) -> tuple[int, dict[str, str], str]:
        proof = make_proof(CLIENT, method="GET", url=setup.url("/accounts"), access_token=token,
                           claims={"nonce": nonce})
        return send(setup, "/accounts", [("authorization", f"DPoP {token}"), ("dpop", proof), ("origin", APP)])

    for _ in range(3):  # again if a window ends between making the nonce and Envoy's check
        window = int(time.time() // NONCE_WINDOW)
        previous = Nonces(secret, lambda: time.time() - NONCE_WINDOW).current()
        status, headers, body = with_nonce(previous)
        if int(time.time() // NONCE_WINDOW) == window:
            break
    assert status == 200, body
    given = headers.get("dpop-nonce")
    assert given == Nonces(secret).current() or int(time.time() // NONCE_WINDOW) != window
    assert given is not None and given != previous
    assert "dpop-nonce" in headers["access-control-expose-headers"].lower()
    status, headers, body = with_nonce(given)
    assert status == 200, body
    if int(time.time() // NONCE_WINDOW) == window:
        assert "dpop-nonce" not in headers  # the proof had the current one: nothing new to give


def test_workers_without_redis_accept_each_others_nonces(tmp_path: Path) -> None:
    """`pavilion extauthz --workers 2` with no Redis (asked directly, no Envoy): a nonce one worker gives is
    accepted by the other, whose secret comes from the same file in the workers' directory."""
    config = tmp_path / "tenants.yaml"
    config.write_text(f"""tenants:
  - id: nonced
    issuer: {NONCED}
    audiences: [{ACME.audience}]
    algorithms: [ES256]
    jwks: {{inline: {json.dumps(ACME.jwks())}}}
    dpop: {{nonce: true}}
""")
    proc, port = start_extauthz(config, workers=2)
    token = ACME.token("ES256", iss=NONCED, jti="workers-nonce", cnf={"jkt": key_thumbprint(CLIENT)})
    url = "https://api.acme.test/accounts"

    def check(nonce: str | None) -> external_auth_pb2.CheckResponse:
        proof = make_proof(CLIENT, method="GET", url=url, access_token=token,
                           claims={} if nonce is None else {"nonce": nonce})
        attributes = attribute_context_pb2.AttributeContext(request=attribute_context_pb2.AttributeContext.Request(
            http=attribute_context_pb2.AttributeContext.HttpRequest(
                method="GET", scheme="https", host="api.acme.test", path="/accounts",
                headers={"authorization": f"DPoP {token}", "dpop": proof})))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # a fresh connection: either worker
            response: external_auth_pb2.CheckResponse = external_auth_pb2_grpc.AuthorizationStub(channel).Check(
                external_auth_pb2.CheckRequest(attributes=attributes), timeout=5)
        return response

    try:
        first = check(None)
        assert first.denied_response.status.code == 401
        nonce = {h.header.key: h.header.value for h in first.denied_response.headers}["dpop-nonce"]
        answers = [check(nonce) for _ in range(16)]  # spread by the kernel over both workers
        refused = [{h.header.key: h.header.value for h in a.denied_response.headers}.get("www-authenticate")
                   for a in answers if a.status.code != 0]
        assert refused == []
    finally:
        proc.stop()

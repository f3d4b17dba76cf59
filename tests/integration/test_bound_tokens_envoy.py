"""Certificate-bound tokens (RFC 8705) through the real Envoy: a listener that verifies client certificates
hands each one to ext_authz (`include_peer_certificate`, set by the control plane), and ext_authz lets a
bound token through only with the certificate it is bound to. Control plane, Envoy, ext_authz fed over
xDS, an echo upstream: all real processes."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from extauthz.cert_binding import pem_thumbprint
from tests.controlplane.certs import Ca, cert_pem, make_ca, write_pair
from tests.extauthz.issuer import Issuer
from tests.integration.gateway_procs import running_gateway, start_upstreams, start_xds_service
from tests.procs import free_port

pytestmark = pytest.mark.integration

ACME = Issuer(algs=("ES256",))

CONFIG = """regions: [eu-west]
listeners:
  - name: partners
    address: 127.0.0.1
    port: {port}
    tls:
      certificate: {certs}/edge.pem
      key: {certs}/edge-key.pem
      client_ca: {certs}/rp-ca.pem
      require_client_certificate: true
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
routes:
  - {{name: accounts, match: {{prefix: /}}, service: accounts}}
"""


@dataclass
class Setup:
    port: int
    edge_ca: Ca
    clients: dict[str, tuple[Path, Path]]  # name -> (certificate, key) files
    thumbprints: dict[str, str]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    certs, routes = tmp_path_factory.mktemp("certs"), tmp_path_factory.mktemp("routes")
    edge_ca, rp_ca = make_ca("Edge CA"), make_ca("Relying Party CA")
    write_pair(certs, *edge_ca.issue("edge"))
    (certs / "rp-ca.pem").write_bytes(rp_ca.pem)
    clients, thumbprints = {}, {}
    for name in ("rp-one", "rp-two"):
        cert, key = rp_ca.issue(name, server=False)
        clients[name] = write_pair(certs, cert, key, stem=name)
        thumbprints[name] = pem_thumbprint(cert_pem(cert))
    port, extauthz_port = free_port(), free_port()
    upstreams = start_upstreams({"accounts": "eu-west"})
    (routes / "gateway.yaml").write_text(CONFIG.format(
        port=port, certs=certs, accounts=upstreams["accounts"][1], extauthz=extauthz_port, issuer=ACME.issuer,
        audience=ACME.audience, jwks=json.dumps(ACME.jwks())))
    with running_gateway(routes, port, upstreams) as gateway:
        extauthz = start_xds_service("extauthz", gateway.plane, extauthz_port, "extauthz-test")
        try:
            gateway.envoys[0].proc.wait_port(port)
            yield Setup(port, edge_ca, clients, thumbprints)
        finally:
            extauthz.stop()


def get(setup: Setup, client: str, token: str) -> tuple[int, str]:
    """(status, body) of one request with `client`'s certificate and `token`, on a new connection."""
    context = ssl.create_default_context(cadata=setup.edge_ca.pem.decode())
    context.load_cert_chain(*setup.clients[client])
    connection = http.client.HTTPSConnection("localhost", setup.port, context=context, timeout=5)
    try:
        connection.request("GET", "/accounts", headers={"authorization": f"Bearer {token}"})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def eventually(setup: Setup, client: str, token: str, status: int, timeout: float = 20.0) -> str:
    """The body once the answer is `status` (the services take their config over xDS after starting)."""
    deadline = time.monotonic() + timeout
    while True:
        got, body = get(setup, client, token)
        if got == status or time.monotonic() > deadline:
            assert got == status, body
            return body
        time.sleep(0.1)


def test_a_bound_token_passes_only_with_the_certificate_it_is_bound_to(setup: Setup) -> None:
    token = ACME.token("ES256", jti="bound", cnf={"x5t#S256": setup.thumbprints["rp-one"]})
    eventually(setup, "rp-one", token, 200)
    status, body = get(setup, "rp-two", token)  # a certificate the listener trusts, but not the token's
    assert (status, json.loads(body)) == (401, {"error": "certificate_mismatch"})
    assert get(setup, "rp-one", token)[0] == 200  # cached now: still checked per connection's certificate


def test_an_unbound_token_passes_with_any_trusted_certificate(setup: Setup) -> None:
    token = ACME.token("ES256", jti="free")
    eventually(setup, "rp-two", token, 200)
    assert get(setup, "rp-one", token)[0] == 200

"""Routes that admit only some client certificates, with the real control plane, Envoy and
`pavilion extauthz`, over a listener that verifies client certificates (mTLS, certificates optional):
Envoy's RBAC filter admits the named SPIFFE IDs and DNS names, refuses every other trusted certificate
with a 403 before ext_authz is asked, and leaves routes without the requirement alone; a route asking
for a certificate and a token needs both. `envoy --mode validate` accepts the translated config, and
refuses a broken per-route policy (so it does read them)."""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from controlplane.config.load import load_config
from controlplane.config.model import ClientCertificate, RouteAuth
from controlplane.envoy_check import check_with_envoy
from tests.controlplane.certs import Ca, make_ca, write_pair
from tests.extauthz.issuer import Issuer
from tests.integration.gateway_procs import running_gateway, start_upstreams, start_xds_service
from tests.procs import ENVOY, free_port

pytestmark = pytest.mark.integration

ACME = Issuer(algs=("ES256",))
BILLING = "spiffe://pavilion.example/ns/partners/sa/billing"
REPORTS = "spiffe://pavilion.example/ns/partners/sa/reports"

CONFIG = """regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: {https}
    tls: {{certificate: {certs}/edge.pem, key: {certs}/edge-key.pem, client_ca: {certs}/clients-ca.pem}}
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
  - name: billing
    match: {{prefix: /billing}}
    service: accounts
    auth: {{client_certificates: [{billing}], token: false}}
  - name: ops
    match: {{prefix: /ops}}
    service: accounts
    auth: {{client_certificates: ["spiffe://pavilion.example/ns/ops/*", "*.clients.example"], token: false}}
  - name: both
    match: {{prefix: /both}}
    service: accounts
    auth: {{tenants: [acme], client_certificates: [{billing}]}}
  - name: open
    match: {{prefix: /open}}
    service: accounts
    auth: none
"""


@dataclass
class Setup:
    https: int
    server_ca: Ca
    clients: Path  # client certificate files, `<name>.pem` and `<name>-key.pem`
    envoy_admin: int

    def stat(self, name: str) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.envoy_admin}/stats?filter=^{name}$",
                                    timeout=5) as response:
            lines = response.read().decode().splitlines()
        values = [int(line.split(": ", 1)[1]) for line in lines if line.startswith(f"{name}: ")]
        return values[0] if values else 0

    def checks(self) -> int:
        """Requests Envoy has sent to ext_authz (its gRPC cluster)."""
        return self.stat("cluster.extauthz.upstream_rq_total")

    def forwarded(self) -> int:
        return self.stat("cluster.accounts.upstream_rq_total")

    def get(self, path: str, client: str | None, token: str | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        """(status, lower-cased headers, body) of a GET over TLS, showing `client`'s certificate (None: none)."""
        context = ssl.create_default_context(cadata=self.server_ca.pem.decode())
        if client is not None:
            context.load_cert_chain(self.clients / f"{client}.pem", self.clients / f"{client}-key.pem")
        connection = http.client.HTTPSConnection("localhost", self.https, context=context, timeout=5)
        try:
            sent = {"authorization": f"Bearer {token}"} if token else {}
            connection.request("GET", path, headers=sent | (headers or {}))
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
        finally:
            connection.close()


def _client_certificates(directory: Path, ca: Ca) -> None:
    """Every one signed by the listener's client CA: Envoy verifies them all, RBAC tells them apart."""
    issued = {
        "billing": ca.issue("billing", server=False, uris=(BILLING,)),
        "reports": ca.issue("reports", server=False, uris=(REPORTS,)),
        # The billing SPIFFE ID as the subject's common name, in no SAN.
        "subject-only": ca.issue(BILLING, server=False),
        "deployer": ca.issue("deployer", server=False, uris=("spiffe://pavilion.example/ns/ops/sa/deployer",)),
        "agent": ca.issue("agent", server=False, client_dns_names=("agent.clients.example",)),
        "deep": ca.issue("deep", server=False, client_dns_names=("a.b.clients.example",)),
        "wildcard": ca.issue("wildcard", server=False, client_dns_names=("*.clients.example",)),
        # Names that Envoy's `authenticated.principal_name` would admit for `*.clients.example`: it tries
        # URI SANs, then DNS SANs, then the subject text (`CN=agent.clients.example`) with one matcher.
        "uri-named": ca.issue("uri-named", server=False, uris=("agent.clients.example",)),
        "cn-only": ca.issue("agent.clients.example", server=False),
    }
    for name, (cert, key) in issued.items():
        write_pair(directory, cert, key, stem=name)


@pytest.fixture(scope="module", params=[False, True], ids=["sotw", "delta"])
def setup(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Setup]:
    """The whole stack, with an Envoy on State of the World ADS, then one on Delta ADS (virtual hosts,
    and so the routes' RBAC policies, over VHDS)."""
    certs, routes = tmp_path_factory.mktemp("certs"), tmp_path_factory.mktemp("routes")
    server_ca, clients_ca = make_ca("Edge CA"), make_ca("Partners CA")
    write_pair(certs, *server_ca.issue("localhost"))
    (certs / "clients-ca.pem").write_bytes(clients_ca.pem)
    _client_certificates(certs, clients_ca)
    https, extauthz_port = free_port(), free_port()
    upstreams = start_upstreams({"accounts": "eu-west"})
    (routes / "gateway.yaml").write_text(CONFIG.format(
        https=https, certs=certs, accounts=upstreams["accounts"][1], extauthz=extauthz_port, billing=BILLING,
        issuer=ACME.issuer, audience=ACME.audience, jwks=json.dumps(ACME.jwks())))
    with running_gateway(routes, https, upstreams, delta=request.param) as gateway:
        extauthz = start_xds_service("extauthz", gateway.plane, extauthz_port, "extauthz-mtls")
        try:
            result = Setup(https, server_ca, certs, gateway.envoys[0].admin_port)
            _wait_for_tenants(result)
            yield result
        finally:
            extauthz.stop()


def _wait_for_tenants(setup: Setup, timeout: float = 20.0) -> None:
    """ext_authz takes its tenants over xDS after starting: wait for the first 200 with a token."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = setup.get("/both", "billing", ACME.token("ES256"))
        if status == 200 or time.monotonic() > deadline:
            assert status == 200, body
            return
        time.sleep(0.1)


def test_the_translated_config_passes_envoy_validate(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    ca = make_ca()
    write_pair(certs, *ca.issue("localhost"))
    (certs / "clients-ca.pem").write_bytes(ca.pem)
    (tmp_path / "gateway.yaml").write_text(CONFIG.format(
        https=free_port(), certs=certs, accounts=9001, extauthz=9191, billing=BILLING, issuer=ACME.issuer,
        audience=ACME.audience, jwks=json.dumps(ACME.jwks())))
    config = load_config(tmp_path)
    assert check_with_envoy(config, ENVOY) == []
    # Envoy does read the per-route policies: one it cannot compile (an RE2 syntax error, put in behind
    # the loader's back) is refused, and named by its route.
    broken = RouteAuth(client_certificates=(ClientCertificate("dns", "a(b.example"),), token=False)
    routes = tuple(replace(r, auth=broken) if r.name == "ops" else r for r in config.routes)
    problems = check_with_envoy(replace(config, routes=routes), ENVOY)
    assert len(problems) == 1 and ": routes.ops: envoy: " in problems[0], problems


def test_the_named_spiffe_id_is_admitted_and_another_trusted_certificate_refused(setup: Setup) -> None:
    checks, forwarded, denied = setup.checks(), setup.forwarded(), setup.stat("http.public.rbac.denied")
    # A client's own x-forwarded-client-cert does not reach the service (Envoy sanitizes it).
    status, _, body = setup.get("/billing/invoices", "billing", headers={"x-forwarded-client-cert": "By=spoofed"})
    assert status == 200, body
    assert "x-forwarded-client-cert" not in json.loads(body)["headers"]
    assert setup.forwarded() == forwarded + 1
    for client in ("reports", "subject-only", "deployer", None):
        status, headers, body = setup.get("/billing/invoices", client)
        assert (status, body) == (403, "RBAC: access denied"), client
        assert headers["content-type"] == "text/plain" and "www-authenticate" not in headers
    # Neither ext_authz (token: false) nor the service saw the refused ones.
    assert (setup.checks(), setup.forwarded()) == (checks, forwarded + 1)
    # Counted where operators look for refusals (docs/route-yaml.md, "Client certificates").
    assert setup.stat("http.public.rbac.denied") == denied + 4


def test_a_spiffe_prefix_and_a_dns_wildcard(setup: Setup) -> None:
    for client in ("deployer", "agent"):
        status, _, body = setup.get("/ops/deploy", client)
        assert status == 200, (client, body)
    # One label only in place of `*`; a certificate's own wildcard SAN is not a name; billing is not under
    # ops/; the DNS name as a URI SAN or as the subject only is not a DNS SAN.
    for client in ("deep", "wildcard", "billing", "uri-named", "cn-only"):
        assert setup.get("/ops/deploy", client)[0] == 403, client


def test_a_route_without_the_requirement_admits_every_client(setup: Setup) -> None:
    for client in ("billing", "reports", None):
        status, _, body = setup.get("/open/status", client)
        assert status == 200, (client, body)


def test_certificate_and_token_are_both_needed_and_a_refused_certificate_costs_no_token_check(setup: Setup) -> None:
    token = ACME.token("ES256")
    checks = setup.checks()
    # The wrong certificate, or none, with a good token: Envoy refuses before asking ext_authz.
    for client in ("reports", None):
        status, _, body = setup.get("/both/x", client, token)
        assert (status, body) == (403, "RBAC: access denied"), client
    assert setup.checks() == checks
    # The right certificate without a token: ext_authz asks for one.
    status, headers, _ = setup.get("/both/x", "billing")
    assert status == 401 and "www-authenticate" in headers
    assert setup.checks() == checks + 1
    # Both: through, with the identity ext_authz found in the token.
    status, _, body = setup.get("/both/x", "billing", token)
    assert status == 200, body
    assert json.loads(body)["headers"]["x-pavilion-tenant"] == "acme"
    assert setup.checks() == checks + 2


RELOADED = """listeners:
  - name: public
    address: 127.0.0.1
    port: {https}
    tls: {{certificate: {certs}/edge.pem, key: {certs}/edge-key.pem, client_ca: {certs}/clients-ca.pem}}
regions: [eu-west]
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:{accounts}, region: eu-west}}]
routes:
  - name: partners
    match: {{prefix: /v1/partners}}
    service: accounts
{auth}"""


def test_client_certificates_added_to_and_removed_from_a_running_gateway(tmp_path: Path) -> None:
    """The first route with client certificates adds the RBAC filter to the Listener, its removal takes it
    away: both live edits of the directory, and the other clients are refused only in between."""
    certs, routes = tmp_path / "certs", tmp_path / "routes"
    routes.mkdir()
    server_ca, clients_ca = make_ca("Edge CA"), make_ca("Partners CA")
    write_pair(certs, *server_ca.issue("localhost"))
    (certs / "clients-ca.pem").write_bytes(clients_ca.pem)
    _client_certificates(certs, clients_ca)
    https = free_port()
    upstreams = start_upstreams({"accounts": "eu-west"})
    config = routes / "gateway.yaml"

    def write(auth: str) -> None:
        config.write_text(RELOADED.format(https=https, certs=certs, accounts=upstreams["accounts"][1], auth=auth))

    write("")
    with running_gateway(routes, https, upstreams) as gateway:
        setup = Setup(https, server_ca, certs, gateway.envoys[0].admin_port)

        def statuses() -> tuple[int, int]:
            return setup.get("/v1/partners", "billing")[0], setup.get("/v1/partners", "reports")[0]

        gateway.plane.wait_current(1)
        assert statuses() == (200, 200)
        write(f"    auth: {{client_certificates: [{BILLING}], token: false}}\n")
        gateway.plane.wait_current(1)
        gateway.envoys[0].proc.wait_until(lambda: statuses() == (200, 403), 10, "refusing other certificates")
        write("")
        gateway.plane.wait_current(1)
        gateway.envoys[0].proc.wait_until(lambda: statuses() == (200, 200), 10, "admitting every client again")

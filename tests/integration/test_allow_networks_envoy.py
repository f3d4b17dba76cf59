"""`allow_networks` through the real control plane and Envoy. Clients on loopback come from 127.0.0.1 or
127.0.0.2 (the client socket is bound to it), so `127.0.0.1/32` admits one and refuses the other: 403 from
Envoy's RBAC filter, before ext_authz is asked (the fake one records every check) and before the service.
A listener's networks hold for all of its requests, a route's only narrow them, CORS preflights are still
answered, client certificates and networks are both needed, and behind `client_address: {trusted_hops: 1}`
the X-Forwarded-For client decides, not the TCP peer. The access log says RBAC refused."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.config.load import load_config
from controlplane.envoy_check import check_with_envoy
from tests.controlplane.certs import make_ca, write_pair
from tests.integration.client_address_peers import Answer, RecordingAuthz, ask
from tests.integration.gateway_procs import Gateway, running_gateway, start_upstreams
from tests.integration.test_client_address_envoy import Stack as LogReader
from tests.procs import ENVOY, free_port

pytestmark = pytest.mark.integration

HERE, ELSEWHERE = "127.0.0.1", "127.0.0.2"
BILLING = "spiffe://pavilion.example/ns/partners/sa/billing"

CONFIG = """regions: [eu-west]
listeners:
  - {{name: edge, address: 127.0.0.1, port: {edge}}}
  - {{name: internal, address: 127.0.0.1, port: {internal}, allow_networks: [127.0.0.1, '::1']}}
  - {{name: hops, address: 127.0.0.1, port: {hops}, client_address: {{trusted_hops: 1}},
     allow_networks: [203.0.113.0/24, 198.51.100.0/24]}}
  - name: mtls
    address: 127.0.0.1
    port: {mtls}
    tls: {{certificate: {certs}/edge.pem, key: {certs}/edge-key.pem, client_ca: {certs}/ca.pem}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:{accounts}, region: eu-west}}]
  - name: extauthz
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:{extauthz}, region: eu-west}}]
extauthz: {{service: extauthz, timeout: 2s}}
routes:
  - name: admin
    listener: edge
    match: {{prefix: /v1/admin}}
    service: accounts
    allow_networks: [127.0.0.1/32, '2001:db8::/32']
    cors: {{allow_origins: [https://app.example.com], allow_methods: [GET, DELETE]}}
  - {{name: edge-open, listener: edge, match: {{prefix: /}}, service: accounts}}
  - {{name: internal-open, listener: internal, match: {{prefix: /v1/open}}, service: accounts, auth: none}}
  - {{name: internal-wide, listener: internal, match: {{prefix: /v1/wide}}, service: accounts, auth: none,
     allow_networks: [127.0.0.0/8]}}
  - {{name: hops-admin, listener: hops, match: {{prefix: /v1/admin}}, service: accounts, auth: none,
     allow_networks: [203.0.113.0/24]}}
  - {{name: hops-open, listener: hops, match: {{prefix: /}}, service: accounts, auth: none}}
  - name: partners
    listener: mtls
    match: {{prefix: /v1/partners}}
    service: accounts
    auth: {{client_certificates: ['{billing}'], token: false}}
    allow_networks: [127.0.0.1/32]
"""


@dataclass
class Setup:
    gateway: Gateway
    ports: dict[str, int]
    authz: RecordingAuthz
    server_only: ssl.SSLContext  # trusts Envoy's certificate, shows none
    billing: ssl.SSLContext  # shows the billing client certificate

    def log(self, answers: list[Answer]) -> list[dict[str, object]]:
        return LogReader(self.gateway, self.ports, self.authz, self.server_only).log_lines(answers)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    routes, certs = tmp_path_factory.mktemp("routes"), tmp_path_factory.mktemp("certs")
    ca = make_ca()
    write_pair(certs, *ca.issue("localhost"))
    (certs / "ca.pem").write_bytes(ca.pem)
    client, client_key = write_pair(certs, *ca.issue("billing", server=False, uris=(BILLING,)), stem="billing")
    ports = {name: free_port() for name in ("edge", "internal", "hops", "mtls", "extauthz")}
    upstreams = start_upstreams({"accounts": "eu-west"})
    (routes / "gateway.yaml").write_text(CONFIG.format(accounts=upstreams["accounts"][1], certs=certs,
                                                       billing=BILLING, **ports))
    # What the control plane serves, Envoy itself accepts (`envoy --mode validate`): remote_ip principals,
    # IPv6 ranges, and_ids with the mtls_authenticated principal.
    assert check_with_envoy(load_config(routes), ENVOY) == []
    authz = RecordingAuthz(ports["extauthz"]).start()
    try:
        with running_gateway(routes, ports["edge"], upstreams) as gateway:
            for name in ("internal", "hops", "mtls"):
                gateway.envoys[0].proc.wait_port(ports[name])
            server_only = ssl.create_default_context(cadata=ca.pem.decode())
            billing = ssl.create_default_context(cadata=ca.pem.decode())
            billing.load_cert_chain(client, client_key)
            yield Setup(gateway, ports, authz, server_only, billing)
    finally:
        authz.stop()


def test_a_route_admits_its_network_and_refuses_others_before_ext_authz(setup: Setup) -> None:
    refused = ask(setup.ports["edge"], "/v1/admin/users", source=ELSEWHERE)
    assert refused.status == 403
    assert refused.body == "RBAC: access denied"
    admitted = ask(setup.ports["edge"], "/v1/admin/users", source=HERE)
    assert admitted.status == 200, admitted.body
    # Only the admitted request cost a token check; the refused one never reached ext_authz.
    assert setup.authz.sources("/v1/admin/users") == [HERE]
    # The listener's other routes are open to both.
    assert ask(setup.ports["edge"], "/v1/other", source=ELSEWHERE).status == 200


def test_a_refusal_is_logged_as_rbacs(setup: Setup) -> None:
    refused = ask(setup.ports["edge"], "/v1/admin/logged", source=ELSEWHERE)
    admitted = ask(setup.ports["edge"], "/v1/admin/logged", source=HERE)
    refused_line, admitted_line = setup.log([refused, admitted])
    assert refused_line["status"] == 403
    assert refused_line["details"] == "rbac_access_denied_matched_policy[none]"
    assert str(refused_line["client_address"]).startswith(ELSEWHERE + ":")
    assert refused_line["upstream_host"] is None
    assert admitted_line["status"] == 200 and admitted_line["details"] == "via_upstream"


def test_a_preflight_from_elsewhere_is_still_answered(setup: Setup) -> None:
    """CORS runs before RBAC: a preflight reveals only the route's CORS policy and calls no service; the
    request it announces is refused."""
    origin = {"origin": "https://app.example.com"}
    preflight = ask(setup.ports["edge"], "/v1/admin/users", source=ELSEWHERE, method="OPTIONS",
                    headers={**origin, "access-control-request-method": "DELETE"})
    assert preflight.status == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    actual = ask(setup.ports["edge"], "/v1/admin/users", source=ELSEWHERE, method="DELETE", headers=origin)
    assert actual.status == 403


def test_a_listeners_networks_hold_for_every_request_and_a_route_cannot_widen_them(setup: Setup) -> None:
    port = setup.ports["internal"]
    assert [ask(port, "/v1/open", source=s).status for s in (HERE, ELSEWHERE)] == [200, 403]
    # The route lists 127.0.0.0/8, which holds 127.0.0.2; the listener's 127.0.0.1 still decides.
    assert [ask(port, "/v1/wide", source=s).status for s in (HERE, ELSEWHERE)] == [200, 403]
    # A path no route takes: 404 inside, 403 outside (nothing about the routes is told).
    assert [ask(port, "/nothing", source=s).status for s in (HERE, ELSEWHERE)] == [404, 403]


def test_behind_trusted_hops_the_forwarded_client_decides_not_the_peer(setup: Setup) -> None:
    port = setup.ports["hops"]

    def status(path: str, forwarded: str | None) -> int | None:
        headers = {"x-forwarded-for": forwarded} if forwarded is not None else {}
        return ask(port, path, source=HERE, headers=headers).status

    # Every request comes from the balancer, 127.0.0.1; the entry it appended names the client.
    assert status("/v1/admin/x", "203.0.113.7") == 200
    assert status("/v1/admin/x", "198.51.100.7") == 403  # in the listener's networks, not the route's
    assert status("/v1/x", "198.51.100.7") == 200
    # A client naming an admitted address itself: the balancer's entry, last, is the one that counts.
    assert status("/v1/admin/x", "203.0.113.7, 198.51.100.7") == 403
    assert status("/v1/x", "203.0.113.7, 192.0.2.9") == 403
    # No X-Forwarded-For: the client is the peer, in neither list.
    assert status("/v1/x", None) == 403


def test_client_certificate_and_network_are_both_needed(setup: Setup) -> None:
    port = setup.ports["mtls"]
    assert ask(port, "/v1/partners/a", source=HERE, tls=setup.billing).status == 200
    assert ask(port, "/v1/partners/a", source=ELSEWHERE, tls=setup.billing).status == 403
    assert ask(port, "/v1/partners/a", source=HERE, tls=setup.server_only).status == 403


def test_with_error_responses_the_refusal_is_a_problem(tmp_path: Path) -> None:
    """`error_responses: {format: problem_json}` shapes Envoy's own replies: RBAC's 403 too."""
    port = free_port()
    upstreams = start_upstreams({"accounts": "eu-west"})
    (tmp_path / "gateway.yaml").write_text(f"""regions: [eu-west]
listeners: [{{name: internal, address: 127.0.0.1, port: {port}, allow_networks: [127.0.0.1]}}]
error_responses: {{format: problem_json}}
services: [{{name: accounts, endpoints: [{{address: 127.0.0.1:{upstreams["accounts"][1]}, region: eu-west}}]}}]
routes: [{{name: open, match: {{prefix: /}}, service: accounts, auth: none}}]
""")
    with running_gateway(tmp_path, port, upstreams):
        refused = ask(port, "/v1/x", source=ELSEWHERE)
        assert ask(port, "/v1/x", source=HERE).status == 200
    assert refused.status == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert json.loads(refused.body) == {"type": "about:blank", "title": "Forbidden", "status": 403,
                                        "detail": "RBAC: access denied",
                                        "request_id": refused.headers["x-request-id"]}

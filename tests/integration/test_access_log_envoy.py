"""Access logs through the real Envoy: `envoy --mode validate` accepts every form, and a request sent
through the control plane, ext_authz and Envoy leaves one JSON line on Envoy's stdout naming the path
without its query, the status, the route and the tenant ext_authz found, and never the token."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from controlplane.config.model import AccessLog, ListenerTls
from controlplane.envoy_check import check_with_envoy
from tests.controlplane.certs import cert_pem, key_pem, make_ca
from tests.controlplane.translate.sample import sample_config
from tests.extauthz.issuer import Issuer
from tests.integration.gateway_procs import Gateway, Reply, running_gateway, start_upstreams, start_xds_service
from tests.procs import ENVOY, free_port

pytestmark = pytest.mark.integration

ACME = Issuer(algs=("ES256",))
QUERY_SECRET = "query-secret-4f1d"

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
routes:
  - {{name: open-docs, match: {{prefix: /docs}}, service: accounts, auth: none}}
  - {{name: accounts-api, match: {{prefix: /accounts}}, service: accounts}}
"""


@pytest.mark.parametrize("settings", [
    AccessLog(), AccessLog(format="text", subject=True), AccessLog(path="/dev/null"), None])
def test_envoy_accepts_every_access_log_form(settings: AccessLog | None) -> None:
    ca = make_ca()
    cert, key = ca.issue("edge")
    config = sample_config()
    tls = ListenerTls(cert_pem(cert), key_pem(key), client_ca=ca.pem)
    listeners = (replace(config.listeners[0], tls=tls), *config.listeners[1:])
    assert check_with_envoy(replace(config, listeners=listeners, access_log=settings), ENVOY) == []


@dataclass
class Setup:
    gateway: Gateway


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    routes = tmp_path_factory.mktemp("routes")
    port, extauthz_port = free_port(), free_port()
    upstreams = start_upstreams({"accounts": "eu-west"})
    (routes / "gateway.yaml").write_text(CONFIG.format(
        port=port, accounts=upstreams["accounts"][1], extauthz=extauthz_port, issuer=ACME.issuer,
        audience=ACME.audience, jwks=json.dumps(ACME.jwks())))
    with running_gateway(routes, port, upstreams) as gateway:
        extauthz = start_xds_service("extauthz", gateway.plane, extauthz_port, "extauthz-test")
        try:
            yield Setup(gateway)
        finally:
            extauthz.stop()


def log_lines(setup: Setup) -> list[dict[str, Any]]:
    """Envoy's output lines that are JSON objects: its access log (its own logs are plain text)."""
    lines = []
    for text in setup.gateway.envoys[0].proc.output().splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
    return lines


def line_for(setup: Setup, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The one line of the request whose x-request-id Envoy answered (Envoy writes its log buffered)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in log_lines(setup) if line.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, log_lines(setup)[-5:]
            return found[0]
        time.sleep(0.1)


def eventually(setup: Setup, path: str, headers: dict[str, str], status: int, timeout: float = 20.0) -> Reply:
    """The reply once its status is `status` (ext_authz takes its config over xDS after starting)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = setup.gateway.get(path, headers=headers)
        if reply.status == status or time.monotonic() > deadline:
            assert reply.status == status, reply.body
            return reply
        time.sleep(0.1)


def test_a_line_names_the_path_status_and_route_but_never_the_query_or_the_token(setup: Setup) -> None:
    bearer = ACME.token("ES256", jti="docs")
    reply = eventually(setup, f"/docs/guide?access_token={QUERY_SECRET}&page=2",
                       {"authorization": f"Bearer {bearer}", "user-agent": "access-log-test"}, 200)
    line = line_for(setup, reply.headers["x-request-id"])
    assert line["path"] == "/docs/guide"
    assert line["method"] == "GET"
    assert line["status"] == 200
    assert line["route"] == "open-docs"
    assert line["upstream_cluster"] == "accounts"
    assert line["user_agent"] == "access-log-test"
    assert line["response_flags"] == "-"
    output = setup.gateway.envoys[0].proc.output()
    assert QUERY_SECRET not in output
    assert bearer not in output and bearer.split(".")[2] not in output


def test_a_protected_request_carries_the_tenant_from_ext_authz_and_not_the_subject(setup: Setup) -> None:
    bearer = ACME.token("ES256", jti="accounts", sub="person-7c1e", client_id="billing-app")
    reply = eventually(setup, "/accounts/42", {"authorization": f"Bearer {bearer}"}, 200)
    line = line_for(setup, reply.headers["x-request-id"])
    assert (line["route"], line["status"], line["tenant"], line["client"]) == ("accounts-api", 200, "acme",
                                                                               "billing-app")
    assert "subject" not in line
    output = setup.gateway.envoys[0].proc.output()
    assert "person-7c1e" not in output and bearer not in output


def test_a_refused_request_is_logged_with_its_status_and_no_tenant(setup: Setup) -> None:
    reply = eventually(setup, "/accounts/42?page=2", {"authorization": "Bearer not-a-token"}, 401)
    line = line_for(setup, reply.headers["x-request-id"])
    assert (line["route"], line["status"], line["path"]) == ("accounts-api", 401, "/accounts/42")
    assert line["tenant"] is None
    assert line["details"].startswith("ext_authz")

"""Envoy to Pavilion's ext_authz and ratelimit over mTLS, with the real control plane and the real Envoy.

Both services run with `--tls-cert/--tls-key/--tls-client-ca` (a services CA signs their certificates, a
gateway CA Envoy's client certificate) and take their config over xDS. The route YAML's `extauthz` and
`ratelimit` services have `tls: {ca, server_name, certificate, key}`. A valid token gets 200 and an
invalid one 401 (ext_authz answered over TLS); a fourth request in the hour gets 429 (ratelimit answered
over TLS). The same config without the client certificate fails closed: 503 (ext_authz's
`failure_mode_allow: false`, `status_on_error: 503`; ratelimit's `failure_mode_deny: true`).
With `--workers 2`, every worker serves TLS.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.configmap import ConfigMapVolume
from tests.controlplane.certs import make_ca, write_pair
from tests.extauthz.issuer import Issuer
from tests.integration.gateway_procs import (
    ControlPlane,
    Gateway,
    Reply,
    request,
    running_gateway,
    start_upstreams,
    start_xds_service,
)
from tests.pavilion.test_server_tls import server_files
from tests.procs import PAVILION, Proc, free_port

pytestmark = pytest.mark.integration

ACME = Issuer(algs=("ES256",))
NAMES = {"extauthz": "extauthz.pavilion.internal", "ratelimit": "ratelimit.pavilion.internal"}

CONFIG = """regions: [eu-west]
listeners:
  - {{name: public, address: 127.0.0.1, port: {port}}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:{accounts}, region: eu-west}}]
  - name: extauthz
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:{extauthz}, region: eu-west}}]
    tls: {{ca: {certs}/services-ca.pem, server_name: extauthz.pavilion.internal{extauthz_client}}}
  - name: ratelimit
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:{ratelimit}, region: eu-west}}]
    tls: {{ca: {certs}/services-ca.pem, server_name: ratelimit.pavilion.internal{ratelimit_client}}}
extauthz: {{service: extauthz, timeout: 2s}}
ratelimit: {{service: ratelimit, domain: pavilion, timeout: 2s, failure_mode_deny: true}}
tenants:
  - id: acme
    issuer: {issuer}
    audiences: [{audience}]
    algorithms: [ES256]
    jwks: {{inline: {jwks}}}
routes:
  - {{name: api, match: {{prefix: /api}}, service: accounts, auth: {{tenants: [acme]}}}}
  - {{name: open, match: {{prefix: /open}}, service: accounts, auth: none}}
  - name: limited
    match: {{prefix: /limited}}
    service: accounts
    auth: none
    rate_limits:
      - {{per: client_ip, unit: hour, requests: 3}}
"""
CLIENT = ", certificate: {certs}/gateway.pem, key: {certs}/gateway-key.pem"


@dataclass
class Setup:
    gateway: Gateway
    routes: Path
    values: dict[str, object]

    def apply(self, *, extauthz_client: bool = True, ratelimit_client: bool = True) -> None:
        """Write the config and wait until Envoy and both services acked it."""
        write_config(self.routes, self.values, extauthz_client=extauthz_client, ratelimit_client=ratelimit_client)
        self.gateway.plane.wait_current(nodes=3)

    def get(self, path: str, token: str | None = None) -> Reply:
        return self.gateway.get(path, headers={"authorization": f"Bearer {token}"} if token else None)

    def stat(self, name: str) -> int:
        text = request(f"http://127.0.0.1:{self.gateway.envoys[0].admin_port}/stats?filter=^{re.escape(name)}$").body
        match = re.search(rf"^{re.escape(name)}: (\d+)$", str(text.get("text", "")), re.M)
        return int(match.group(1)) if match else 0


def write_config(routes: Path, values: dict[str, object], *, extauthz_client: bool = True,
                 ratelimit_client: bool = True) -> None:
    """The route YAML; without `*_client`, Envoy shows that service no client certificate."""
    client = CLIENT.format(certs=values["certs"])
    (routes / "gateway.yaml").write_text(CONFIG.format(**values, extauthz_client=client if extauthz_client else "",
                                                       ratelimit_client=client if ratelimit_client else ""))


def issue_certs(certs: Path) -> None:
    services_ca, gateway_ca = make_ca("Pavilion Services CA"), make_ca("Pavilion Gateway CA")
    (certs / "services-ca.pem").write_bytes(services_ca.pem)
    (certs / "gateway-ca.pem").write_bytes(gateway_ca.pem)
    for role, name in NAMES.items():
        write_pair(certs, *services_ca.issue(role, dns_names=(name,)), stem=role)
    write_pair(certs, *gateway_ca.issue("pavilion-gateway", server=False), stem="gateway")


def start_service(role: str, certs: Path, port: int, plane: ControlPlane) -> Proc:
    """ext_authz or ratelimit serving mTLS: its own certificate, and Envoy's from the gateway CA only."""
    return start_xds_service(role, plane, port, f"{role}-tls", "--tls-cert", str(certs / f"{role}.pem"),
                             "--tls-key", str(certs / f"{role}-key.pem"),
                             "--tls-client-ca", str(certs / "gateway-ca.pem"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    routes, certs = tmp_path_factory.mktemp("routes"), tmp_path_factory.mktemp("certs")
    issue_certs(certs)
    port, extauthz_port, ratelimit_port = free_port(), free_port(), free_port()
    upstreams = start_upstreams({"accounts": "eu-west"})
    values: dict[str, object] = {
        "port": port, "accounts": upstreams["accounts"][1], "extauthz": extauthz_port, "ratelimit": ratelimit_port,
        "certs": certs, "issuer": ACME.issuer, "audience": ACME.audience, "jwks": json.dumps(ACME.jwks())}
    write_config(routes, values)
    with running_gateway(routes, port, upstreams) as gateway:
        services = []
        try:
            for role, service_port in (("extauthz", extauthz_port), ("ratelimit", ratelimit_port)):
                services.append(start_service(role, certs, service_port, gateway.plane))
            gateway.plane.wait_current(nodes=3)
            gateway.envoys[0].proc.wait_port(port)
            yield Setup(gateway, routes, values)
        finally:
            for proc in services:
                proc.stop()


def eventually(setup: Setup, path: str, token: str | None, status: int, timeout: float = 15.0) -> Reply:
    """The first answer with `status` (Envoy connects to the services once asked); fails past the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        reply = setup.get(path, token)
        if reply.status == status or time.monotonic() > deadline:
            assert reply.status == status, (reply.status, reply.body)
            return reply
        time.sleep(0.1)


def test_ext_authz_answers_over_mtls_and_fails_closed_without_the_client_certificate(setup: Setup) -> None:
    token = ACME.token("ES256", jti="tls-1")
    assert eventually(setup, "/api/accounts", token, 200).served_by == "accounts"
    bad = setup.get("/api/accounts", ACME.token("ES256", jti="tls-2", aud="someone-else"))
    assert bad.status == 401, bad.body  # ext_authz itself refused it
    assert setup.get("/api/accounts").status == 401
    assert setup.stat("cluster.extauthz.ssl.handshake") >= 1
    errors = setup.stat("http.public.ext_authz.error")
    try:
        setup.apply(extauthz_client=False)
        eventually(setup, "/api/accounts", token, 503)
        assert setup.stat("http.public.ext_authz.error") > errors
        assert setup.get("/open/x").status == 200  # a route without ext_authz: Envoy itself is fine
    finally:
        setup.apply()
    eventually(setup, "/api/accounts", token, 200)


def test_ratelimit_answers_over_mtls_and_fails_closed_without_the_client_certificate(setup: Setup) -> None:
    first = eventually(setup, "/limited/a", None, 200)
    assert first.served_by == "accounts"
    answers = [setup.get("/limited/a").status for _ in range(3)]
    assert answers == [200, 200, 429], answers  # the fourth in the hour; counted by ratelimit over TLS
    assert setup.stat("cluster.ratelimit.ssl.handshake") >= 1
    token = ACME.token("ES256", jti="tls-3")
    try:
        setup.apply(ratelimit_client=False)
        eventually(setup, "/limited/a", None, 503)
        assert setup.get("/api/accounts", token).status == 200  # no rate limit there: ext_authz still answers
    finally:
        setup.apply()
    eventually(setup, "/limited/a", None, 429)


async def health_checks(port: int, credentials: grpc.ChannelCredentials | None, count: int) -> list[str]:
    """The answers to `count` health checks, each on a new connection (SO_REUSEPORT spreads them over the workers)."""
    answers = []
    for _ in range(count):
        options = [("grpc.ssl_target_name_override", NAMES["ratelimit"])]
        channel = (grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options)
                   if credentials is not None else grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        async with channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                answers.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
            except grpc.aio.AioRpcError as exc:
                answers.append(exc.code().name)
    return answers


def worker_pids(admin_port: int) -> set[int]:
    """The live workers the parent's /status lists (pavilion.worker_status)."""
    return {int(worker["pid"]) for worker in request(f"http://127.0.0.1:{admin_port}/status").body.get("workers", [])}


def test_every_worker_serves_tls_and_a_renewed_certificate_without_a_restart(tmp_path: Path) -> None:
    """Two workers, the certificate files in a Secret volume; after kubelet's `..data` swap to a certificate of
    another CA (cert-manager renewed the Secret), every new connection gets the new one, from both workers, in
    the same processes."""
    gateway_ca, old_ca, new_ca = make_ca("Gateway CA"), make_ca("Services CA 2025"), make_ca("Services CA 2026")
    write_pair(tmp_path, *gateway_ca.issue("pavilion-gateway", server=False), stem="gateway")
    site = ConfigMapVolume(tmp_path / "secret", server_files(old_ca, gateway_ca, NAMES["ratelimit"]))
    config = tmp_path / "rules.yaml"
    config.write_text("domain: pavilion\ndescriptors:\n"
                      "  - {key: k, rate_limit: {unit: minute, requests_per_unit: 1}}\n")
    port, admin_port = free_port(), free_port()
    proc = Proc([PAVILION, "--log-format", "console", "ratelimit", "--config", str(config), "--workers", "2",
                 "--port", str(port), "--admin-port", str(admin_port), "--tls-cert", str(site.path("tls.crt")),
                 "--tls-key", str(site.path("tls.key")), "--tls-client-ca", str(site.path("ca.crt"))],
                name="ratelimit-workers")
    with proc:
        proc.wait_until(lambda: proc.output().count("ratelimit_started") >= 2, 30, "two workers serving")
        proc.wait_until(lambda: len(worker_pids(admin_port)) == 2, 30, "two workers on /status")
        pids = worker_pids(admin_port)
        client = ((tmp_path / "gateway-key.pem").read_bytes(), (tmp_path / "gateway.pem").read_bytes())
        # 16 connections: were one of two workers wrong, all 16 landing on the other has odds of 1 in 65,536.
        assert asyncio.run(health_checks(port, grpc.ssl_channel_credentials(old_ca.pem, *client), 16)) == [
            "SERVING"] * 16
        assert asyncio.run(health_checks(port, None, 4)) == ["UNAVAILABLE"] * 4
        no_client = grpc.ssl_channel_credentials(old_ca.pem)
        assert asyncio.run(health_checks(port, no_client, 4)) == ["UNAVAILABLE"] * 4
        site.update(server_files(new_ca, gateway_ca, NAMES["ratelimit"]))
        assert asyncio.run(health_checks(port, grpc.ssl_channel_credentials(new_ca.pem, *client), 16)) == [
            "SERVING"] * 16
        assert asyncio.run(health_checks(port, grpc.ssl_channel_credentials(old_ca.pem, *client), 4)) == [
            "UNAVAILABLE"] * 4
        assert proc.output().count("server_tls_reloaded") >= 2, proc.output()[-3000:]  # one per worker
        assert worker_pids(admin_port) == pids  # the same two processes: nothing restarted

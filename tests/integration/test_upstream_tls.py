"""TLS from Envoy to upstream services with the real control plane and the real Envoy: HTTPS upstreams
on loopback with certificates from a test CA. A host is reached only with the right CA and name; one
that asks for a client certificate only with `certificate`/`key`; a rotated CA file is pushed as a
new Secret to the same Envoy, the cluster untouched."""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controlplane.config.load import load_config
from controlplane.envoy_check import check_with_envoy
from tests.controlplane.certs import Ca, key_pem, make_ca, write_pair
from tests.integration.gateway_procs import Gateway, Reply, running_gateway
from tests.integration.tls_upstream import start_tls_upstream
from tests.procs import ENVOY, Proc, free_port

pytestmark = pytest.mark.integration

# One upstream per kind of host: `plain` (certificate for localhost and 127.0.0.1), `mtls` (the same, and
# it requires a client certificate of the gateway CA), `wild` (a certificate for api.accounts.internal).
SERVICES = {
    "good": ("plain", "{ca: '{certs}/ca.pem', server_name: localhost}"),
    "by-ip": ("plain", "{ca: '{certs}/ca.pem', subject_alt_names: ['127.0.0.1']}"),
    "other-ca": ("plain", "{ca: '{certs}/other-ca.pem', server_name: localhost}"),
    "wrong-name": ("plain", "{ca: '{certs}/ca.pem', server_name: accounts.internal}"),
    "rotating": ("plain", "{ca: '{certs}/rotating-ca.pem', server_name: localhost}"),
    "mtls": ("mtls", "{ca: '{certs}/ca.pem', server_name: localhost, certificate: '{certs}/gateway.pem', "
                     "key: '{certs}/gateway-key.pem'}"),
    "no-client-cert": ("mtls", "{ca: '{certs}/ca.pem', server_name: localhost}"),
    "wildcard": ("wild", "{ca: '{certs}/ca.pem', subject_alt_names: ['*.accounts.internal']}"),
    "wildcard-one-label": ("wild", "{ca: '{certs}/ca.pem', subject_alt_names: ['*.internal']}"),
    "health": ("grpc", "{ca: '{certs}/ca.pem', server_name: localhost}"),
}


@dataclass
class Setup:
    gateway: Gateway
    ca: Ca
    other_ca: Ca
    certs: Path


def config_text(port: int, certs: Path, upstreams: dict[str, int]) -> str:
    lines = ["regions: [eu-west]", "listeners:", f"  - {{name: public, address: 127.0.0.1, port: {port}}}",
             "services:"]
    for name, (upstream, tls) in SERVICES.items():
        lines += [f"  - name: {name}",
                  f"    endpoints: [{{address: 127.0.0.1:{upstreams[upstream]}, region: eu-west}}]",
                  f"    tls: {tls.replace('{certs}', str(certs))}"]
        if name == "good":
            lines.append("    health_check: {path: /healthz, interval: 1s}")
        if name == "health":
            lines.append("    protocol: grpc")
    lines.append("routes:")
    lines += [f"  - {{name: {name}, match: {{prefix: /{name}/}}, service: {name}}}" for name in SERVICES
              if name != "health"]
    lines.append("  - {name: health, match: {prefix: /grpc.health.v1.Health/}, service: health}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    certs = tmp_path_factory.mktemp("certs")
    routes = tmp_path_factory.mktemp("routes")
    ca, other_ca, gateway_ca = make_ca("Internal CA"), make_ca("Other CA"), make_ca("Gateway Client CA")
    (certs / "ca.pem").write_bytes(ca.pem)
    (certs / "other-ca.pem").write_bytes(other_ca.pem)
    (certs / "rotating-ca.pem").write_bytes(other_ca.pem)
    (certs / "gateway-ca.pem").write_bytes(gateway_ca.pem)
    write_pair(certs, *gateway_ca.issue("pavilion-gateway", server=False), stem="gateway")
    plain = write_pair(certs, *ca.issue("accounts"), stem="plain")
    wild = write_pair(certs, *ca.issue("api", dns_names=("api.accounts.internal",)), stem="wild")
    started: list[Proc] = []
    try:
        ports: dict[str, int] = {}
        for name, (cert, key), client_ca in (("plain", plain, None), ("mtls", plain, certs / "gateway-ca.pem"),
                                             ("wild", wild, None), ("grpc", plain, None)):
            proc, ports[name] = start_tls_upstream(name, cert, key, client_ca, grpc=name == "grpc")
            started.append(proc)
        port = free_port()
        (routes / "gateway.yaml").write_text(config_text(port, certs, ports))
        with running_gateway(routes, port, {}) as gateway:
            gateway.plane.wait_synced(1)
            yield Setup(gateway, ca, other_ca, certs)
    finally:
        for proc in started:
            proc.stop()


def envoy_stats(setup: Setup) -> dict[str, str]:
    url = f"http://127.0.0.1:{setup.gateway.envoys[0].admin_port}/stats"
    with urllib.request.urlopen(url, timeout=5) as response:
        lines = response.read().decode().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def get(setup: Setup, service: str) -> Reply:
    return setup.gateway.get(f"/{service}/x")


def test_the_right_ca_and_name_get_through_with_sni(setup: Setup) -> None:
    reply = get(setup, "good")
    assert reply.status == 200, reply.body
    assert reply.body == {"name": "plain", "path": "/good/x", "sni": "localhost", "client": ""}


def test_health_checks_speak_tls_too(setup: Setup) -> None:
    stats = envoy_stats(setup)
    assert int(stats["cluster.good.health_check.success"]) >= 1
    assert stats["cluster.good.health_check.failure"] == "0"


def test_a_grpc_service_over_tls_negotiates_h2(setup: Setup) -> None:
    """The gRPC upstream speaks HTTP/2 only when ALPN chose h2; Envoy offers it for `protocol: grpc`."""
    with grpc.insecure_channel(f"127.0.0.1:{setup.gateway.listen_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert int(envoy_stats(setup)["cluster.health.upstream_cx_http2_total"]) >= 1


def test_an_ip_subject_alt_name_without_sni(setup: Setup) -> None:
    reply = get(setup, "by-ip")
    assert reply.status == 200, reply.body
    assert reply.body["sni"] == ""


def test_a_certificate_of_another_ca_is_refused(setup: Setup) -> None:
    reply = get(setup, "other-ca")
    assert reply.status == 503
    assert int(envoy_stats(setup)["cluster.other-ca.ssl.fail_verify_error"]) >= 1


def test_a_certificate_without_the_name_is_refused(setup: Setup) -> None:
    reply = get(setup, "wrong-name")
    assert reply.status == 503
    stats = envoy_stats(setup)
    assert int(stats["cluster.wrong-name.ssl.fail_verify_san"]) >= 1
    assert stats["cluster.wrong-name.ssl.fail_verify_error"] == "0"  # the CA was right


def test_a_wildcard_stands_for_one_label(setup: Setup) -> None:
    reply = get(setup, "wildcard")
    assert reply.status == 200 and reply.body["name"] == "wild", reply.body
    assert get(setup, "wildcard-one-label").status == 503  # api.accounts.internal is two labels under .internal


def test_an_upstream_requiring_a_client_certificate_gets_the_gateways(setup: Setup) -> None:
    reply = get(setup, "mtls")
    assert reply.status == 200, reply.body
    assert reply.body["client"] == "pavilion-gateway"
    assert get(setup, "no-client-cert").status == 503


def test_a_rotated_ca_is_pushed_to_the_same_envoy_as_a_secret_only(setup: Setup) -> None:
    envoy = setup.gateway.envoys[0]
    pid = envoy.proc.popen.pid
    assert get(setup, "rotating").status == 503  # the CA file holds the other CA
    before = envoy_stats(setup)
    new = setup.certs / ".rotating-ca.pem.new"
    new.write_bytes(setup.other_ca.pem + setup.ca.pem)  # a bundle: the new CA beside the old
    os.replace(new, setup.certs / "rotating-ca.pem")
    deadline = time.monotonic() + 20
    status = 503
    while status != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
        status = get(setup, "rotating").status
    assert status == 200, "the rotated CA was not used within 20 s"
    assert envoy.proc.alive() and envoy.proc.popen.pid == pid
    after = envoy_stats(setup)
    updates = "sds.rotating/upstream-ca.update_success"
    assert int(after[updates]) > int(before[updates])
    assert after["sds.rotating/upstream-ca.update_rejected"] == "0"
    assert after["cluster_manager.cluster_modified"] == before["cluster_manager.cluster_modified"]


def test_a_service_given_tls_while_envoy_runs_is_reached(setup: Setup) -> None:
    """The new cluster warms on its secrets, which must come while its CDS response is still unacked."""
    path = setup.gateway.plane.config_dir / "gateway.yaml"
    tls = SERVICES["good"][1].replace("{certs}", str(setup.certs))
    port = load_config(setup.gateway.plane.config_dir).service("good").endpoints[0].port
    text = path.read_text().replace("routes:\n", (
        f"  - name: late\n    endpoints: [{{address: 127.0.0.1:{port}, region: eu-west}}]\n    tls: {tls}\n"
        "routes:\n  - {name: late, match: {prefix: /late/}, service: late}\n"))
    path.write_text(text)
    deadline = time.monotonic() + 20
    reply = get(setup, "late")
    while reply.status != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        reply = get(setup, "late")
    assert reply.status == 200 and reply.body["name"] == "plain", reply.body
    assert envoy_stats(setup)["sds.late/upstream-ca.update_success"] == "1"


def test_the_client_key_never_shows_in_resources_text(setup: Setup) -> None:
    admin = setup.gateway.plane.admin_port
    url = f"http://127.0.0.1:{admin}/resources?region=eu-west&role=edge&text=1&name=Secret/mtls/client-certificate"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    assert "[private key, sha256 " in text and "BEGIN CERTIFICATE" in text
    assert "PRIVATE KEY" not in text
    assert "PRIVATE KEY" not in setup.gateway.plane.proc.output()


def test_envoy_validate_accepts_upstream_tls_and_checks_the_client_key(setup: Setup) -> None:
    config = load_config(setup.gateway.plane.config_dir)
    assert check_with_envoy(config, ENVOY) == []
    # The secrets are really checked: the key of another certificate is refused by Envoy itself.
    _cert, other_key = setup.ca.issue("other")
    services = tuple(replace(s, tls=replace(s.tls, private_key=key_pem(other_key)))
                     if s.tls is not None and s.name == "mtls" else s for s in config.services)
    problems = check_with_envoy(replace(config, services=services), ENVOY)
    assert len(problems) == 1 and "KEY_VALUES_MISMATCH" in problems[0], problems


def test_an_envoy_on_delta_ads_gets_the_cluster_secrets_too(setup: Setup, tmp_path: Path) -> None:
    config = load_config(setup.gateway.plane.config_dir)
    mtls = SERVICES["mtls"][1].replace("{certs}", str(setup.certs))
    port = free_port()
    (tmp_path / "gateway.yaml").write_text(f"""regions: [eu-west]
listeners:
  - {{name: public, address: 127.0.0.1, port: {port}}}
services:
  - name: mtls
    endpoints: [{{address: 127.0.0.1:{config.service("mtls").endpoints[0].port}, region: eu-west}}]
    tls: {mtls}
routes:
  - {{name: mtls, match: {{prefix: /}}, service: mtls}}
""")
    with running_gateway(tmp_path, port, {}, delta=True) as gateway:
        reply = gateway.get("/via-delta")
        assert reply.status == 200, reply.body
        assert reply.body["client"] == "pavilion-gateway"
        assert gateway.plane.wait_synced(1)["synced"]

"""The ADS stream over mTLS with the real control plane and the real Envoy: an Envoy bootstrapped with
the CA and a client certificate (`pavilion envoy-bootstrap --xds-ca --xds-client-cert/key`) gets its
listener, and the listener's own certificate as an SDS secret over that stream, and serves through it;
an Envoy without a client certificate, or without TLS at all, never syncs."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.bootstrap import XdsTls, render_bootstrap
from tests.controlplane.certs import Ca, make_ca, write_pair
from tests.integration.gateway_procs import ControlPlane, start_upstreams
from tests.procs import ENVOY, PAVILION, Proc, free_port

pytestmark = pytest.mark.integration

CONFIG = """regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: {public}
    tls: {{certificate: {certs}/edge.pem, key: {certs}/edge-key.pem}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:{accounts}, region: eu-west}}]
routes:
  - {{name: accounts, listener: public, match: {{prefix: /}}, service: accounts}}
"""


@dataclass
class Setup:
    plane: ControlPlane
    xds_ca: Ca
    edge_ca: Ca
    certs: Path
    public: int


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    certs = tmp_path_factory.mktemp("certs")
    routes = tmp_path_factory.mktemp("routes")
    xds_ca, edge_ca = make_ca("xDS CA"), make_ca("Edge CA")
    (certs / "xds-ca.pem").write_bytes(xds_ca.pem)
    write_pair(certs, *xds_ca.issue("controlplane"), stem="controlplane")
    write_pair(certs, *xds_ca.issue("edge-good", server=False), stem="edge-client")
    write_pair(certs, *edge_ca.issue("edge"), stem="edge")
    public = free_port()
    upstreams = start_upstreams({"accounts": "eu-west"})
    proc = None
    try:
        (routes / "gateway.yaml").write_text(CONFIG.format(public=public, certs=certs,
                                                           accounts=upstreams["accounts"][1]))
        xds_port, admin_port = free_port(), free_port()
        proc = Proc([PAVILION, "--log-format", "console", "controlplane", "--config", str(routes),
                     "--xds-port", str(xds_port), "--admin-port", str(admin_port),
                     "--xds-tls-cert", str(certs / "controlplane.pem"),
                     "--xds-tls-key", str(certs / "controlplane-key.pem"),
                     "--xds-client-ca", str(certs / "xds-ca.pem")], name="controlplane-tls")
        proc.wait_http(f"http://127.0.0.1:{admin_port}/readyz")
        yield Setup(ControlPlane(proc, xds_port, admin_port, routes), xds_ca, edge_ca, certs, public)
    finally:
        if proc is not None:
            proc.stop()
        for echo, _port in upstreams.values():
            echo.stop()


def start_envoy(setup: Setup, node_id: str, tls: XdsTls | None, directory: Path) -> tuple[Proc, int]:
    admin_port = free_port()
    path = directory / f"{node_id}.yaml"
    path.write_text(render_bootstrap(node_id=node_id, region="eu-west", admin_port=admin_port,
                                     xds_address=f"127.0.0.1:{setup.plane.xds_port}", xds_tls=tls))
    proc = Proc([ENVOY, "-c", str(path), "--disable-hot-restart", "--concurrency", "1", "-l", "warning",
                 "--base-id", str(free_port())], name=f"envoy-{node_id}")
    return proc, admin_port


def stats(admin_port: int) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/stats", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def admin_json(admin_port: int, path: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}{path}", timeout=5) as response:
        return dict(json.loads(response.read()))


def test_envoy_with_the_client_certificate_syncs_and_serves_https(setup: Setup, tmp_path: Path) -> None:
    tls = XdsTls(str(setup.certs / "xds-ca.pem"), client_cert=str(setup.certs / "edge-client.pem"),
                 client_key=str(setup.certs / "edge-client-key.pem"))
    proc, admin_port = start_envoy(setup, "edge-good", tls, tmp_path)
    try:
        proc.wait_http(f"http://127.0.0.1:{admin_port}/ready")
        proc.wait_port(setup.public)
        status = setup.plane.wait_synced(1)
        assert [node["node_id"] for node in status["nodes"]] == ["edge-good"], status
        assert stats(admin_port)["control_plane.connected_state"] == "1"
        assert int(stats(admin_port)["cluster.xds_cluster.ssl.handshake"]) >= 1  # TLS, not plaintext
        # the listener's key came over this stream as an SDS secret: HTTPS verified against its CA
        context = ssl.create_default_context(cadata=setup.edge_ca.pem.decode())
        connection = http.client.HTTPSConnection("localhost", setup.public, context=context, timeout=5)
        try:
            connection.request("GET", "/whoami")
            response = connection.getresponse()
            body = json.loads(response.read())
        finally:
            connection.close()
        assert response.status == 200 and body["name"] == "accounts"
    finally:
        proc.stop()


@pytest.mark.parametrize("client", ["no-client-cert", "plaintext"])
def test_envoy_without_a_client_certificate_never_syncs(setup: Setup, tmp_path: Path, client: str) -> None:
    tls = XdsTls(str(setup.certs / "xds-ca.pem")) if client == "no-client-cert" else None
    proc, admin_port = start_envoy(setup, f"edge-{client}", tls, tmp_path)
    try:
        proc.wait_http(f"http://127.0.0.1:{admin_port}/server_info")
        # the ADS stream tried and failed twice (Envoy retries with backoff)
        proc.wait_until(lambda: int(stats(admin_port).get("cluster.xds_cluster.upstream_rq_5xx", "0")) >= 2,
                        20, "retrying the control plane")
        assert stats(admin_port).get("cluster.xds_cluster.ssl.handshake", "0") == "0"  # refused, or no TLS
        assert all(node["node_id"] != f"edge-{client}" for node in setup.plane.status()["nodes"])
        listeners = admin_json(admin_port, "/listeners?format=json")
        assert not listeners.get("listener_statuses"), listeners
    finally:
        proc.stop()


def start_service(setup: Setup, *tls: str) -> tuple[Proc, int]:
    """`pavilion ratelimit --xds` against the TLS control plane, with the xDS TLS flags given."""
    admin_port = free_port()
    proc = Proc([PAVILION, "--log-format", "console", "ratelimit", "--xds", f"127.0.0.1:{setup.plane.xds_port}",
                 "--port", str(free_port()), "--admin-port", str(admin_port), "--node-id", "ratelimit-tls",
                 "--region", "eu-west", *tls], name="ratelimit-tls")
    return proc, admin_port


def test_a_service_takes_its_config_over_tls_only_with_a_client_certificate(setup: Setup) -> None:
    ca = ("--xds-ca", str(setup.certs / "xds-ca.pem"))
    client = ("--xds-client-cert", str(setup.certs / "edge-client.pem"),
              "--xds-client-key", str(setup.certs / "edge-client-key.pem"))
    proc, admin_port = start_service(setup, *ca, *client)
    try:
        proc.wait_http(f"http://127.0.0.1:{admin_port}/readyz")
        status = admin_json(admin_port, "/status")
        assert status["source"] == "xds" and status["config_version"] == setup.plane.status()["version"], status
    finally:
        proc.stop()
    proc, admin_port = start_service(setup, *ca)  # TLS, but no client certificate: the plane refuses it
    try:
        proc.wait_http(f"http://127.0.0.1:{admin_port}/healthz")
        proc.wait_until(lambda: int(admin_json(admin_port, "/status")["xds"]["streams"]) >= 2,  # type: ignore[index]
                        20, "a second attempt")
        status = admin_json(admin_port, "/status")
        assert status["config_version"] in ("", None) and status["xds"]["connected"] is False, status  # type: ignore[index]
    finally:
        proc.stop()


def test_a_services_xds_client_certificate_without_a_ca_is_refused_at_start(setup: Setup) -> None:
    done = subprocess.run([PAVILION, "ratelimit", "--xds", f"127.0.0.1:{setup.plane.xds_port}",
                           "--xds-client-cert", str(setup.certs / "edge-client.pem"),
                           "--xds-client-key", str(setup.certs / "edge-client-key.pem")],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "--xds-client-cert and --xds-client-key need --xds-ca" in done.stdout + done.stderr

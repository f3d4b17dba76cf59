"""Certificate expiry gauges of real processes: `pavilion controlplane` serving a TLS listener (with a client
CA bundle) over xDS with its own TLS, and `pavilion extauthz --workers 2` reaching it with a client certificate
and serving its own gRPC port over TLS. /metrics shows each certificate's notAfter; an edit that renews the
listener's certificate and drops its client CA moves one gauge and removes the other; /status lists what
expires within 30 days. The xDS port's certificate renewed on disk is served to the next connection and its
gauge and /status entry follow, in the same process."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.controlplane.certs import DAY, cert_pem, make_ca, write_pair
from tests.procs import PAVILION, Proc, free_port

pytestmark = pytest.mark.integration

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)

CONFIG = """regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: {public}
    tls: {{certificate: {certs}/edge.pem, key: {certs}/edge-key.pem{client_ca}}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:9, region: eu-west}}]
routes:
  - {{name: accounts, match: {{prefix: /}}, service: accounts}}
"""


def samples(admin_port: int, name: str) -> dict[str, float]:
    """The first label's value -> sample value, of the metric `name` on that admin port's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {next(iter(sample.labels.values())): sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == name}


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def status_expiring(admin_port: int) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/status", timeout=5) as reply:
        return list(json.load(reply)["certificates_expiring"])


async def health_over_tls(port: int, ca: bytes, key: bytes, cert: bytes) -> str:
    """`SERVING` or the refusal's status name, on a new connection that trusts only `ca`."""
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials,
                                       options=[("grpc.ssl_target_name_override", "localhost")]) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


SERVING = "pavilion_grpc_server_certificate_expiry_timestamp_seconds"


def test_gauges_of_the_served_certificates_follow_the_config(tmp_path: Path) -> None:
    certs, routes = tmp_path / "certs", tmp_path / "routes"
    routes.mkdir()
    xds_ca, edge_ca = make_ca("xDS CA"), make_ca("Edge CA")
    certs.mkdir()
    (certs / "xds-ca.pem").write_bytes(xds_ca.pem)
    write_pair(certs, *xds_ca.issue("localhost", not_after=NOW + 20 * DAY), stem="controlplane")
    write_pair(certs, *xds_ca.issue("extauthz", server=False, not_after=NOW + 40 * DAY), stem="extauthz")
    write_pair(certs, *edge_ca.issue("edge", not_after=NOW + 10 * DAY), stem="edge")
    clients = cert_pem(edge_ca.issue("clients-a", not_after=NOW + 200 * DAY)[0])
    (certs / "clients.pem").write_bytes(clients + cert_pem(edge_ca.issue("clients-b", not_after=NOW + 5 * DAY)[0]))
    public = free_port()
    gateway = routes / "gateway.yaml"
    gateway.write_text(CONFIG.format(public=public, certs=certs, client_ca=f", client_ca: {certs}/clients.pem"))
    xds_port, admin_port = free_port(), free_port()
    plane = Proc([PAVILION, "--log-format", "console", "controlplane", "--config", str(routes),
                  "--xds-port", str(xds_port), "--admin-port", str(admin_port),
                  "--xds-tls-cert", str(certs / "controlplane.pem"),
                  "--xds-tls-key", str(certs / "controlplane-key.pem"),
                  "--xds-client-ca", str(certs / "xds-ca.pem")], name="controlplane")
    extauthz = None
    try:
        plane.wait_http(f"http://127.0.0.1:{admin_port}/readyz")
        served = "pavilion_controlplane_certificate_expiry_timestamp_seconds"
        wait_until("the secrets' gauge", lambda: len(samples(admin_port, served)) == 2)
        assert samples(admin_port, served) == {"public/certificate": (NOW + 10 * DAY).timestamp(),
                                               "public/client-ca": (NOW + 5 * DAY).timestamp()}
        assert samples(admin_port, SERVING) == {str(certs / "controlplane.pem"): (NOW + 20 * DAY).timestamp()}
        assert [entry.get("secret") or entry.get("xds_certificate") for entry in status_expiring(admin_port)] == [
            "public/client-ca", "public/certificate", str(certs / "controlplane.pem")]

        metrics_port = free_port()
        write_pair(certs, *edge_ca.issue("localhost", not_after=NOW + 25 * DAY), stem="extauthz-serving")
        extauthz = Proc([PAVILION, "--log-format", "console", "extauthz", "--xds", f"localhost:{xds_port}",
                         "--region", "eu-west", "--port", str(free_port()), "--admin-port", str(metrics_port),
                         "--workers", "2",
                         "--xds-ca", str(certs / "xds-ca.pem"), "--xds-client-cert", str(certs / "extauthz.pem"),
                         "--xds-client-key", str(certs / "extauthz-key.pem"),
                         "--tls-cert", str(certs / "extauthz-serving.pem"),
                         "--tls-key", str(certs / "extauthz-serving-key.pem")], name="extauthz")
        client = "pavilion_xds_client_certificate_expiry_timestamp_seconds"
        extauthz.wait_http(f"http://127.0.0.1:{metrics_port}/healthz")
        wait_until("ext_authz's client certificate gauge", lambda: bool(samples(metrics_port, client)))
        assert samples(metrics_port, client) == {str(certs / "extauthz.pem"): (NOW + 40 * DAY).timestamp()}
        # its own gRPC port's certificate, one value over the two workers (multiprocess livemin)
        wait_until("ext_authz's serving certificate gauge", lambda: bool(samples(metrics_port, SERVING)))
        assert samples(metrics_port, SERVING) == {str(certs / "extauthz-serving.pem"): (NOW + 25 * DAY).timestamp()}

        # The xDS certificate renewed on disk, by another CA (so a handshake that succeeds trusting only the new
        # CA proves the new one is served), moved in by rename as a Secret volume swap does: the next connection
        # gets it, and the gauge and /status follow, without a restart (extauthz's ADS stream stays as it was).
        xds_ca_2 = make_ca("xDS CA 2")
        write_pair(certs / "new", *xds_ca_2.issue("localhost", not_after=NOW + 90 * DAY), stem="controlplane")
        os.replace(certs / "new" / "controlplane-key.pem", certs / "controlplane-key.pem")
        os.replace(certs / "new" / "controlplane.pem", certs / "controlplane.pem")
        probe_key, probe_cert = write_pair(certs, *xds_ca.issue("probe", server=False), stem="probe")[::-1]
        assert asyncio.run(health_over_tls(xds_port, xds_ca_2.pem, probe_key.read_bytes(),
                                           probe_cert.read_bytes())) == "SERVING"
        assert samples(admin_port, SERVING) == {str(certs / "controlplane.pem"): (NOW + 90 * DAY).timestamp()}
        assert [entry.get("secret") or entry.get("xds_certificate") for entry in status_expiring(admin_port)] == [
            "public/client-ca", "public/certificate"]
        assert plane.alive() and "server_tls_reloaded" in plane.output()

        # Renewed certificate (moved in by rename, as a Secret volume swap does) and no client CA any more.
        write_pair(certs / "new", *edge_ca.issue("edge", not_after=NOW + 60 * DAY), stem="edge")
        os.replace(certs / "new" / "edge-key.pem", certs / "edge-key.pem")
        os.replace(certs / "new" / "edge.pem", certs / "edge.pem")
        gateway.write_text(CONFIG.format(public=public, certs=certs, client_ca=""))
        wait_until("the renewed certificate without its client CA",
                   lambda: samples(admin_port, served) == {"public/certificate": (NOW + 60 * DAY).timestamp()})
    finally:
        if extauthz is not None:
            extauthz.stop()
        plane.stop()

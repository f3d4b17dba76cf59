"""Certificates per region and client certificate details to upstreams, with the real control plane and
two real Envoys, one per region (`--service-node` locality eu-west and us-east), on the same listener port.

Both Envoys bind the listener with SO_REUSEPORT, so the kernel hands each new connection to one of them;
which one is read from the Envoys' own accepted-connection counters, one connection at a time. Each
region's Envoy must present its own certificate (serial and SAN read with Python's ssl), a rotation of
one region's files must reach that region's Envoy only, and an mTLS request must reach the echo upstream
with Envoy's x-forwarded-client-cert in place of the one the client sent (and none where not asked for).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controlplane.config.load import load_config
from controlplane.envoy_check import check_with_envoy
from tests.controlplane.certs import Ca, cert_pem, key_pem, make_ca, write_pair
from tests.integration.gateway_procs import Envoy, Gateway, running_gateway, start_upstreams
from tests.procs import ENVOY, free_port

pytestmark = pytest.mark.integration

REGIONS = ("eu-west", "us-east")
NAMES = {"eu-west": "eu.api.example", "us-east": "us.api.example"}
CLIENT_ID = "spiffe://pavilion.example/ns/partners/sa/billing"
SPOOFED = "By=spiffe://evil;Hash=00;URI=spiffe://pavilion.example/ns/ops/sa/admin"

CONFIG = """regions: [eu-west, us-east]
listeners:
  - name: public
    address: 127.0.0.1
    port: {public}
    tls:
      regions:
        eu-west: {{certificate: {certs}/eu.pem, key: {certs}/eu-key.pem}}
        us-east: {{certificate: {certs}/us.pem, key: {certs}/us-key.pem}}
  - name: forwarding
    address: 127.0.0.1
    port: {forwarding}
    tls:
      certificate: {certs}/edge.pem
      key: {certs}/edge-key.pem
      client_ca: {certs}/clients-ca.pem
      forward_client_certificate: [uri, hash, subject]
  - name: sanitizing
    address: 127.0.0.1
    port: {sanitizing}
    tls:
      certificate: {certs}/edge.pem
      key: {certs}/edge-key.pem
      client_ca: {certs}/clients-ca.pem
services:
  - name: echo
    endpoints: [{{address: 127.0.0.1:{echo}, region: eu-west}}]
routes:
  - {{name: public, listener: public, match: {{prefix: /}}, service: echo}}
  - {{name: forwarding, listener: forwarding, match: {{prefix: /}}, service: echo}}
  - {{name: sanitizing, listener: sanitizing, match: {{prefix: /}}, service: echo}}
"""


@dataclass
class Setup:
    gateway: Gateway
    ca: Ca
    certs: Path
    client: tuple[Path, Path]
    client_der: bytes
    public: int
    forwarding: int
    sanitizing: int


def write_region_leaf(certs: Path, ca: Ca, region: str) -> int:
    """A new leaf for `region` (SANs its name, localhost and 127.0.0.1), each file replaced whole; its serial."""
    stem = region.split("-")[0]
    cert, key = ca.issue(stem, dns_names=(NAMES[region], "localhost"))
    for name, data in ((f"{stem}-key.pem", key_pem(key)), (f"{stem}.pem", cert_pem(cert))):
        (certs / f".{name}.new").write_bytes(data)
        os.replace(certs / f".{name}.new", certs / name)
    return int(cert.serial_number)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    certs = tmp_path_factory.mktemp("certs")
    routes = tmp_path_factory.mktemp("routes")
    ca, clients_ca = make_ca("Edge CA"), make_ca("Partners CA")
    for region in REGIONS:
        write_region_leaf(certs, ca, region)
    write_pair(certs, *ca.issue("edge"), stem="edge")
    (certs / "clients-ca.pem").write_bytes(clients_ca.pem)
    client_cert, client_key = clients_ca.issue("billing", server=False, uris=(CLIENT_ID,))
    client = write_pair(certs, client_cert, client_key, stem="client")
    public, forwarding, sanitizing = free_port(), free_port(), free_port()
    upstreams = start_upstreams({"echo": "eu-west"})
    (routes / "gateway.yaml").write_text(CONFIG.format(public=public, forwarding=forwarding, sanitizing=sanitizing,
                                                       certs=certs, echo=upstreams["echo"][1]))
    with running_gateway(routes, public, upstreams, regions=REGIONS) as gateway:
        for envoy in gateway.envoys:
            wait_for(f"{envoy.region}'s listeners", lambda e=envoy: listeners_active(e) == 3)
        gateway.plane.wait_synced(2)
        yield Setup(gateway, ca, certs, client, client_cert.public_bytes(serialization.Encoding.DER), public,
                    forwarding, sanitizing)


def wait_for(what: str, condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def stats(envoy: Envoy) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{envoy.admin_port}/stats", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def listeners_active(envoy: Envoy) -> int:
    return int(stats(envoy).get("listener_manager.total_listeners_active", "0"))


def accepted(envoy: Envoy, port: int) -> int:
    return int(stats(envoy).get(f"listener.127.0.0.1_{port}.downstream_cx_total", "0"))


def presented(port: int) -> x509.Certificate:
    """The certificate the Envoy that accepts a new connection presents (not verified: any name, any CA)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        connection.connect()
        assert connection.sock is not None
        der = connection.sock.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)
    finally:
        connection.close()


def presented_by_region(setup: Setup, tries: int = 60) -> dict[str, x509.Certificate]:
    """region -> the certificate its Envoy presented, one connection at a time until both were seen."""
    seen: dict[str, x509.Certificate] = {}
    envoys = setup.gateway.envoys
    for _ in range(tries):
        before = [accepted(envoy, setup.public) for envoy in envoys]
        certificate = presented(setup.public)
        after = [accepted(envoy, setup.public) for envoy in envoys]
        (took,) = [envoy for envoy, b, a in zip(envoys, before, after, strict=True) if a > b]
        seen[took.region] = certificate
        if len(seen) == len(envoys):
            return seen
    raise AssertionError(f"only {sorted(seen)} accepted a connection in {tries} tries")


def dns_names(certificate: x509.Certificate) -> list[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(san.get_values_for_type(x509.DNSName))


def serial_of(path: Path) -> int:
    return int(x509.load_pem_x509_certificate(path.read_bytes()).serial_number)


def test_each_regions_envoy_presents_its_own_certificate(setup: Setup) -> None:
    seen = presented_by_region(setup)
    for region in REGIONS:
        stem = region.split("-")[0]
        assert seen[region].serial_number == serial_of(setup.certs / f"{stem}.pem"), region
        assert dns_names(seen[region])[0] == NAMES[region]
    # A client that checks the name gets through to the region serving it.
    context = ssl.create_default_context(cadata=setup.ca.pem.decode())
    connection = http.client.HTTPSConnection("127.0.0.1", setup.public, context=context, timeout=5)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["name"] == "echo"
    finally:
        connection.close()


def test_a_rotation_of_one_regions_files_reaches_that_region_only(setup: Setup) -> None:
    eu, us = setup.gateway.envoys
    eu_serial = serial_of(setup.certs / "eu.pem")
    before = {envoy.region: stats(envoy) for envoy in (eu, us)}
    new_serial = write_region_leaf(setup.certs, setup.ca, "us-east")
    success = "sds.public/certificate.update_success"
    wait_for("us-east's Envoy to take the new secret",
             lambda: int(stats(us)[success]) > int(before["us-east"][success]))
    seen = presented_by_region(setup)
    assert seen["us-east"].serial_number == new_serial
    assert seen["eu-west"].serial_number == eu_serial
    after = {envoy.region: stats(envoy) for envoy in (eu, us)}
    assert after["eu-west"][success] == before["eu-west"][success]  # eu-west was sent nothing new
    for envoy in (eu, us):
        assert after[envoy.region]["listener_manager.listener_modified"] == "0"
        assert after[envoy.region][success.replace("update_success", "update_rejected")] == "0"


def echo_headers(port: int, setup: Setup, client: bool) -> dict[str, str]:
    """The request headers the echo upstream received for a request carrying a spoofed XFCC."""
    context = ssl.create_default_context(cadata=setup.ca.pem.decode())
    if client:
        context.load_cert_chain(*setup.client)
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=5)
    try:
        connection.request("GET", "/who", headers={"x-forwarded-client-cert": SPOOFED})
        response = connection.getresponse()
        body = json.loads(response.read())
        assert response.status == 200, body
        return {name.lower(): value for name, value in body["headers"].items()}
    finally:
        connection.close()


def test_the_verified_client_certificate_replaces_a_spoofed_xfcc(setup: Setup) -> None:
    xfcc = echo_headers(setup.forwarding, setup, client=True)["x-forwarded-client-cert"]
    elements = dict(part.split("=", 1) for part in xfcc.split(";"))
    assert elements == {"Hash": hashlib.sha256(setup.client_der).hexdigest(), "Subject": '"CN=billing"',
                        "URI": CLIENT_ID}, xfcc
    assert "evil" not in xfcc and "admin" not in xfcc
    # No client certificate on the connection: the spoofed header is removed and none is set.
    assert "x-forwarded-client-cert" not in echo_headers(setup.forwarding, setup, client=False)


def test_without_forward_client_certificate_a_spoofed_xfcc_never_reaches_the_upstream(setup: Setup) -> None:
    for client in (True, False):
        assert "x-forwarded-client-cert" not in echo_headers(setup.sanitizing, setup, client=client)


def test_envoy_validate_accepts_every_regions_config(setup: Setup) -> None:
    config = load_config(setup.gateway.plane.config_dir)
    assert check_with_envoy(config, ENVOY) == []

"""TLS termination with the real Envoy: certificates from the route YAML reach Envoy as SDS secrets
over ADS. HTTPS verified against the test CA, client certificates required on a second listener,
and a rotated certificate served to new connections by the same Envoy, old connections kept."""

from __future__ import annotations

import http.client
import os
import ssl
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509

from controlplane.config.load import load_config
from controlplane.envoy_check import check_with_envoy
from tests.controlplane.certs import Ca, cert_pem, key_pem, make_ca, write_pair
from tests.integration.gateway_procs import Gateway, running_gateway, start_upstreams
from tests.procs import ENVOY, free_port

pytestmark = pytest.mark.integration

CONFIG = """regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: {public}
    tls: {{certificate: {certs}/edge.pem, key: {certs}/edge-key.pem}}
  - name: partners
    address: 127.0.0.1
    port: {partners}
    tls:
      certificate: {certs}/edge.pem
      key: {certs}/edge-key.pem
      client_ca: {certs}/rp-ca.pem
      require_client_certificate: true
  - name: optional
    address: 127.0.0.1
    port: {optional}
    tls: {{certificate: {certs}/edge.pem, key: {certs}/edge-key.pem, client_ca: {certs}/rp-ca.pem}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:{accounts}, region: eu-west}}]
routes:
  - {{name: public, listener: public, match: {{prefix: /}}, service: accounts}}
  - {{name: partners, listener: partners, match: {{prefix: /}}, service: accounts}}
  - {{name: optional, listener: optional, match: {{prefix: /}}, service: accounts}}
"""


@dataclass
class Setup:
    gateway: Gateway
    ca: Ca
    rp_ca: Ca
    certs: Path
    public: int
    partners: int
    optional: int


def write_leaf(certs: Path, ca: Ca) -> int:
    """A new server leaf in place of edge.pem and edge-key.pem, each file replaced whole; its serial."""
    cert, key = ca.issue("edge")
    for name, data in (("edge-key.pem", key_pem(key)), ("edge.pem", cert_pem(cert))):
        (certs / f".{name}.new").write_bytes(data)
        os.replace(certs / f".{name}.new", certs / name)
    return int(cert.serial_number)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    certs = tmp_path_factory.mktemp("certs")  # outside the route folder, as a mounted Secret
    routes = tmp_path_factory.mktemp("routes")
    ca, rp_ca = make_ca("Edge CA"), make_ca("Relying Party CA")
    write_leaf(certs, ca)
    (certs / "rp-ca.pem").write_bytes(rp_ca.pem)
    public, partners, optional = free_port(), free_port(), free_port()
    upstreams = start_upstreams({"accounts": "eu-west"})
    (routes / "gateway.yaml").write_text(CONFIG.format(public=public, partners=partners, optional=optional,
                                                       certs=certs, accounts=upstreams["accounts"][1]))
    with running_gateway(routes, public, upstreams) as gateway:
        gateway.envoys[0].proc.wait_port(partners)
        gateway.envoys[0].proc.wait_port(optional)
        gateway.plane.wait_synced(1)
        yield Setup(gateway, ca, rp_ca, certs, public, partners, optional)


def client_context(ca: Ca, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.pem.decode())
    if client is not None:
        context.load_cert_chain(*client)
    return context


def https_get(port: int, context: ssl.SSLContext, path: str = "/") -> tuple[int, int]:
    """(status, serial of the certificate the server presented) of one request on a new connection."""
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        assert connection.sock is not None
        der = connection.sock.getpeercert(binary_form=True)
        assert der is not None
        return response.status, int(x509.load_der_x509_certificate(der).serial_number)
    finally:
        connection.close()


def envoy_stats(setup: Setup) -> dict[str, str]:
    url = f"http://127.0.0.1:{setup.gateway.envoys[0].admin_port}/stats"
    with urllib.request.urlopen(url, timeout=5) as response:
        lines = response.read().decode().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def test_https_through_envoy_verified_against_the_ca(setup: Setup) -> None:
    status, _serial = https_get(setup.public, client_context(setup.ca))
    assert status == 200
    # Not trusted by another CA: the certificate really is the one from the YAML.
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(setup.public, client_context(setup.rp_ca))


def test_plaintext_on_the_tls_port_fails(setup: Setup) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", setup.public, timeout=5)
    try:
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            connection.request("GET", "/")
            connection.getresponse()
    finally:
        connection.close()


def test_client_certificate_required_on_the_partners_listener(setup: Setup, tmp_path: Path) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(setup.partners, client_context(setup.ca))
    stranger = write_pair(tmp_path, *make_ca("Stranger CA").issue("rp-x", server=False), stem="stranger")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(setup.partners, client_context(setup.ca, stranger))
    trusted = write_pair(tmp_path, *setup.rp_ca.issue("rp-1", server=False), stem="rp")
    status, _serial = https_get(setup.partners, client_context(setup.ca, trusted))
    assert status == 200


def test_client_ca_without_require_verifies_a_certificate_sent_but_needs_none(setup: Setup, tmp_path: Path) -> None:
    status, _serial = https_get(setup.optional, client_context(setup.ca))
    assert status == 200
    trusted = write_pair(tmp_path, *setup.rp_ca.issue("rp-1", server=False), stem="rp")
    assert https_get(setup.optional, client_context(setup.ca, trusted))[0] == 200
    stranger = write_pair(tmp_path, *make_ca("Stranger CA").issue("rp-x", server=False), stem="stranger")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(setup.optional, client_context(setup.ca, stranger))


def test_rotation_reaches_new_connections_without_restart_or_drop(setup: Setup) -> None:
    context = client_context(setup.ca)
    pid = setup.gateway.envoys[0].proc.popen.pid
    kept = http.client.HTTPSConnection("localhost", setup.public, context=context, timeout=5)
    try:
        kept.request("GET", "/before")
        assert kept.getresponse().read() is not None
        _status, old_serial = https_get(setup.public, context)
        before = envoy_stats(setup)
        new_serial = write_leaf(setup.certs, setup.ca)
        assert new_serial != old_serial
        deadline = time.monotonic() + 20
        seen = old_serial
        while seen != new_serial and time.monotonic() < deadline:
            time.sleep(0.2)
            _status, seen = https_get(setup.public, context)
        assert seen == new_serial, "the rotated certificate was not served within 20 s"
        assert setup.gateway.envoys[0].proc.alive() and setup.gateway.envoys[0].proc.popen.pid == pid
        # Only the secret changed: the listener was neither replaced nor drained.
        after = envoy_stats(setup)
        success = "sds.public/certificate.update_success"
        assert int(after[success]) > int(before[success])
        assert after["sds.public/certificate.update_rejected"] == "0"
        for name in ("listener_manager.listener_modified", "listener_manager.listener_in_place_updated",
                     "listener_manager.listener_removed"):
            assert after[name] == before[name] == "0", name
        # The connection opened before the rotation still carries requests.
        kept.request("GET", "/after")
        response = kept.getresponse()
        response.read()
        assert response.status == 200
    finally:
        kept.close()
    assert "PRIVATE KEY" not in setup.gateway.plane.proc.output()


def test_envoy_validate_accepts_the_tls_listener_and_checks_its_secret(setup: Setup) -> None:
    config = load_config(setup.gateway.plane.config_dir)
    assert check_with_envoy(config, ENVOY) == []
    # The secret is really checked: the key of another certificate is refused by Envoy itself.
    _cert, other_key = setup.ca.issue("other")
    listeners = tuple(replace(item, tls=replace(item.tls, private_key=key_pem(other_key)))
                      if item.tls is not None and item.name == "public" else item for item in config.listeners)
    problems = check_with_envoy(replace(config, listeners=listeners), ENVOY)
    assert len(problems) == 1 and "KEY_VALUES_MISMATCH" in problems[0], problems
    assert "PRIVATE KEY" not in problems[0]


ONE_LISTENER = """regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: {public}
    tls: {{certificate: {certs}/edge.pem, key: {certs}/edge-key.pem}}
services:
  - {{name: accounts, endpoints: [{{address: 127.0.0.1:{accounts}, region: eu-west}}]}}
routes:
  - {{name: public, match: {{prefix: /}}, service: accounts}}
"""


def test_delta_ads_serves_the_secret_too(setup: Setup, tmp_path: Path) -> None:
    port = free_port()
    upstreams = start_upstreams({"accounts": "eu-west"})
    (tmp_path / "gateway.yaml").write_text(ONE_LISTENER.format(public=port, certs=setup.certs,
                                                                accounts=upstreams["accounts"][1]))
    with running_gateway(tmp_path, port, upstreams, delta=True) as gateway:
        status, serial = https_get(port, client_context(setup.ca))
        assert status == 200
        assert serial == x509.load_pem_x509_certificate((setup.certs / "edge.pem").read_bytes()).serial_number
        assert gateway.plane.wait_synced(1)["synced"]

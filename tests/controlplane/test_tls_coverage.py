"""A route host its TLS listener's certificate does not name is a warning of `pavilion validate` (clients
verifying the name would refuse the connection), at the route's FILE:LINE."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from controlplane.config.check import run_validate
from controlplane.config.load import load_config
from controlplane.tls_coverage import certificate_names, covers, host_coverage_warnings
from tests.controlplane.certs import cert_pem, make_ca, write_pair

CONFIG = """regions: [eu-west]
listeners:
  - {{name: public, address: 127.0.0.1, port: 8443, tls: {{certificate: edge.pem, key: edge-key.pem}}}}
  - {{name: plain, address: 127.0.0.1, port: 8080}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:9001, region: eu-west}}]
routes:
{routes}
"""


@pytest.mark.parametrize(("host", "expected"), [
    ("api.example.com", True),
    ("API.Example.com", True),
    ("x.apps.example.com", True),        # one label for the certificate's *.apps.example.com
    ("a.b.apps.example.com", False),     # a wildcard stands for one label only
    ("apps.example.com", False),
    ("www.example.org", False),
    ("*.apps.example.com", True),        # the same wildcard
    ("*.example.com", False),
    ("*", None),
    ("api.*", None),
    ("*-api.example.com", None),
])
def test_names_are_compared_as_clients_do(host: str, expected: bool | None) -> None:
    assert covers(("api.example.com", "*.apps.example.com"), host) is expected


def test_the_leafs_dns_names_are_read_lower_cased() -> None:
    cert, _key = make_ca().issue("Edge", dns_names=("API.example.com", "*.apps.example.com"))
    assert certificate_names(cert_pem(cert)) == ("api.example.com", "*.apps.example.com")
    assert certificate_names(b"") == ()


def write(tmp_path: Path, routes: str) -> Path:
    write_pair(tmp_path, *make_ca().issue("edge", dns_names=("api.example.com", "*.apps.example.com")), stem="edge")
    (tmp_path / "gateway.yaml").write_text(CONFIG.format(routes=routes))
    return tmp_path


def test_only_hosts_of_tls_listeners_that_the_certificate_lacks_are_named(tmp_path: Path) -> None:
    write(tmp_path, """  - {name: named, listener: public, hosts: [api.example.com, x.apps.example.com, "*"],
     match: {prefix: /a}, service: accounts}
  - {name: other, listener: public, hosts: [api.example.com, www.example.org], match: {prefix: /b}, service: accounts}
  - {name: plaintext, listener: plain, hosts: [www.example.org], match: {prefix: /c}, service: accounts}""")
    lines = host_coverage_warnings(load_config(str(tmp_path)))
    assert len(lines) == 1, lines
    assert "gateway.yaml:11:" in lines[0]
    assert ("route other answers host www.example.org, which the certificate of listener public does not name "
            "(it names api.example.com, *.apps.example.com)") in lines[0]


def test_validate_prints_the_warning_and_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "  - {name: other, listener: public, hosts: [www.example.org], match: {prefix: /}, "
                    "service: accounts}")
    assert run_validate(argparse.Namespace(directory=str(tmp_path), no_envoy=True)) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ok: 1 file")
    assert "warning: route other answers host www.example.org" in err

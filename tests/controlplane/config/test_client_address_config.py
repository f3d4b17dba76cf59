"""Listeners' `client_address`: what loads into the model, every refusal as a `FILE:LINE:COL: path: message`
(CIDRs checked strictly with Python's ipaddress), a redirect_to_https listener reading the PROXY protocol
too, and the JSON Schema agreeing where a schema can say it."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from controlplane.config import model
from controlplane.config.client_address import trusted_cidr
from controlplane.config.load import parse_sources
from controlplane.config.schema import json_schema
from pavilion.config_files import Source
from pavilion.errors import ConfigErrors
from tests.controlplane.certs import make_ca, write_pair

BASE = """regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: 10080
{listener}services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:9001, region: eu-west}}]
routes:
  - name: a
    match: {{prefix: /a}}
    service: accounts
    local_rate_limit: {{per: client_ip, unit: second, requests: 5}}
"""


def text(client_address: str) -> str:
    return BASE.format(listener=f"    client_address: {client_address}\n" if client_address else "")


def load(client_address: str) -> model.Config:
    return parse_sources([Source("gateway.yaml", text(client_address))])


def errors_of(client_address: str) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load(client_address)
    return [str(e) for e in caught.value.errors]


def test_absent_means_the_tcp_peer() -> None:
    assert load("").listener("public").client_address is None


@pytest.mark.parametrize(("written", "expected"), [
    ("{proxy_protocol: required}", model.ClientAddress(proxy_protocol="required")),
    ("{proxy_protocol: optional, trusted_hops: 2}", model.ClientAddress(proxy_protocol="optional", trusted_hops=2)),
    ("{trusted_hops: 10}", model.ClientAddress(trusted_hops=10)),
    # Normalised: an address alone is its /32 (or /128), IPv6 in its short form.
    ("{trusted_cidrs: [10.0.0.0/8, 192.0.2.7, 'FD00:0::/8', '2001:db8::1']}",
     model.ClientAddress(trusted_cidrs=("10.0.0.0/8", "192.0.2.7/32", "fd00::/8", "2001:db8::1/128"))),
    ("{proxy_protocol: required, trusted_cidrs: [35.191.0.0/16, 130.211.0.0/22]}",
     model.ClientAddress(proxy_protocol="required", trusted_cidrs=("35.191.0.0/16", "130.211.0.0/22"))),
])
def test_what_loads(written: str, expected: model.ClientAddress) -> None:
    client = load(written).listener("public").client_address
    assert client == expected
    assert client is not None and str(client.source) == "gateway.yaml:6:21"


@pytest.mark.parametrize(("written", "expected"), [
    ("{}", "6:21: listeners[public].client_address: give at least one of proxy_protocol, trusted_hops or "
           "trusted_cidrs; an empty client_address changes nothing: the client would still be the TCP peer"),
    ("{proxy_protocol: yes}", "6:38: listeners[public].client_address.proxy_protocol: "),
    ("{proxy_protocol: true}", "listeners[public].client_address.proxy_protocol: expected a string"),
    ("{trusted_hops: 0}", "6:36: listeners[public].client_address.trusted_hops: must be at least 1 and at most 10"),
    ("{trusted_hops: 11}", "listeners[public].client_address.trusted_hops: must be at most 10"),
    ("{trusted_hops: 1, trusted_cidrs: [10.0.0.0/8]}",
     "6:54: listeners[public].client_address.trusted_cidrs: trusted_hops and trusted_cidrs do not go together "
     "(Envoy refuses xff_num_trusted_hops beside an original IP detection extension)"),
    ("{trusted_cidrs: []}", "listeners[public].client_address.trusted_cidrs: "),
    ("{trusted_cidrs: [10.0.0.1/8]}",
     "6:38: listeners[public].client_address.trusted_cidrs[0]: '10.0.0.1/8' has host bits set: write '10.0.0.0/8' "
     "for the network it lies in, or '10.0.0.1' alone for that one address"),
    ("{trusted_cidrs: [10.0.0.0/33]}", "trusted_cidrs[0]: '10.0.0.0/33' is not a network like 10.0.0.0/8"),
    ("{trusted_cidrs: [lb.example.com]}", "trusted_cidrs[0]: 'lb.example.com' is not a network like 10.0.0.0/8"),
    ("{trusted_cidrs: [0.0.0.0/0]}", "trusted_cidrs[0]: '0.0.0.0/0' trusts every address: any client could then "
                                     "name its own address in X-Forwarded-For"),
    ("{trusted_cidrs: ['::/0']}", "trusted_cidrs[0]: '::/0' trusts every address"),
    ("{trusted_cidrs: [10.0.0.0/8, 192.0.2.7, 10.0.0.0/8]}",
     "6:61: listeners[public].client_address.trusted_cidrs[2]: network '10.0.0.0/8' is listed twice (first at "
     "gateway.yaml:6:38)"),
    ("{trusted_cidrs: [192.0.2.7, 192.0.2.7/32]}", "trusted_cidrs[1]: network '192.0.2.7/32' is listed twice"),
    ("{proxy_protocol: v1}",
     "6:38: listeners[public].client_address.proxy_protocol: 'v1' is not one of required, optional"),
    ("{trusted_hops: 1, xff_num_trusted_hops: 1}",
     "listeners[public].client_address.xff_num_trusted_hops: unknown field 'xff_num_trusted_hops'; did you mean "
     "'trusted_hops'?"),
])
def test_refusals_point_at_the_field(written: str, expected: str) -> None:
    found = errors_of(written)
    assert len(found) == 1, found
    assert found[0].startswith("gateway.yaml:")
    assert expected in found[0], found


def test_both_forms_of_trust_and_a_bad_cidr_are_all_reported() -> None:
    found = errors_of("{trusted_hops: 1, trusted_cidrs: [10.0.0.1/8]}")
    assert len(found) == 2, found
    assert any("has host bits set" in line for line in found) and any("do not go together" in line for line in found)


def test_trusted_cidr_on_its_own() -> None:
    assert trusted_cidr("10.1.0.0/16") == "10.1.0.0/16"
    assert trusted_cidr("::1") == "::1/128"
    with pytest.raises(ValueError, match=r"host bits set: write '172\.16\.0\.0/12'"):
        trusted_cidr("172.16.5.4/12")


def test_a_redirect_to_https_listener_reads_the_proxy_protocol_too(tmp_path: Path) -> None:
    """An L4 balancer sends the PROXY header to every port of its target: the port 80 listener must read it."""
    source = """regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: 10443
    tls: {certificate: CERT, key: KEY}
    client_address: {proxy_protocol: required}
  - name: plain
    address: 127.0.0.1
    port: 10080
    redirect_to_https: public
    client_address: {proxy_protocol: required, trusted_hops: 1}
"""
    cert, key = write_pair(tmp_path, *make_ca().issue("edge"))
    config = parse_sources([Source("gateway.yaml", source.replace("CERT", str(cert)).replace("KEY", str(key)))])
    assert config.listener("plain").client_address == model.ClientAddress(proxy_protocol="required", trusted_hops=1)
    assert config.listener("plain").https_port == 10443


@pytest.mark.parametrize(("written", "valid"), [
    ("{proxy_protocol: required}", True),
    ("{proxy_protocol: optional, trusted_cidrs: [10.0.0.0/8]}", True),
    ("{trusted_hops: 3}", True),
    ("{}", False),
    ("{proxy_protocol: v2}", False),
    ("{trusted_hops: 0}", False),
    ("{trusted_hops: 11}", False),
    ("{trusted_cidrs: []}", False),
    ("{trusted: 1}", False),
])
def test_the_editor_schema_agrees(written: str, valid: bool) -> None:
    document = YAML(typ="safe", pure=True).load(text(written))
    errors = list(jsonschema.Draft202012Validator(json_schema()).iter_errors(document))
    assert (not errors) == valid, errors

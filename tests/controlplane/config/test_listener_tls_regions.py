"""`tls.regions` of a listener (a certificate per region, each a region of `regions`, every region covered
when there is no default) and `tls.forward_client_certificate` (which client certificate elements Envoy
hands to the upstream): each problem a `FILE:LINE:COL: listeners[public].tls...: message`."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from controlplane.config.listener_tls import referenced_files
from controlplane.config.load import load_config
from controlplane.config.model import ListenerTls
from controlplane.config.schema import json_schema
from pavilion.errors import ConfigErrors
from tests.controlplane.certs import Ca, make_ca, write_pair

BASE = """regions: [eu-west, us-east]
listeners:
  - name: public
    address: 127.0.0.1
    port: 8443
    tls:
{tls}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:9001, region: eu-west}}]
routes:
  - {{name: accounts, match: {{prefix: /}}, service: accounts}}
"""
DEFAULT = "      certificate: tls/edge.pem\n      key: tls/edge-key.pem\n"
EU = "        eu-west: {certificate: tls/eu.pem, key: tls/eu-key.pem}\n"
US = "        us-east: {certificate: tls/us.pem, key: tls/us-key.pem}\n"


@pytest.fixture(scope="module")
def ca() -> Ca:
    return make_ca()


@pytest.fixture
def root(tmp_path: Path, ca: Ca) -> Path:
    for stem, name in (("edge", "api.example"), ("eu", "eu.api.example"), ("us", "us.api.example")):
        write_pair(tmp_path / "tls", *ca.issue(stem, dns_names=(name,)), stem=stem)
    (tmp_path / "tls" / "ca.pem").write_bytes(ca.pem)
    return tmp_path


def load(root: Path, tls: str) -> ListenerTls:
    (root / "gateway.yaml").write_text(BASE.format(tls=tls.rstrip("\n")))
    found = load_config(root).listeners[0].tls
    assert found is not None
    return found


def errors_of(root: Path, tls: str) -> list[str]:
    (root / "gateway.yaml").write_text(BASE.format(tls=tls.rstrip("\n")))
    with pytest.raises(ConfigErrors) as caught:
        load_config(root)
    return [str(e).replace(f"{root}/", "") for e in caught.value.errors]


def test_a_region_entry_overrides_the_default_for_that_region_only(root: Path) -> None:
    tls = load(root, DEFAULT + "      regions:\n" + EU)
    edge, eu = (root / "tls" / "edge.pem").read_bytes(), (root / "tls" / "eu.pem").read_bytes()
    assert tls.certificate_for("eu-west") == (eu, (root / "tls" / "eu-key.pem").read_bytes())
    assert tls.certificate_for("us-east")[0] == edge
    assert tls.certificate_for("")[0] == edge  # a node without a region gets the default
    assert [entry.region for entry in tls.regions] == ["eu-west"]
    # Every file is followed for rotation, the region's too.
    (root / "gateway.yaml").write_text(BASE.format(tls=(DEFAULT + "      regions:\n" + EU).rstrip("\n")))
    followed = {Path(path).name for path, _stamp in referenced_files(load_config(root))}
    assert followed == {"edge.pem", "edge-key.pem", "eu.pem", "eu-key.pem"}
    assert b"PRIVATE KEY" not in repr(tls).encode()


def test_regions_alone_when_every_region_is_covered(root: Path) -> None:
    tls = load(root, "      regions:\n" + EU + US)
    assert tls.certificate_chain == b""
    assert tls.certificate_for("us-east")[0] == (root / "tls" / "us.pem").read_bytes()
    # A node whose region is in no entry (not one of `regions`) still gets a certificate: the first entry's.
    assert tls.certificate_for("ap-south")[0] == (root / "tls" / "eu.pem").read_bytes()


def test_a_region_left_without_a_certificate_is_a_load_error(root: Path) -> None:
    assert errors_of(root, "      regions:\n" + EU) == [
        "gateway.yaml:8:9: listeners[public].tls.regions: region us-east has no certificate: add it to "
        "tls.regions, or give a default certificate and key"]


def test_an_unknown_region_is_named_with_a_suggestion(root: Path) -> None:
    found = errors_of(root, DEFAULT + "      regions:\n" + EU.replace("eu-west", "eu-wset"))
    assert found == ["gateway.yaml:10:18: listeners[public].tls.regions.eu-wset: unknown region 'eu-wset'; "
                     "did you mean 'eu-west'? (add it to `regions`)"]


def test_a_region_entry_is_checked_like_the_default(root: Path) -> None:
    bad = EU.replace("tls/eu-key.pem", "tls/us-key.pem")
    (message,) = errors_of(root, DEFAULT + "      regions:\n" + bad)
    assert message.startswith("gateway.yaml:10:49: listeners[public].tls.regions.eu-west.key: tls/us-key.pem is "
                              "not the key of the certificate 'CN=eu' in tls/eu.pem")
    missing = EU.replace("key: tls/eu-key.pem", "kee: tls/eu-key.pem")
    assert errors_of(root, DEFAULT + "      regions:\n" + missing) == [
        "gateway.yaml:10:18: listeners[public].tls.regions.eu-west.key: required field 'key' is missing",
        "gateway.yaml:10:44: listeners[public].tls.regions.eu-west.kee: unknown field 'kee'; did you mean 'key'?"]


def test_a_certificate_needs_its_key_and_tls_needs_a_certificate(root: Path) -> None:
    assert errors_of(root, "      certificate: tls/edge.pem\n      regions:\n" + EU + US) == [
        "gateway.yaml:7:20: listeners[public].tls.certificate: certificate needs key"]
    assert errors_of(root, "      client_ca: tls/ca.pem") == [
        "gateway.yaml:7:7: listeners[public].tls: give at least one of certificate or regions; "
        "a listener's tls needs a certificate"]


def test_forward_client_certificate_elements(root: Path) -> None:
    tls = load(root, DEFAULT + "      client_ca: tls/ca.pem\n      forward_client_certificate: [uri, hash, subject]")
    assert tls.forward_client_certificate == ("uri", "hash", "subject")
    assert load(root, DEFAULT).forward_client_certificate == ()


def test_forward_client_certificate_needs_a_client_ca_and_known_elements_once(root: Path) -> None:
    assert errors_of(root, DEFAULT + "      forward_client_certificate: [uri]") == [
        "gateway.yaml:9:35: listeners[public].tls.forward_client_certificate: forward_client_certificate needs "
        "client_ca, only a verified certificate is forwarded"]
    ca = DEFAULT + "      client_ca: tls/ca.pem\n"
    assert errors_of(root, ca + "      forward_client_certificate: [uri, url]") == [
        "gateway.yaml:10:41: listeners[public].tls.forward_client_certificate[1]: 'url' is not one of uri, dns, "
        "subject, hash, cert, chain; did you mean 'uri'?"]
    assert errors_of(root, ca + "      forward_client_certificate: [dns, dns]") == [
        "gateway.yaml:10:41: listeners[public].tls.forward_client_certificate[1]: 'dns' is listed twice "
        "(first at gateway.yaml:10:36)"]
    assert errors_of(root, ca + "      forward_client_certificate: []") == [
        "gateway.yaml:10:35: listeners[public].tls.forward_client_certificate: needs at least 1 item"]


def test_the_json_schema_knows_both_fields() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())

    def problems(tls: str) -> list[str]:
        document = YAML(typ="safe", pure=True).load(BASE.format(tls=tls.rstrip("\n")))
        return [error.message for error in validator.iter_errors(document)]

    assert problems("      regions:\n" + EU + US + "      client_ca: ca.pem\n"
                    "      forward_client_certificate: [uri, hash]") == []
    assert problems(DEFAULT + "      regions:\n        eu-west: {certificate: tls/eu.pem}")  # no key
    assert problems(DEFAULT + "      regions:\n        'eu west': {certificate: a, key: b}")  # not a name
    assert problems(DEFAULT + "      forward_client_certificate: [url]")
    assert problems("      client_ca: ca.pem")  # no certificate at all

"""A service's `tls:`: the CA and the client certificate pair are read relative to the YAML and checked
like a listener's, and each problem is a `FILE:LINE:COL: services[accounts].tls.FIELD: message` that
never shows the key."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import pytest

from controlplane.config.listener_tls import file_stamp, referenced_files
from controlplane.config.load import load_config
from pavilion.errors import ConfigErrors
from tests.controlplane.certs import Ca, ec_key, key_pem, make_ca, rsa_key, write_pair

BASE = """regions: [eu-west]
listeners:
  - {{name: public, address: 127.0.0.1, port: 8080}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:9001, region: eu-west}}]
    tls:
{tls}
routes:
  - {{name: accounts, match: {{prefix: /}}, service: accounts}}
"""
CA_AND_NAME = "      ca: tls/ca.pem\n      server_name: accounts.internal"
MTLS = CA_AND_NAME + "\n      certificate: tls/gateway.pem\n      key: tls/gateway-key.pem"


@pytest.fixture(scope="module")
def ca() -> Ca:
    return make_ca("Internal CA")


def write_config(directory: Path, tls: str, ca: Ca | None = None) -> Path:
    (directory / "gateway.yaml").write_text(BASE.format(tls=tls))
    if ca is not None:
        (directory / "tls").mkdir(exist_ok=True)
        (directory / "tls" / "ca.pem").write_bytes(ca.pem)
    return directory


def errors_of(directory: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load_config(directory)
    return [str(e) for e in caught.value.errors]


def test_ca_and_server_name(tmp_path: Path, ca: Ca) -> None:
    config = load_config(write_config(tmp_path, "      ca: tls/ca.pem\n      server_name: Accounts.Internal", ca))
    tls = config.service("accounts").tls
    assert tls is not None
    assert tls.ca == ca.pem
    assert tls.server_name == "accounts.internal" and tls.subject_alt_names == ()
    assert tls.accepted_names == ("accounts.internal",)
    assert tls.certificate_chain is None and tls.private_key is None
    assert referenced_files(config) == ((str(tmp_path / "tls" / "ca.pem"), file_stamp(str(tmp_path / "tls/ca.pem"))),)


def test_a_plaintext_service_has_no_tls(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(BASE.replace("    tls:\n{tls}\n", "").format())
    config = load_config(tmp_path)
    assert config.service("accounts").tls is None and referenced_files(config) == ()


def test_subject_alt_names_without_server_name_and_an_absolute_ca(tmp_path: Path, ca: Ca) -> None:
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    routes = tmp_path / "routes"
    routes.mkdir()
    config = load_config(write_config(routes, f"      ca: {tmp_path}/ca.pem\n      subject_alt_names: "
                                              "[accounts.internal, '*.Accounts.internal', 10.0.0.7, '::1', "
                                              "accounts.internal]"))
    tls = config.service("accounts").tls
    assert tls is not None and tls.server_name == ""
    assert tls.subject_alt_names == ("accounts.internal", "*.accounts.internal", "10.0.0.7", "::1")
    assert tls.accepted_names == tls.subject_alt_names


def test_client_certificate_pair_for_mtls(tmp_path: Path, ca: Ca) -> None:
    cert, key = ca.issue("gateway", server=False)
    cert_path, key_path = write_pair(tmp_path / "tls", cert, key, stem="gateway", chain=(ca.cert,))
    config = load_config(write_config(tmp_path, MTLS, ca))
    tls = config.service("accounts").tls
    assert tls is not None
    assert tls.certificate_chain == cert_path.read_bytes() and tls.private_key == key_path.read_bytes()
    assert [path for path, _ in referenced_files(config)] == [
        str(tmp_path / "tls" / "ca.pem"), str(cert_path), str(key_path)]
    assert "PRIVATE KEY" not in repr(config)


def test_a_rotated_ca_changes_the_config(tmp_path: Path, ca: Ca) -> None:
    from controlplane.cache import config_version

    write_config(tmp_path, CA_AND_NAME, ca)
    first = config_version(load_config(tmp_path))
    assert config_version(load_config(tmp_path)) == first
    (tmp_path / "tls" / "ca.pem").write_bytes(ca.pem + make_ca("Next CA").pem)
    assert config_version(load_config(tmp_path)) != first


def test_missing_ca_and_missing_name(tmp_path: Path) -> None:
    found = errors_of(write_config(tmp_path, "      ca: tls/ca.pem"))
    assert found == [
        f"{tmp_path}/gateway.yaml:8:7: services[accounts].tls.server_name: give server_name, the DNS name the "
        "hosts' certificates carry (also sent as SNI), or subject_alt_names: endpoints are IP addresses, there is "
        "no name to verify them by",
        f"{tmp_path}/gateway.yaml:8:11: services[accounts].tls.ca: cannot read {tmp_path}/tls/ca.pem: "
        "No such file or directory",
    ]


def test_ca_without_a_certificate_and_a_folder(tmp_path: Path, ca: Ca) -> None:
    write_config(tmp_path, CA_AND_NAME, ca)
    (tmp_path / "tls" / "ca.pem").write_bytes(key_pem(ec_key()))
    (message,) = errors_of(tmp_path)
    assert message == (f"{tmp_path}/gateway.yaml:8:11: services[accounts].tls.ca: tls/ca.pem holds no PEM "
                       "certificate (-----BEGIN CERTIFICATE-----)")
    (message,) = errors_of(write_config(tmp_path, "      ca: tls\n      server_name: a.internal"))
    assert message == f"{tmp_path}/gateway.yaml:8:11: services[accounts].tls.ca: {tmp_path}/tls is not a regular file"


def test_certificate_without_key_and_key_without_certificate(tmp_path: Path, ca: Ca) -> None:
    cert, key = ca.issue("gateway", server=False)
    write_pair(tmp_path / "tls", cert, key, stem="gateway")
    (message,) = errors_of(write_config(tmp_path, CA_AND_NAME + "\n      certificate: tls/gateway.pem", ca))
    assert message == (f"{tmp_path}/gateway.yaml:10:20: services[accounts].tls.certificate: certificate needs key, "
                       "the private key of the client certificate: give both (mTLS) or neither")
    (message,) = errors_of(write_config(tmp_path, CA_AND_NAME + "\n      key: tls/gateway-key.pem", ca))
    assert message == (f"{tmp_path}/gateway.yaml:10:12: services[accounts].tls.key: key needs certificate, "
                       "the client certificate of the key: give both (mTLS) or neither")


def test_key_of_another_certificate(tmp_path: Path, ca: Ca) -> None:
    cert, _key = ca.issue("gateway", server=False)
    write_pair(tmp_path / "tls", cert, ec_key(), stem="gateway")
    (message,) = errors_of(write_config(tmp_path, MTLS, ca))
    assert message == (f"{tmp_path}/gateway.yaml:11:12: services[accounts].tls.key: tls/gateway-key.pem is not the "
                       "key of the certificate 'CN=gateway' in tls/gateway.pem (the first certificate of the file)")


def test_weak_key_and_expired_client_certificate(tmp_path: Path, ca: Ca) -> None:
    ended = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    cert, key = ca.issue("gateway", rsa_key(1024), server=False, not_after=ended)
    write_pair(tmp_path / "tls", cert, key, stem="gateway")
    found = errors_of(write_config(tmp_path, MTLS, ca))
    assert found == [
        f"{tmp_path}/gateway.yaml:10:20: services[accounts].tls.certificate: the certificate 'CN=gateway' (the first "
        "in the file) expired on 2025-01-02 03:04:05 UTC",
        f"{tmp_path}/gateway.yaml:11:12: services[accounts].tls.key: the RSA key has 1024 bits; at least 2048 are "
        "needed",
    ]
    pem = key_pem(key)
    body = b"".join(pem.splitlines()[1:-1]).decode()
    der = base64.b64decode(body)
    for line in found:
        assert all(body[i:i + 16] not in line for i in range(0, len(body) - 16, 16))
        assert der.hex()[:32] not in line


def test_unreadable_key_text_is_never_quoted(tmp_path: Path, ca: Ca) -> None:
    cert, key = ca.issue("gateway", server=False)
    write_pair(tmp_path / "tls", cert, key, stem="gateway")
    secret = key_pem(key)
    (tmp_path / "tls" / "gateway-key.pem").write_bytes(secret.replace(b"PRIVATE KEY", b"PRIVATE KEX"))
    (message,) = errors_of(write_config(tmp_path, MTLS, ca))
    assert message == (f"{tmp_path}/gateway.yaml:11:12: services[accounts].tls.key: tls/gateway-key.pem holds no "
                       "readable PEM private key (unencrypted PKCS#8, PKCS#1 or SEC1)")


def test_names_are_checked_by_shape(tmp_path: Path, ca: Ca) -> None:
    found = errors_of(write_config(tmp_path, "      ca: tls/ca.pem\n      server_name: 10.0.0.7\n"
                                             "      subject_alt_names: ['a..b', '*']\n      kee: x.pem", ca))
    assert found == [
        f"{tmp_path}/gateway.yaml:9:20: services[accounts].tls.server_name: '10.0.0.7' is an IP address; SNI "
        "carries a DNS name (use subject_alt_names for an IP)",
        f"{tmp_path}/gateway.yaml:10:27: services[accounts].tls.subject_alt_names[0]: 'a..b' is neither a DNS name "
        "(accounts.internal, or *.accounts.internal for any one label in front) nor an IP address",
        f"{tmp_path}/gateway.yaml:10:35: services[accounts].tls.subject_alt_names[1]: '*' is neither a DNS name "
        "(accounts.internal, or *.accounts.internal for any one label in front) nor an IP address",
        f"{tmp_path}/gateway.yaml:11:7: services[accounts].tls.kee: unknown field 'kee'; did you mean 'key'?",
    ]


def test_the_json_schema_knows_service_tls() -> None:
    import jsonschema
    from ruamel.yaml import YAML

    from controlplane.config.schema import json_schema

    validator = jsonschema.Draft202012Validator(json_schema())
    yaml = YAML(typ="safe", pure=True)
    assert list(validator.iter_errors(yaml.load(BASE.format(tls=MTLS + "\n      subject_alt_names: [a.b]")))) == []
    bad = yaml.load(BASE.format(tls="      server_name: a.b\n      cert: x.pem"))
    assert len(list(validator.iter_errors(bad))) >= 2  # no ca, unknown field


def test_a_file_too_large_to_be_pem_is_refused(tmp_path: Path, ca: Ca) -> None:
    from pavilion.pem_files import MAX_PEM_BYTES

    write_config(tmp_path, CA_AND_NAME, ca)
    (tmp_path / "tls" / "ca.pem").write_bytes(ca.pem + b"#" * MAX_PEM_BYTES)
    (message,) = errors_of(tmp_path)
    assert message == (f"{tmp_path}/gateway.yaml:8:11: services[accounts].tls.ca: {tmp_path}/tls/ca.pem is larger "
                       f"than {MAX_PEM_BYTES} bytes; not a PEM file")

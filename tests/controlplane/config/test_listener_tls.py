"""A listener's `tls:`: the files it names are read relative to the YAML, checked with `cryptography`,
and each problem is a `FILE:LINE:COL: listeners[public].tls.FIELD: message` that never shows the key."""

from __future__ import annotations

import base64
import datetime
import os
from pathlib import Path

import pytest

from controlplane.config.listener_tls import file_stamp, referenced_files
from controlplane.config.load import load_config
from pavilion.errors import ConfigErrors
from tests.controlplane.certs import Ca, cert_pem, ec_key, key_pem, make_ca, rsa_key, write_pair

BASE = """regions: [eu-west]
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
GOOD_TLS = "      certificate: tls/edge.pem\n      key: tls/edge-key.pem"


@pytest.fixture(scope="module")
def ca() -> Ca:
    return make_ca()


def write_config(directory: Path, tls: str) -> Path:
    (directory / "gateway.yaml").write_text(BASE.format(tls=tls))
    return directory


def errors_of(directory: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load_config(directory)
    return [str(e) for e in caught.value.errors]


def test_certificate_and_key_are_read_relative_to_the_yaml(tmp_path: Path, ca: Ca) -> None:
    cert, key = ca.issue("edge")
    cert_path, key_path = write_pair(tmp_path / "tls", cert, key, chain=(ca.cert,))
    config = load_config(write_config(tmp_path, GOOD_TLS))
    tls = config.listener("public").tls
    assert tls is not None
    assert tls.certificate_chain == cert_path.read_bytes() and tls.certificate_chain.count(b"BEGIN CERTIFICATE") == 2
    assert tls.private_key == key_path.read_bytes()
    assert tls.client_ca is None and tls.require_client_certificate is False
    assert [path for path, _ in referenced_files(config)] == [str(cert_path), str(key_path)]
    assert dict(referenced_files(config))[str(key_path)] == file_stamp(str(key_path))
    assert "PRIVATE KEY" not in repr(config)


def test_client_ca_absolute_paths_and_an_rsa_key(tmp_path: Path, ca: Ca) -> None:
    cert, key = ca.issue("edge", rsa_key(2048))
    cert_path, key_path = write_pair(tmp_path / "elsewhere", cert, key)
    (tmp_path / "elsewhere" / "rp-ca.pem").write_bytes(ca.pem)
    routes = tmp_path / "routes"
    routes.mkdir()
    config = load_config(write_config(routes, f"      certificate: {cert_path}\n      key: {key_path}\n"
                                              f"      client_ca: ../elsewhere/rp-ca.pem\n"
                                              "      require_client_certificate: true"))
    tls = config.listener("public").tls
    assert tls is not None and tls.client_ca == ca.pem and tls.require_client_certificate is True
    assert len(referenced_files(config)) == 3


def test_a_new_key_changes_the_config_and_nothing_else_does(tmp_path: Path, ca: Ca) -> None:
    from controlplane.cache import config_version

    cert, key = ca.issue("edge")
    write_pair(tmp_path / "tls", cert, key)
    write_config(tmp_path, GOOD_TLS)
    first = config_version(load_config(tmp_path))
    assert config_version(load_config(tmp_path)) == first
    cert2, key2 = ca.issue("edge")
    write_pair(tmp_path / "tls", cert2, key2)
    assert config_version(load_config(tmp_path)) != first


def test_missing_files(tmp_path: Path) -> None:
    found = errors_of(write_config(tmp_path, GOOD_TLS))
    assert found == [
        f"{tmp_path}/gateway.yaml:7:20: listeners[public].tls.certificate: cannot read "
        f"{tmp_path}/tls/edge.pem: No such file or directory",
        f"{tmp_path}/gateway.yaml:8:12: listeners[public].tls.key: cannot read "
        f"{tmp_path}/tls/edge-key.pem: No such file or directory",
    ]


def test_not_pem_and_unreadable_key(tmp_path: Path, ca: Ca) -> None:
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "edge.pem").write_text("hello\n")
    secret = key_pem(ec_key())
    (tmp_path / "tls" / "edge-key.pem").write_bytes(secret.replace(b"PRIVATE KEY", b"PRIVATE KEX")[:-20])
    found = errors_of(write_config(tmp_path, GOOD_TLS))
    assert found == [
        f"{tmp_path}/gateway.yaml:7:20: listeners[public].tls.certificate: tls/edge.pem holds no PEM certificate "
        "(-----BEGIN CERTIFICATE-----)",
        f"{tmp_path}/gateway.yaml:8:12: listeners[public].tls.key: tls/edge-key.pem holds no readable PEM private "
        "key (unencrypted PKCS#8, PKCS#1 or SEC1)",
    ]
    body = b"".join(secret.splitlines()[1:-1])
    assert all(body[:40].decode() not in line for line in found)


def test_key_of_another_certificate(tmp_path: Path, ca: Ca) -> None:
    cert, _key = ca.issue("edge")
    write_pair(tmp_path / "tls", cert, ec_key())
    (message,) = errors_of(write_config(tmp_path, GOOD_TLS))
    assert message == (f"{tmp_path}/gateway.yaml:8:12: listeners[public].tls.key: tls/edge-key.pem is not the key "
                       "of the certificate 'CN=edge' in tls/edge.pem (the first certificate of the file)")


def test_the_leaf_must_come_first(tmp_path: Path, ca: Ca) -> None:
    cert, key = ca.issue("edge")
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "edge.pem").write_bytes(ca.pem + cert_pem(cert))
    (tmp_path / "tls" / "edge-key.pem").write_bytes(key_pem(key))
    (message,) = errors_of(write_config(tmp_path, GOOD_TLS))
    assert "is not the key of the certificate 'CN=Pavilion Test CA'" in message


def test_weak_rsa_key(tmp_path: Path, ca: Ca) -> None:
    cert, key = ca.issue("edge", rsa_key(1024))
    write_pair(tmp_path / "tls", cert, key)
    (message,) = errors_of(write_config(tmp_path, GOOD_TLS))
    assert message == (f"{tmp_path}/gateway.yaml:8:12: listeners[public].tls.key: the RSA key has 1024 bits; "
                       "at least 2048 are needed")


def test_expired_leaf(tmp_path: Path, ca: Ca) -> None:
    ended = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    cert, key = ca.issue("old-edge", not_after=ended)
    write_pair(tmp_path / "tls", cert, key)
    (message,) = errors_of(write_config(tmp_path, GOOD_TLS))
    assert message == (f"{tmp_path}/gateway.yaml:7:20: listeners[public].tls.certificate: the certificate "
                       "'CN=old-edge' (the first in the file) expired on 2025-01-02 03:04:05 UTC")


def test_require_client_certificate_needs_client_ca(tmp_path: Path, ca: Ca) -> None:
    cert, key = ca.issue("edge")
    write_pair(tmp_path / "tls", cert, key)
    (message,) = errors_of(write_config(tmp_path, GOOD_TLS + "\n      require_client_certificate: true"))
    assert message == (f"{tmp_path}/gateway.yaml:9:35: listeners[public].tls.require_client_certificate: "
                       "require_client_certificate needs client_ca, the CA client certificates are verified against")


def test_client_ca_without_a_certificate(tmp_path: Path, ca: Ca) -> None:
    cert, key = ca.issue("edge")
    write_pair(tmp_path / "tls", cert, key)
    (tmp_path / "tls" / "ca.pem").write_bytes(key_pem(ec_key()))
    (message,) = errors_of(write_config(tmp_path, GOOD_TLS + "\n      client_ca: tls/ca.pem"))
    assert message == (f"{tmp_path}/gateway.yaml:9:18: listeners[public].tls.client_ca: tls/ca.pem holds no PEM "
                       "certificate (-----BEGIN CERTIFICATE-----)")
    assert "PRIVATE" not in message


def test_shape_problems_are_reported_before_any_file_is_read(tmp_path: Path) -> None:
    found = errors_of(write_config(tmp_path, "      certificate: ''\n      kee: x.pem"))
    assert found == [  # (a certificate without a key is told once the shape is right: see test_listener_tls_regions)
        f"{tmp_path}/gateway.yaml:7:20: listeners[public].tls.certificate: must name a file",
        f"{tmp_path}/gateway.yaml:8:7: listeners[public].tls.kee: unknown field 'kee'; did you mean 'key'?",
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_key_file(tmp_path: Path, ca: Ca) -> None:
    cert, key = ca.issue("edge")
    _cert_path, key_path = write_pair(tmp_path / "tls", cert, key)
    key_path.chmod(0)
    (message,) = errors_of(write_config(tmp_path, GOOD_TLS))
    assert message.endswith(f"listeners[public].tls.key: cannot read {key_path}: Permission denied")


def test_no_message_holds_the_key(tmp_path: Path, ca: Ca) -> None:
    """Every key problem at once: not one line shows a byte of the key (PEM body or its base64)."""
    key = rsa_key(1024)
    cert, _ = ca.issue("edge", key)
    write_pair(tmp_path / "tls", cert, key)
    pem = key_pem(key)
    body = b"".join(pem.splitlines()[1:-1]).decode()
    der = base64.b64decode(body)
    for line in errors_of(write_config(tmp_path, GOOD_TLS)):
        assert "PRIVATE KEY" not in line
        assert all(body[i:i + 16] not in line for i in range(0, len(body) - 16, 16))
        assert der.hex()[:32] not in line


def test_a_folder_is_not_a_file(tmp_path: Path, ca: Ca) -> None:
    cert, key = ca.issue("edge")
    write_pair(tmp_path / "tls", cert, key)
    (message,) = errors_of(write_config(tmp_path, "      certificate: tls/edge.pem\n      key: tls"))
    assert message == f"{tmp_path}/gateway.yaml:8:12: listeners[public].tls.key: {tmp_path}/tls is not a regular file"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path, ca: Ca) -> None:
    cert, key = ca.issue("edge")
    write_pair(tmp_path / "tls", cert, key)
    os.mkfifo(tmp_path / "tls" / "pipe")
    (message,) = errors_of(write_config(tmp_path, "      certificate: tls/pipe\n      key: tls/edge-key.pem"))
    assert message.endswith(f"listeners[public].tls.certificate: {tmp_path}/tls/pipe is not a regular file")


def test_the_json_schema_knows_tls() -> None:
    import jsonschema
    from ruamel.yaml import YAML

    from controlplane.config.schema import json_schema

    validator = jsonschema.Draft202012Validator(json_schema())
    yaml = YAML(typ="safe", pure=True)
    good = yaml.load(BASE.format(tls=GOOD_TLS + "\n      client_ca: ca.pem\n      require_client_certificate: true"))
    assert list(validator.iter_errors(good)) == []
    bad = yaml.load(BASE.format(tls="      certificate: ''\n      kee: x.pem"))
    assert len(list(validator.iter_errors(bad))) >= 2  # empty path, no key, unknown field

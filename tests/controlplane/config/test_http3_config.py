"""`listeners[].tls.http3`: false by default, read as a bool, refused with client_ca (client certificates over QUIC
are not verified end to end yet) and when its UDP listener's name is another listener's, each with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.config.load import load_config
from pavilion.errors import ConfigErrors
from tests.controlplane.certs import make_ca, write_pair

BASE = """regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: 8443
    tls:
      certificate: tls/edge.pem
      key: tls/edge-key.pem
{extra}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:9001, region: eu-west}}]
routes:
  - {{name: accounts, listener: public, match: {{prefix: /}}, service: accounts}}
"""


def write(directory: Path, extra: str) -> Path:
    ca = make_ca()
    write_pair(directory / "tls", *ca.issue("edge"))
    (directory / "tls" / "rp-ca.pem").write_bytes(ca.pem)
    (directory / "gateway.yaml").write_text(BASE.format(extra=extra))
    return directory


def errors_of(directory: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load_config(directory)
    return [str(e) for e in caught.value.errors]


def test_http3_is_off_by_default_and_read_when_given(tmp_path: Path) -> None:
    off = load_config(write(tmp_path / "off", "")).listener("public").tls
    on = load_config(write(tmp_path / "on", "      http3: true")).listener("public").tls
    assert off is not None and off.http3 is False
    assert on is not None and on.http3 is True


def test_http3_with_client_ca_is_refused_at_its_line(tmp_path: Path) -> None:
    directory = write(tmp_path, "      client_ca: tls/rp-ca.pem\n      http3: true")
    (message,) = errors_of(directory)
    assert message.startswith(f"{directory / 'gateway.yaml'}:10:")
    assert "listeners[public].tls.http3" in message and "client_ca" in message and "not verified" in message


def test_http3_outside_tls_is_an_unknown_listener_field(tmp_path: Path) -> None:
    directory = write(tmp_path, "    http3: true")
    (message,) = errors_of(directory)
    assert message.startswith(f"{directory / 'gateway.yaml'}:9:")
    assert "http3" in message and "unknown field" in message


def test_http3_must_be_a_boolean(tmp_path: Path) -> None:
    messages = errors_of(write(tmp_path, "      http3: sometimes"))
    assert any("tls.http3" in m for m in messages), messages


def test_the_udp_listener_name_must_be_free(tmp_path: Path) -> None:
    extra = ("      http3: true\n  - name: public-h3\n    address: 127.0.0.1\n    port: 8444\n"
             "    tls: {certificate: tls/edge.pem, key: tls/edge-key.pem}")
    directory = write(tmp_path, extra)
    (message,) = errors_of(directory)
    assert message.startswith(f"{directory / 'gateway.yaml'}:9:")
    assert "public-h3" in message and "another listener" in message

"""`pavilion validate` and `pavilion plan` warn (stderr, exit code unchanged) about a certificate that
expires within 30 days, at the file:line of the listener or service whose `tls:` names it."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from controlplane.cert_expiry import expiry_warnings
from controlplane.config.check import run_validate
from controlplane.config.load import load_config
from tests.controlplane.certs import Ca, make_ca
from tests.controlplane.test_cert_expiry import NOW, pem_expiring, write_config

UPSTREAM = """services:
  - name: ledger
    endpoints: [{address: 127.0.0.1:9002, region: eu-west}]
    tls: {ca: tls/ledger-ca.pem, server_name: ledger.internal}
"""


@pytest.fixture(scope="module")
def ca() -> Ca:
    return make_ca()


def test_a_certificate_within_30_days_is_named_at_its_entry_soonest_first(tmp_path: Path, ca: Ca) -> None:
    write_config(tmp_path, ca, cert_days=12)
    (tmp_path / "tls" / "ledger-ca.pem").write_bytes(pem_expiring(ca, 3, "ledger-ca")[0])
    (tmp_path / "upstream.yaml").write_text(UPSTREAM)
    lines = expiry_warnings(load_config(str(tmp_path)), clock=lambda: NOW)
    assert len(lines) == 2
    assert re.match(r".*upstream\.yaml:2:\d+: warning: the certificates of secret ledger/upstream-ca expire at "
                    r"\S+, in 3\.0 days", lines[0]), lines[0]
    assert re.match(r".*gateway\.yaml:3:\d+: warning: the certificates of secret public/certificate .* in 12\.0 days",
                    lines[1]), lines[1]


def test_nothing_is_said_of_a_certificate_with_more_than_30_days_left(tmp_path: Path, ca: Ca) -> None:
    write_config(tmp_path, ca, cert_days=45)
    assert expiry_warnings(load_config(str(tmp_path)), clock=lambda: NOW) == []


def test_validate_warns_on_stderr_and_still_passes(tmp_path: Path, ca: Ca, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(tmp_path, ca, cert_days=5)
    assert run_validate(argparse.Namespace(directory=str(tmp_path), no_envoy=True)) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ok: 1 file")
    assert "gateway.yaml:3:" in err and "secret public/certificate" in err and "days" in err

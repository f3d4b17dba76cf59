"""`pavilion controlplane --xds-tls-cert/--xds-tls-key/--xds-client-ca`: the files are checked before
anything starts; a problem exits 2 naming the flag, never quoting the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.xds_tls import load_server_tls
from pavilion.errors import ConfigError
from tests.controlplane.certs import make_ca, write_pair


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    ca = make_ca()
    cert, key = write_pair(tmp_path, *ca.issue("controlplane"), stem="xds")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    _other_cert, other_key = write_pair(tmp_path, *ca.issue("other"), stem="other")
    return {"cert": cert, "key": key, "ca": tmp_path / "ca.pem", "other_key": other_key, "dir": tmp_path}


def test_neither_flag_is_plaintext_and_both_give_server_tls(files: dict[str, Path]) -> None:
    assert load_server_tls("", "") is None
    tls = load_server_tls(str(files["cert"]), str(files["key"]))
    assert tls is not None
    assert tls.cert_chain == files["cert"].read_bytes() and tls.private_key == files["key"].read_bytes()
    assert tls.client_ca is None
    mtls = load_server_tls(str(files["cert"]), str(files["key"]), str(files["ca"]))
    assert mtls is not None and mtls.client_ca == files["ca"].read_bytes()


def test_refusals_name_the_flag(files: dict[str, Path]) -> None:
    cert, key, ca = str(files["cert"]), str(files["key"]), str(files["ca"])
    cases = [
        ((cert, ""), "--xds-tls-cert: needs --xds-tls-key"),
        (("", key), "--xds-tls-key: needs --xds-tls-cert"),
        (("", "", ca), "--xds-client-ca: needs --xds-tls-cert"),
        ((str(files["dir"] / "missing.pem"), key), "--xds-tls-cert: cannot read"),
        ((cert, str(files["dir"])), "--xds-tls-key: " + str(files["dir"]) + " is not a regular file"),
        ((key, key), "--xds-tls-cert: " + key + " holds no PEM certificate"),
        ((cert, cert), "--xds-tls-key: " + cert + " holds no readable"),
        ((cert, str(files["other_key"])), "--xds-tls-key: " + str(files["other_key"]) + " is not the key of"),
        ((cert, key, key), "--xds-client-ca: " + key + " holds no PEM certificate"),
    ]
    for args, message in cases:
        with pytest.raises(ConfigError) as raised:
            load_server_tls(*args)
        assert str(raised.value).startswith(message), (args, str(raised.value))


def test_the_command_exits_2_before_serving_and_never_prints_the_key(files: dict[str, Path],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from pavilion.cli import main

    config = files["dir"] / "routes"
    config.mkdir()
    secret = files["other_key"].read_bytes().decode()
    body = "".join(secret.splitlines()[1:-1])
    for flags, flag in ((["--xds-tls-cert", str(files["cert"]), "--xds-tls-key", str(files["other_key"])],
                         "--xds-tls-key"),
                        (["--xds-tls-cert", str(files["other_key"]), "--xds-tls-key", str(files["key"])],
                         "--xds-tls-cert"),
                        (["--xds-tls-key", str(files["key"])], "--xds-tls-key")):
        assert main(["controlplane", "--config", str(config), "--xds-port", "0", "--admin-port", "0",
                     *flags]) == 2
        out = capsys.readouterr()
        assert out.err.startswith(f"controlplane: {flag}: "), out.err
        assert body[:40] not in out.err + out.out

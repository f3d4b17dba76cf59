"""The `identity:` section and its keys: every bad setting refused naming the file, line and field; keys of the
wrong kind or size refused naming the key file; an unreadable PIN file is a clear exit 2 of `pavilion extauthz`;
`pavilion identity-key` writes a 0600 PEM and prints only the public key."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from structlog.testing import capture_logs

from extauthz.app import ExtAuthzSettings, run
from extauthz.config import load_tenants
from extauthz.identity_cli import write_key_file
from extauthz.identity_config import FileKeySource, IdentitySettings, Pkcs11KeySource, load_identity
from extauthz.identity_keys import load_signing_key
from extauthz.identity_service import read_identity
from extauthz.signing import private_key_pem
from pavilion.cli import build_parser
from pavilion.errors import ConfigError
from tests.extauthz.issuer import Issuer

ACME = Issuer()
TENANTS = f"""tenants:
  - id: acme
    issuer: {ACME.issuer}
    audiences: [{ACME.audience}]
    jwks: {{inline: {json.dumps(ACME.jwks())}}}
"""


def write(directory: Path, identity: str, name: str = "extauthz.yaml") -> Path:
    path = directory / name
    path.write_text(TENANTS + identity)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_identity(path)
    return str(caught.value)


def test_the_tenant_file_holds_the_identity_section_beside_its_tenants(tmp_path: Path) -> None:
    path = write(tmp_path, "identity:\n  issuer: https://gw.test\n  key: {file: keys/id.pem}\n  lifetime: 2m\n"
                           "  header: x-gateway-identity\n")
    assert [t.id for t in load_tenants(path)] == ["acme"]
    settings = load_identity(path)
    assert settings == IdentitySettings(issuer="https://gw.test", key=FileKeySource(str(tmp_path / "keys/id.pem")),
                                        lifetime=120.0, header="x-gateway-identity")
    hsm = write(tmp_path, "identity:\n  issuer: https://gw.test\n  key:\n    pkcs11: {module: /usr/lib/x.so, "
                          "token: gw, key: id-1, pin_file: pin}\n", "hsm.yaml")
    assert load_identity(hsm) == IdentitySettings(
        issuer="https://gw.test", key=Pkcs11KeySource("/usr/lib/x.so", "gw", "id-1", str(tmp_path / "pin")))
    assert load_identity(write(tmp_path, "", "none.yaml")) is None
    with pytest.raises(ConfigError, match="unknown field"):
        load_tenants(write(tmp_path, "identities: {}\n", "typo.yaml"))


@pytest.mark.parametrize(("identity", "where", "message"), [
    ("identity:\n  key: {file: k.pem}\n", ":7:", "missing required field `issuer`"),
    ("identity:\n  issuer: gw.test\n  key: {file: k.pem}\n", "identity.issuer", "http(s) URL"),
    ("identity:\n  issuer: https://gw.test\n  key: {file: k.pem}\n  lifetime: 2h\n", "identity.lifetime", "between"),
    ("identity:\n  issuer: https://gw.test\n  key: {file: k.pem}\n  lifetime: 1s\n", ":9:", "between"),
    ("identity:\n  issuer: https://gw.test\n  key: {pem: k.pem}\n", "identity.key", "{file: PEM} or {pkcs11"),
    ("identity:\n  issuer: https://gw.test\n  key: {pkcs11: {module: m.so, token: t, key: k}}\n",
     "identity.key.pkcs11", "missing required field `pin_file`"),
    ("identity:\n  issuer: https://gw.test\n  key: {pkcs11: {module: m.so, token: t, key: k, pin: '1'}}\n",
     "identity.key.pkcs11.pin", "unknown field"),
    ("identity:\n  issuer: https://gw.test\n  key: {file: k.pem}\n  header: x-pavilion-tenant\n", "identity.header",
     "reserved"),
    ("identity:\n  issuer: https://gw.test\n  key: {file: k.pem}\n  algorithm: HS256\n", "identity.algorithm",
     "RS256, PS256"),
    ("identity:\n  issuer: https://gw.test\n  key: {file: k.pem}\n  audience: x\n", "identity.audience",
     "unknown field"),
])
def test_a_bad_setting_is_refused_naming_the_file_line_and_field(tmp_path: Path, identity: str, where: str,
                                                                 message: str) -> None:
    error = error_of(write(tmp_path, identity))
    assert str(tmp_path / "extauthz.yaml") in error and where in error and message in error


def key_settings(tmp_path: Path, pem: bytes | None, **overrides: str) -> IdentitySettings:
    path = tmp_path / "identity.pem"
    if pem is not None:
        path.write_bytes(pem)
    return IdentitySettings(issuer="https://gw.test", key=FileKeySource(str(path)), **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize(("pem", "overrides", "message"), [
    (None, {}, "cannot read"),
    (b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n", {}, "not an unencrypted PEM"),
    (private_key_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), {}, "1024 bits is too small"),
    (private_key_pem(ed25519.Ed25519PrivateKey.generate()), {}, "cannot sign assertions"),
    (private_key_pem(ec.generate_private_key(ec.SECP256K1())), {}, "curve secp256k1 is not supported"),
    (private_key_pem(ec.generate_private_key(ec.SECP256R1())), {"algorithm": "PS256"}, "is for RSA keys"),
])
def test_a_key_that_cannot_sign_assertions_is_refused_naming_the_file(tmp_path: Path, pem: bytes | None,
                                                                      overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_signing_key(key_settings(tmp_path, pem, **overrides))
    assert "identity.key.file" in str(caught.value) and str(tmp_path / "identity.pem") in str(caught.value)
    assert message in str(caught.value)
    if pem is not None:
        assert pem.decode(errors="replace").splitlines()[1] not in str(caught.value)  # never the key itself


def test_the_algorithm_follows_the_key(tmp_path: Path) -> None:
    assert load_signing_key(key_settings(tmp_path, private_key_pem(ec.generate_private_key(ec.SECP256R1())))).alg \
        == "ES256"
    rsa_pem = private_key_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert load_signing_key(key_settings(tmp_path, rsa_pem)).alg == "RS256"
    key = load_signing_key(key_settings(tmp_path, rsa_pem, algorithm="PS256"))
    assert key.alg == "PS256" and key.jwk["alg"] == "PS256" and "d" not in key.jwk and "p" not in key.jwk
    assert "PRIVATE" not in repr(key) and key.kid in repr(key)


def test_identity_in_two_files_or_none_in_the_named_one_is_refused(tmp_path: Path) -> None:
    both = write(tmp_path, "identity:\n  issuer: https://gw.test\n  key: {file: k.pem}\n")
    named = tmp_path / "identity.yaml"
    named.write_text("identity:\n  issuer: https://gw.test\n  key: {file: k.pem}\n")
    with pytest.raises(ConfigError, match="both here and in"):
        read_identity(str(named), str(both))
    empty = tmp_path / "empty.yaml"
    empty.write_text("tenants: []\n")
    with pytest.raises(ConfigError, match="no `identity:` section"):
        read_identity(str(empty), "")
    assert read_identity(str(named), str(write(tmp_path, "", "plain.yaml"))) is not None


def test_an_unreadable_pin_file_stops_extauthz_with_exit_2_naming_it(tmp_path: Path) -> None:
    config = write(tmp_path, "identity:\n  issuer: https://gw.test\n  key:\n    pkcs11: {module: "
                             "/usr/lib/softhsm/libsofthsm2.so, token: gw, key: id-1, pin_file: secrets/missing-pin}\n")
    # Captured, not read from the stream: a logger first used outside capture_logs stays bound to the stream.
    with capture_logs() as logs:
        assert run(ExtAuthzSettings(config=str(config), port=0)) == 2
    [refusal] = [entry for entry in logs if entry["event"] == "identity_rejected"]
    [error] = refusal["errors"]
    assert error.startswith(f"{config}:9:") and "identity.key.pkcs11" in error
    assert f"cannot read the PIN file {tmp_path / 'secrets/missing-pin'}" in error


def identity_key(*argv: str) -> int:
    """The command's handler as `pavilion` runs it, without `main`'s logging set-up (a second one would leave
    loggers cached under the first, which other tests' capture_logs then cannot see)."""
    args = build_parser().parse_args(["identity-key", *argv])
    code: int = args.func(args)
    return code


def test_identity_key_writes_a_0600_pem_and_prints_only_the_public_jwk(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "identity.pem"
    assert identity_key("--out", str(out)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = load_signing_key(IdentitySettings(issuer="https://gw.test", key=FileKeySource(str(out))))
    assert printed == key.jwk and "d" not in printed
    assert identity_key("--out", str(out)) == 2  # never over an existing key by accident
    assert "exists" in capsys.readouterr().err
    out.chmod(0o644)
    jwk = write_key_file(str(out), "RS256", force=True)
    assert jwk["kty"] == "RSA" and stat.S_IMODE(out.stat().st_mode) == 0o600

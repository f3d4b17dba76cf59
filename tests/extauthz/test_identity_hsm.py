"""Identity assertions signed inside SoftHSM2 through PKCS#11: the key pair is generated in the token (not
extractable, sensitive), ext_authz signs with it there, and the assertion verifies with the public key the
JWKS endpoint publishes. A wrong PIN, token or label is refused naming what and where, never the PIN.

One token for the module: the PKCS#11 module is initialized once per process, with the SOFTHSM2_CONF of
that moment (`make test` installs softhsm2)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11

from extauthz.authorizer import Authorizer
from extauthz.identity_assertion import AUDIENCE_EXTENSION, IdentityAssertions
from extauthz.identity_cli import generate_in_token
from extauthz.identity_config import IdentitySettings, Pkcs11KeySource
from extauthz.identity_keys import load_signing_key
from extauthz.identity_service import identity_routes
from extauthz.pkcs11_signer import pkcs11_library
from extauthz.revocation import MemoryRevocations
from extauthz.signing import generate_key
from extauthz.tenant_set import build_tenants, retire
from pavilion.admin import AdminServer
from pavilion.errors import BackendUnavailable, ConfigError
from tests.extauthz.issuer import Issuer

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN, PIN = "pavilion-test", "4711-pin"
ACME = Issuer()

pytestmark = pytest.mark.skipif(shutil.which("softhsm2-util") is None or not Path(MODULE).exists(),
                                reason="softhsm2 is not installed (make test installs it)")


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A SoftHSM2 token in a temp dir, initialized with softhsm2-util; its directory (holding `pin`)."""
    directory = tmp_path_factory.mktemp("softhsm")
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--pin", PIN, "--so-pin", "so-1234"],
                   check=True, capture_output=True, timeout=30)
    (directory / "pin").write_text(PIN + "\n")
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


def source(hsm: Path, label: str, pin_file: str = "pin", token: str = TOKEN) -> Pkcs11KeySource:
    return Pkcs11KeySource(module=MODULE, token=token, key=label, pin_file=str(hsm / pin_file))


def test_the_key_is_generated_inside_the_token_and_cannot_be_read_out(hsm: Path) -> None:
    jwk = generate_in_token(source(hsm, "sealed"), "ES256")
    assert jwk["kty"] == "EC" and jwk["alg"] == "ES256" and "d" not in jwk
    with pkcs11_library(MODULE).get_token(token_label=TOKEN).open(user_pin=PIN) as session:
        private = session.get_key(label="sealed", object_class=ObjectClass.PRIVATE_KEY)
        assert private[Attribute.SENSITIVE] is True and private[Attribute.EXTRACTABLE] is False
        with pytest.raises(p11.AttributeSensitive):
            private[Attribute.VALUE]
    with pytest.raises(ConfigError, match="already holds a key labelled 'sealed'"):
        generate_in_token(source(hsm, "sealed"), "ES256")


@pytest.mark.parametrize(("alg", "label"), [("ES256", "identity-ec"), ("PS256", "identity-rsa")])
async def test_extauthz_signs_in_the_hsm_and_the_published_jwks_verifies_it(hsm: Path, alg: str, label: str) -> None:
    generate_in_token(source(hsm, label), alg)
    settings = IdentitySettings(issuer="https://gateway.test", key=source(hsm, label),
                                algorithm="PS256" if alg == "PS256" else None)
    identity = await IdentityAssertions.start(settings)
    tenants = await build_tenants((ACME.tenant(),))
    admin = AdminServer("127.0.0.1", 0, routes=identity_routes(identity))
    try:
        port = await admin.start()
        authorizer = Authorizer(tenants, MemoryRevocations(), identity=identity)
        token = ACME.token(client_id="web")
        outcome = await authorizer.check({"authorization": f"Bearer {token}"}, "/",
                                         {"tenant": "acme", AUDIENCE_EXTENSION: "orders-api"})
        assertion = dict(outcome.headers)["x-pavilion-identity"]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/.well-known/jwks.json") as response:
                jwks: dict[str, Any] = await response.json()
            async with http.get(f"http://127.0.0.1:{port}/.well-known/openid-configuration") as response:
                discovery: dict[str, Any] = await response.json()
        assert discovery["issuer"] == "https://gateway.test"
        assert alg in discovery["id_token_signing_alg_values_supported"]
        assert discovery["jwks_uri"] == "https://gateway.test/.well-known/jwks.json"
        header = jwt.get_unverified_header(assertion)
        assert header["alg"] == alg and [k["kid"] for k in jwks["keys"]] == [header["kid"]]
        assert all(private not in jwks["keys"][0] for private in ("d", "p", "q", "dp", "dq", "qi"))
        claims = jwt.decode(assertion, jwt.PyJWK(jwks["keys"][0]).key, algorithms=[alg], audience="orders-api",
                            issuer="https://gateway.test")
        assert claims["sub"] == "user-1" and claims["tenant"] == "acme" and claims["client"] == "web"
        with pytest.raises(jwt.InvalidSignatureError):  # it is the HSM's key that signed, no other
            jwt.decode(assertion, jwt.PyJWK(generate_key(alg)[1]).key, algorithms=[alg], audience="orders-api")
    finally:
        await admin.stop()
        await retire(tenants, None)
        await identity.close()


def test_a_wrong_pin_token_or_label_is_refused_naming_what_and_never_the_pin(hsm: Path) -> None:
    generate_in_token(source(hsm, "named"), "ES256")
    (hsm / "wrong-pin").write_text("0000-wrong\n")
    cases = [
        (source(hsm, "named", pin_file="wrong-pin"), f"refused the PIN of {hsm / 'wrong-pin'}"),
        (source(hsm, "named", token="no-such-token"), "no token labelled 'no-such-token'"),
        (source(hsm, "not-there"), "PKCS#11 key 'not-there' in token 'pavilion-test'"),
        (source(hsm, "named", pin_file="missing"), f"cannot read the PIN file {hsm / 'missing'}"),
        (Pkcs11KeySource(module="/nonexistent/libpkcs11.so", token=TOKEN, key="named", pin_file=str(hsm / "pin")),
         "the PKCS#11 module /nonexistent/libpkcs11.so does not exist"),
    ]
    for key, message in cases:
        with pytest.raises(ConfigError) as caught:
            load_signing_key(IdentitySettings(issuer="https://gateway.test", key=key))
        assert message in str(caught.value) and "identity.key.pkcs11" in str(caught.value)
        assert PIN not in str(caught.value) and "0000-wrong" not in str(caught.value)


def test_a_lost_session_is_opened_again_for_the_same_key_and_fails_fast_meanwhile(hsm: Path) -> None:
    generate_in_token(source(hsm, "reconnecting"), "ES256")
    key = load_signing_key(IdentitySettings(issuer="https://gateway.test", key=source(hsm, "reconnecting")))
    try:
        public = jwt.PyJWK(key.jwk).key
        key._session.close()  # type: ignore[attr-defined]  # as an HSM restart drops every session
        signature = key.sign(b"header.payload")  # logged in again, and signed
        public.verify(der_signature(signature), b"header.payload", ec.ECDSA(hashes.SHA256()))
        key._session.close()  # type: ignore[attr-defined]
        with pytest.raises(BackendUnavailable, match="cannot be opened again yet"):
            key.sign(b"header.payload")  # a second loss within a second: no new login, a fast failure
    finally:
        key.close()


def der_signature(raw: bytes) -> bytes:
    half = len(raw) // 2
    return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

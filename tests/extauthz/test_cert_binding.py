"""Certificate-bound tokens (RFC 8705): the rules, then over real gRPC with the client certificate as Envoy
sends it (URL-encoded PEM in `attributes.source.certificate`), on a token's first check and cached ones."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from extauthz.cert_binding import UnverifiableBinding, certificate_thumbprint, token_binding
from tests.extauthz import test_service
from tests.extauthz.test_service import ACME, bearer, denied, ok_headers

stack = test_service.stack  # the fixture: a real gRPC Check server over an in-memory store


def client_certificate(name: str) -> tuple[str, str]:
    """A self-signed client certificate: (Envoy's URL-encoded PEM, its x5t#S256 thumbprint)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest())
    return quote(certificate.public_bytes(Encoding.PEM).decode(), safe=""), thumbprint.rstrip(b"=").decode()


RP_ONE = client_certificate("rp-one")
RP_TWO = client_certificate("rp-two")


@pytest.mark.parametrize(("claims", "expected"), [
    ({}, None),
    ({"cnf": {"x5t#S256": "abc"}}, "abc"),
    ({"cnf": {"x5t#S256": "abc=", "other": 1}}, "abc"),
])
def test_a_tokens_binding_is_its_certificate_thumbprint(claims: dict[str, Any], expected: str | None) -> None:
    assert token_binding(claims) == expected


@pytest.mark.parametrize("cnf", [{"jkt": 7}, {"jwk": {"kty": "EC"}}, "abc", {"x5t#S256": 7},
                                 {"x5t#S256": ""}, None])
def test_a_binding_that_cannot_be_checked_is_refused(cnf: Any) -> None:
    with pytest.raises(UnverifiableBinding):
        token_binding({"cnf": cnf})


def test_the_thumbprint_of_envoys_url_encoded_certificate() -> None:
    encoded, thumbprint = RP_ONE
    assert "%0A" in encoded and "-----BEGIN%20CERTIFICATE" in encoded  # as Envoy sends it
    assert certificate_thumbprint(encoded) == thumbprint
    assert certificate_thumbprint("") is None
    assert certificate_thumbprint("not%20a%20certificate") is None


async def test_a_bound_token_passes_only_with_its_certificate(stack: dict[str, Any]) -> None:
    check = stack["check"]
    token = ACME.token(jti="bound-1", cnf={"x5t#S256": RP_ONE[1]})
    for _ in range(2):  # the first check (verification), then the cached one
        assert ok_headers(await check(bearer(token), certificate=RP_ONE[0]))[0]["x-pavilion-subject"] == "user-1"
        code, headers, body = denied(await check(bearer(token), certificate=RP_TWO[0]))
        assert (code, json.loads(body)) == (401, {"error": "certificate_mismatch"})
        assert headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        code, _, body = denied(await check(bearer(token)))
        assert (code, json.loads(body)) == (401, {"error": "certificate_missing"})
    assert stack["verifications"] == ["acme"]


async def test_a_mismatch_is_refused_before_the_routes_tenant_and_scopes(stack: dict[str, Any]) -> None:
    token = ACME.token(jti="bound-2", cnf={"x5t#S256": RP_ONE[1]})
    code, _, body = denied(await stack["check"](bearer(token), tenant="beta", extensions={"scopes": "admin"},
                                                certificate=RP_TWO[0]))
    assert (code, json.loads(body)) == (401, {"error": "certificate_mismatch"})


async def test_an_unbound_token_ignores_the_certificate_and_an_uncheckable_binding_is_refused(
        stack: dict[str, Any]) -> None:
    check = stack["check"]
    assert ok_headers(await check(bearer(ACME.token(jti="free")), certificate=RP_TWO[0]))
    dpop = ACME.token(jti="dpop", cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})
    for _ in range(2):
        code, _, body = denied(await check(bearer(dpop), certificate=RP_ONE[0]))
        assert (code, json.loads(body)) == (401, {"error": "dpop_bound_bearer"})  # tests/extauthz/test_dpop.py

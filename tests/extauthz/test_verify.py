"""verify_token: algorithm policy, signatures, and every claim rule, each with its reason code."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from extauthz.jwk import parse_jwk
from extauthz.keys import KeySet, key_set_for
from extauthz.signing import sign_token
from extauthz.tenant import JwksSource, Tenant
from extauthz.tokens import b64url_decode, b64url_encode
from extauthz.verify import REASONS, check_signature, unverified_issuer, verify_token
from pavilion.errors import BadSignature, ConfigError, ExpiredToken, MalformedToken, TokenError
from tests.extauthz.issuer import AUDIENCE, DROP, ISSUER, Issuer, cached_key, replace_part

NOW = 1_800_000_000.0
ALL_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
IDP = Issuer(algs=ALL_ALGS)
TENANT = IDP.tenant()
KEYS = IDP.key_set(TENANT)


async def verify(token: str, tenant: Tenant = TENANT, keys: KeySet = KEYS, now: float = NOW) -> Any:
    return await verify_token(token, tenant, keys, now)


async def reason(token: str, tenant: Tenant = TENANT, keys: KeySet = KEYS, now: float = NOW) -> str:
    with pytest.raises(TokenError) as info:
        await verify_token(token, tenant, keys, now)
    assert info.value.reason in REASONS
    return info.value.reason


def tok(alg: str = "RS256", **claims: Any) -> str:
    return IDP.token(alg, now=NOW, **claims)


@pytest.mark.parametrize("alg", ALL_ALGS)
async def test_every_supported_algorithm_verifies(alg: str) -> None:
    verified = await verify(tok(alg))
    assert verified.tenant_id == "acme"
    assert verified.issuer == ISSUER
    assert verified.subject == "user-1"
    assert verified.jti == "jti-1"
    assert verified.expires_at == int(NOW) + 300
    assert verified.issued_at == int(NOW)
    assert verified.claims["aud"] == AUDIENCE


# -- algorithm policy ---------------------------------------------------------------------------

async def test_algorithm_outside_the_tenant_allow_list_refused() -> None:
    tenant = IDP.tenant(algorithms=("RS256",))
    assert await reason(tok("ES256"), tenant) == "alg_not_allowed"
    await verify(tok("RS256"), tenant)


def test_tenant_cannot_allow_symmetric_or_unknown_algorithms() -> None:
    for alg in ("HS256", "none", "RSA1_5"):
        with pytest.raises(ConfigError, match="not accepted"):
            IDP.tenant(algorithms=(alg,))


async def test_kid_of_an_rsa_key_with_an_ec_alg_refused() -> None:
    header_lie = IDP.token("ES256", now=NOW, kid=IDP.kid("RS256"))
    assert await reason(header_lie) == "alg_key_mismatch"


async def test_es384_with_a_p256_key_refused() -> None:
    # Signed by the P-256 key, labelled ES384: the curve binding refuses it before any maths.
    token = IDP.token("ES256", now=NOW, headers={"alg": "ES384"})
    assert await reason(token) == "alg_key_mismatch"


async def test_rs256_signature_relabelled_ps256_fails() -> None:
    # Keys without a JWK alg accept any RSA algorithm, so the padding mismatch reaches the maths.
    unpinned = [{k: v for k, v in jwk.items() if k != "alg"} for jwk in IDP.jwks()["keys"]]
    tenant = IDP.tenant(jwks=JwksSource.of_keys(unpinned))
    keys = IDP.key_set(tenant)
    token = IDP.token("RS256", now=NOW, headers={"alg": "PS256"})
    assert await reason(token, tenant, keys) == "bad_signature"
    same_key_pss = sign_token(IDP.claims(NOW), IDP.private("RS256"), "PS256", IDP.kid("RS256"))
    await verify(same_key_pss, tenant, keys)


async def test_jwk_alg_pins_the_key_to_one_algorithm() -> None:
    # The RS256 JWK says alg RS256; an RS512 token under its kid is refused though the key type fits.
    token = IDP.token("RS256", now=NOW, headers={"alg": "RS512"})
    assert await reason(token) == "alg_key_mismatch"


def test_check_signature_refuses_a_key_of_another_type() -> None:
    ec_key = parse_jwk(cached_key("ES256")[1])
    with pytest.raises(TokenError) as info:
        check_signature(ec_key, "RS256", b"a.b", b"x" * 256)
    assert info.value.reason == "alg_key_mismatch"


# -- signature ----------------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_tampered_payload_refused(alg: str) -> None:
    token = tok(alg)
    other = tok(alg, sub="admin")
    assert await reason(replace_part(token, 1, other.split(".")[1])) == "bad_signature"


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
async def test_tampered_signature_refused(alg: str) -> None:
    token = tok(alg)
    sig = bytearray(b64url_decode(token.split(".")[2].encode(), "s"))
    sig[len(sig) // 2] ^= 1
    assert await reason(replace_part(token, 2, b64url_encode(bytes(sig)))) == "bad_signature"


async def test_der_encoded_ecdsa_signature_refused() -> None:
    token = tok("ES256")
    raw = b64url_decode(token.split(".")[2].encode(), "s")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    assert await reason(replace_part(token, 2, b64url_encode(der))) == "bad_signature"


async def test_signature_is_checked_before_claims() -> None:
    expired_and_forged = replace_part(tok(exp=int(NOW) - 3600), 2, tok().split(".")[2])
    with pytest.raises(BadSignature):
        await verify(expired_and_forged)


# -- time claims --------------------------------------------------------------------------------

async def test_exp_required() -> None:
    assert await reason(tok(exp=DROP)) == "missing_claim"


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [str(int(NOW) + 60), True, False, None, [int(NOW)], {"t": 1}, 1e30, -1,
                                   10**40, 253402300800])
async def test_numeric_dates_must_be_sane_json_numbers(name: str, value: object) -> None:
    claims: dict[str, Any] = {name: value}
    assert await reason(tok(**claims)) == "bad_claim"


async def test_float_numeric_dates_accepted() -> None:
    verified = await verify(tok(exp=NOW + 60.5, iat=NOW - 0.5, nbf=NOW - 0.25))
    assert verified.expires_at == NOW + 60.5


async def test_expired_beyond_skew_refused_within_skew_accepted() -> None:
    skew = TENANT.clock_skew
    with pytest.raises(ExpiredToken):
        await verify(tok(exp=NOW - skew, iat=NOW - 100))
    await verify(tok(exp=NOW - skew + 1, iat=NOW - 100))


async def test_nbf_in_the_future_beyond_skew_refused() -> None:
    skew = TENANT.clock_skew
    assert await reason(tok(nbf=NOW + skew + 1)) == "not_yet_valid"
    await verify(tok(nbf=NOW + skew))


async def test_iat_in_the_future_beyond_skew_refused() -> None:
    skew = TENANT.clock_skew
    assert await reason(tok(iat=NOW + skew + 1, exp=NOW + 600)) == "issued_in_future"
    await verify(tok(iat=NOW + skew, exp=NOW + 600))


async def test_lifetime_measured_from_iat() -> None:
    tenant = IDP.tenant(max_lifetime=3600.0)
    assert await reason(tok(iat=NOW - 10, exp=NOW - 10 + 3601), tenant) == "lifetime_too_long"
    await verify(tok(iat=NOW - 10, exp=NOW - 10 + 3600), tenant)


async def test_lifetime_measured_from_now_without_iat() -> None:
    tenant = IDP.tenant(max_lifetime=3600.0)
    assert await reason(tok(iat=DROP, exp=NOW + 3601), tenant) == "lifetime_too_long"
    await verify(tok(iat=DROP, exp=NOW + 3600), tenant)


# -- issuer, audience, type, subject ------------------------------------------------------------

async def test_issuer_required_and_exact() -> None:
    assert await reason(tok(iss=DROP)) == "missing_claim"
    for wrong in (ISSUER + "/", ISSUER.upper(), "https://evil.test", 1, [ISSUER]):
        assert await reason(tok(iss=wrong)) == "wrong_issuer"


async def test_audience_any_match() -> None:
    tenant = IDP.tenant(audiences=("other", AUDIENCE))
    await verify(tok(aud=AUDIENCE), tenant)
    await verify(tok(aud=["x", AUDIENCE]), tenant)
    assert await reason(tok(aud="x")) == "wrong_audience"
    assert await reason(tok(aud=["x", "y"])) == "wrong_audience"
    assert await reason(tok(aud=[])) == "wrong_audience"
    assert await reason(tok(aud=AUDIENCE.upper())) == "wrong_audience"


async def test_audience_required_and_typed() -> None:
    assert await reason(tok(aud=DROP)) == "missing_claim"
    for bad in (1, {"a": AUDIENCE}, [AUDIENCE, 1], True):
        assert await reason(tok(aud=bad)) == "bad_claim"


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"])
async def test_required_type_accepted_in_its_spellings(typ: str) -> None:
    await verify(IDP.token(now=NOW, headers={"typ": typ}), IDP.tenant(token_type="at+jwt"))


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt ", "application/jwt", None])
async def test_required_type_refused_otherwise(typ: str | None) -> None:
    token = IDP.token(now=NOW, headers={"typ": typ})
    assert await reason(token, IDP.tenant(token_type="at+jwt")) == "wrong_type"


async def test_type_not_checked_without_policy() -> None:
    await verify(IDP.token(now=NOW, headers={"typ": "anything"}))


async def test_sub_and_jti_must_be_strings() -> None:
    assert await reason(tok(sub=42)) == "bad_claim"
    assert await reason(tok(jti=["a"])) == "bad_claim"
    verified = await verify(tok(sub=DROP, jti=DROP))
    assert verified.subject == "" and verified.jti is None


# -- routing helper -----------------------------------------------------------------------------

def test_unverified_issuer() -> None:
    assert unverified_issuer(tok(), 8192) == ISSUER
    assert unverified_issuer(tok(iss=DROP), 8192) is None
    assert unverified_issuer(tok(iss=5), 8192) is None
    with pytest.raises(MalformedToken):
        unverified_issuer("a.b", 8192)
    with pytest.raises(MalformedToken):
        unverified_issuer(tok(), 100)


async def test_max_token_bytes_of_the_tenant_applies() -> None:
    token = tok()
    with pytest.raises(MalformedToken) as info:
        await verify(token, IDP.tenant(max_token_bytes=len(token) - 1))
    assert info.value.reason == "oversize"


async def test_descriptions_never_quote_claims() -> None:
    secret = "secret-subject-value"
    for token in (tok(iss=secret), tok(aud=secret), tok(sub=[secret])):
        with pytest.raises(TokenError) as info:
            await verify(token)
        assert secret not in info.value.description and secret not in str(info.value)


def test_inline_source_round_trips_jwks() -> None:
    source = JwksSource.of_keys(IDP.jwks()["keys"])
    assert source.inline_keys() == json.loads(source.inline or "")["keys"]
    assert hash(source) == hash(JwksSource(inline=IDP.jwks()))  # type: ignore[arg-type]  # converted at init


# -- defence in depth ---------------------------------------------------------------------------

class WrongKeySet:
    """A key set with a bug: hands out the key named by kid without checking it fits the alg."""

    async def key_for(self, kid: str | None, alg: str) -> Any:
        return parse_jwk(cached_key("RS256")[1])   # pinned to RS256 by its JWK alg


async def test_verify_rebinds_alg_to_key_even_if_the_key_set_errs() -> None:
    # Same RSA private key, signed RS512: only the JWK's alg pin stands between it and acceptance.
    token = sign_token(IDP.claims(NOW), IDP.private("RS256"), "RS512", IDP.kid("RS256"))
    assert await reason(token) == "alg_key_mismatch"
    assert await reason(token, keys=WrongKeySet()) == "alg_key_mismatch"  # type: ignore[arg-type]


async def test_pss_salt_must_equal_the_hash_length() -> None:
    token = tok("PS256")
    head, body, _ = token.split(".")
    private = IDP.private("PS256")
    assert isinstance(private, rsa.RSAPrivateKey)
    sig = private.sign(f"{head}.{body}".encode(), padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=0),
                       hashes.SHA256())
    assert await reason(f"{head}.{body}.{b64url_encode(sig)}") == "bad_signature"


async def test_ecdsa_signature_with_a_zero_padded_half_refused() -> None:
    # r || 0x00 || s decodes to the same integers: without the exact-length rule it would verify.
    token = tok("ES256")
    raw = b64url_decode(token.split(".")[2].encode(), "s")
    assert await reason(replace_part(token, 2, b64url_encode(raw[:32] + b"\x00" + raw[32:]))) == "bad_signature"


async def test_json_number_overflowing_to_infinity_refused() -> None:
    token = IDP.raw_token(json.dumps({"alg": "RS256", "kid": IDP.kid("RS256")}),
                          json.dumps(IDP.claims(NOW))[:-1].replace(f'"exp": {int(NOW) + 300}', '"exp": 1e400') + "}")
    assert '1e400' in json.dumps(b64url_decode(token.split(".")[1].encode(), "p").decode())
    assert await reason(token) == "bad_claim"


# -- tenant validation --------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "where"), [
    ({"id": ""}, "tenants.id"),
    ({"issuer": ""}, "issuer"),
    ({"audiences": ()}, "audiences"),
    ({"audiences": ("ok", "")}, "audiences"),
    ({"algorithms": ()}, "algorithms"),
    ({"clock_skew": -1.0}, "clock_skew"),
    ({"clock_skew": 3600.0}, "clock_skew"),
    ({"max_lifetime": True}, "max_lifetime"),
    ({"on_store_error": "maybe"}, "on_store_error"),
    ({"token_type": ""}, "token_type"),
    ({"max_token_bytes": 10}, "max_token_bytes"),
    ({"jwks": {"uri": "https://x.test"}}, "jwks"),
])
def test_tenant_refuses_bad_settings(overrides: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        IDP.tenant(**overrides)
    assert where in info.value.path


def test_tenant_accepts_lists_and_stays_hashable() -> None:
    tenant = IDP.tenant(audiences=["a", "b"], algorithms=["ES256"], claims_to_headers=[["sub", "x-user"]])
    assert tenant.audiences == ("a", "b") and tenant.algorithms == ("ES256",)
    assert tenant.claims_to_headers == (("sub", "x-user"),)
    assert hash(tenant) == hash(IDP.tenant(audiences=("a", "b"), algorithms=("ES256",),
                                           claims_to_headers=(("sub", "x-user"),)))
    assert tenant.allows_algorithm("ES256") and not tenant.allows_algorithm("RS256")


@pytest.mark.parametrize(("settings", "field"), [
    ({"timeout": 0}, "timeout"), ({"refresh": -5}, "refresh"), ({"cooldown": True}, "cooldown"),
    ({"max_bytes": 0}, "max_bytes"), ({"max_keys": 1.5}, "max_keys"),
    ({"min_refresh": 100.0, "max_refresh": 10.0}, "min_refresh"),
])
def test_jwks_source_refuses_bad_fetch_settings(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        JwksSource(uri="https://idp.test/jwks", **settings)
    assert info.value.path == f"jwks.{field}"


@pytest.mark.parametrize("inline", [{"keys": "x"}, [1, 2], "not json", '{"keys": 1}'])
def test_inline_source_shape_refused(inline: Any) -> None:
    with pytest.raises(ConfigError, match="inline"):
        JwksSource(inline=inline)


def test_inline_text_is_canonical() -> None:
    jwk = cached_key("ES256")[1]
    assert JwksSource(inline=json.dumps({"keys": [jwk]}, indent=2)) == JwksSource.of_keys([jwk])


def test_inline_source_over_the_key_cap_refused() -> None:
    many = [cached_key("ES256", f"k{i}")[1] for i in range(3)]
    with pytest.raises(ConfigError, match="cap"):
        key_set_for(IDP.tenant(jwks=JwksSource.of_keys(many, max_keys=2)))

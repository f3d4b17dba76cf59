"""A catalogue of hostile tokens, each with the reason code it must be refused with.

Tenant "acme" loads its keys from a JWKS URL served in-process (so unknown kids exercise the
real refetch path); tenant "globex" is another issuer with its own inline keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

import extauthz.tokens
from extauthz.keys import KeySet, key_set_for
from extauthz.signing import sign_token
from extauthz.tenant import JwksSource, Tenant
from extauthz.tokens import b64url_decode, b64url_encode
from extauthz.verify import REASONS, VerifiedToken, verify_token
from pavilion.errors import BackendUnavailable, TokenError
from tests.extauthz.issuer import DROP, Issuer, cached_key, hmac_token, padded, replace_part, std_b64, unsigned_token
from tests.extauthz.jwks_server import JwksServer

NOW = 1_800_000_000
ACME = Issuer(issuer="https://idp.acme.test", name="acme")
GLOBEX = Issuer(issuer="https://login.globex.test", audience="globex-api", name="globex")
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    server: JwksServer
    tenants: dict[str, Tenant]
    keys: dict[str, KeySet]
    clock: FakeClock

    async def verify(self, token: str, tenant: str = "acme") -> VerifiedToken:
        return await verify_token(token, self.tenants[tenant], self.keys[tenant], float(NOW))


@pytest.fixture
async def world() -> AsyncIterator[World]:
    server = await JwksServer(jwks=ACME.jwks()).start()
    clock = FakeClock()
    remote = JwksSource(uri=server.jwks_url, allow_http_loopback=True, timeout=5.0, cooldown=30.0)
    tenants = {
        "acme": ACME.tenant("acme", jwks=remote),
        "acme-at": ACME.tenant("acme-at", jwks=remote, token_type="at+jwt"),
        "globex": GLOBEX.tenant("globex"),
    }
    keys = {name: key_set_for(tenant, clock=clock) for name, tenant in tenants.items()}
    try:
        for key_set in keys.values():
            await key_set.start()
        yield World(server, tenants, keys, clock)
    finally:
        for key_set in keys.values():
            await key_set.close()
        await server.stop()


def acme(alg: str = "RS256", **kw: Any) -> str:
    return ACME.token(alg, now=NOW, **kw)


def segment(value: object) -> str:
    return b64url_encode(json.dumps(value).encode())


def flip_sig(token: str) -> str:
    sig = bytearray(b64url_decode(token.split(".")[2].encode(), "s"))
    sig[-5] ^= 0x10
    return replace_part(token, 2, b64url_encode(bytes(sig)))


def high_s(token: str) -> str:
    raw = b64url_decode(token.split(".")[2].encode(), "s")
    s = int.from_bytes(raw[32:], "big")
    return replace_part(token, 2, b64url_encode(raw[:32] + (P256_ORDER - s).to_bytes(32, "big")))


def rsa_public_pem() -> bytes:
    key = cached_key("RS256", "acme")[0]
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


DUP_ALG_HEADER = '{"alg":"RS256","alg":"none","kid":"acme-RS256"}'


def acme_header(**extra: Any) -> dict[str, Any]:
    return {"alg": "RS256", "kid": ACME.kid("RS256"), **extra}


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], str]
    expect: str | None          # reason code, or None: accepted
    tenant: str = "acme"


def pointer_case(name: str) -> Case:
    return Case(f"{name} header", lambda: acme(headers={name: "https://evil.test/keys"}), "forbidden_header")


CASES = [
    # structure
    Case("empty", lambda: "", "malformed"),
    Case("two parts", lambda: ".".join(acme().split(".")[:2]), "malformed"),
    Case("four parts", lambda: acme() + ".e30", "malformed"),
    Case("empty signature", lambda: replace_part(acme(), 2, ""), "malformed"),
    Case("padded signature", lambda: replace_part(acme(), 2, padded(acme().split(".")[2]) + "=="), "malformed"),
    Case("standard base64 payload", lambda: replace_part(acme(), 1, std_b64(b'{"sub":"\xfb\xff"}').rstrip("=")),
         "malformed"),
    Case("whitespace inside", lambda: acme()[:30] + " " + acme()[30:], "malformed"),
    Case("bearer prefix left in", lambda: "Bearer " + acme(), "malformed"),
    Case("non-ascii", lambda: acme() + "\u00e9", "malformed"),
    Case("oversize 4 MB", lambda: "eyJ" + "A" * (4 << 20) + ".e30.c2ln", "oversize"),
    Case("header not JSON", lambda: replace_part(acme(), 0, b64url_encode(b"{alg:RS256}")), "malformed"),
    Case("header is an array", lambda: replace_part(acme(), 0, segment(["RS256"])), "malformed"),
    Case("payload is a string", lambda: ACME.raw_token(json.dumps(acme_header()), '"admin"'), "malformed"),
    Case("NaN exp", lambda: ACME.raw_token(json.dumps(acme_header()), '{"exp": NaN}'), "malformed"),
    Case("deep nesting", lambda: ACME.raw_token(json.dumps(acme_header()), '{"a":' + "[" * 2000 + "]" * 2000 + "}"),
         "malformed"),
    Case("4400-digit exp", lambda: ACME.raw_token(json.dumps(acme_header()), '{"exp": ' + "9" * 4400 + "}"),
         "malformed"),
    # signatures
    Case("tampered payload", lambda: replace_part(acme(), 1, acme(sub="admin").split(".")[1]), "bad_signature"),
    Case("tampered signature RSA", lambda: flip_sig(acme()), "bad_signature"),
    Case("tampered signature EC", lambda: flip_sig(acme("ES256")), "bad_signature"),
    Case("truncated signature", lambda: replace_part(acme(), 2, b64url_encode(
        b64url_decode(acme().split(".")[2].encode(), "s")[:-6])), "bad_signature"),
    Case("ES256 signature with a zero-padded s", lambda: replace_part(acme("ES256"), 2, b64url_encode(
        b64url_decode(acme("ES256").split(".")[2].encode(), "s")[:32] + b"\x00"
        + b64url_decode(acme("ES256").split(".")[2].encode(), "s")[32:])), "bad_signature"),
    Case("one-byte signature", lambda: replace_part(acme("ES256"), 2, "AA"), "bad_signature"),
    Case("signature of another token", lambda: replace_part(acme(), 2, acme(jti="other").split(".")[2]),
         "bad_signature"),
    # ES256 signatures are malleable: (r, n - s) verifies too. Accepted on purpose; revocation and
    # caches key on (issuer, jti), never on the token string (see field notes).
    Case("ES256 high-S twin", lambda: high_s(acme("ES256")), None),
    # algorithms
    Case("alg none", lambda: unsigned_token({"alg": "none"}, ACME.claims(NOW)), "malformed"),
    Case("alg none with kid and sig", lambda: unsigned_token({"alg": "none", "kid": ACME.kid()}, ACME.claims(NOW),
                                                             "c2ln"), "alg_not_allowed"),
    Case("alg nOnE", lambda: unsigned_token({"alg": "nOnE"}, ACME.claims(NOW), "c2ln"), "alg_not_allowed"),
    Case("HS256 keyed with the RSA public PEM", lambda: hmac_token(acme_header(alg="HS256"), ACME.claims(NOW),
                                                                   rsa_public_pem()), "alg_not_allowed"),
    Case("HS256 keyed with the JWK n", lambda: hmac_token(acme_header(alg="HS256"), ACME.claims(NOW),
                                                          cached_key("RS256", "acme")[1]["n"].encode()),
         "alg_not_allowed"),
    Case("alg not in tenant list", lambda: acme(headers={"alg": "PS512"}), "alg_not_allowed"),
    Case("ES256 under an RSA kid", lambda: acme("ES256", kid=ACME.kid("RS256")), "alg_key_mismatch"),
    # headers that point at attacker keys
    *[pointer_case(name) for name in ("jku", "x5u", "x5c")],
    Case("jwk header", lambda: acme(headers={"jwk": cached_key("RS256", "evil")[1]}), "forbidden_header"),
    Case("crit unknown", lambda: acme(headers={"crit": ["exp"], "exp": NOW}), "forbidden_header"),
    Case("duplicate header alg", lambda: ACME.raw_token(DUP_ALG_HEADER,
                                                        json.dumps(ACME.claims(NOW))), "duplicate_member"),
    Case("duplicate claim sub", lambda: ACME.raw_token(json.dumps(acme_header()),
                                                       json.dumps(ACME.claims(NOW))[:-1] + ',"sub":"admin"}'),
         "duplicate_member"),
    # keys
    Case("unknown kid", lambda: acme(kid="no-such-kid"), "unknown_kid"),
    Case("kid with a NUL", lambda: acme(kid="\u0000"), "unknown_kid"),
    # time
    Case("expired", lambda: acme(iat=NOW - 7200, exp=NOW - 3600), "expired"),
    Case("nbf in the future", lambda: acme(nbf=NOW + 3600), "not_yet_valid"),
    Case("iat in the future", lambda: acme(iat=NOW + 3600, exp=NOW + 3900), "issued_in_future"),
    Case("exp as string", lambda: acme(exp=str(NOW + 60)), "bad_claim"),
    Case("exp as bool", lambda: acme(exp=True), "bad_claim"),
    Case("exp absurd 1e30", lambda: acme(exp=1e30), "bad_claim"),
    Case("exp negative", lambda: acme(exp=-1), "bad_claim"),
    Case("exp missing", lambda: acme(exp=DROP), "missing_claim"),
    Case("ten-year token", lambda: acme(exp=NOW + 10 * 365 * 86400), "lifetime_too_long"),
    # identity
    Case("wrong issuer", lambda: acme(iss="https://evil.test"), "wrong_issuer"),
    Case("issuer with trailing slash", lambda: acme(iss=ACME.issuer + "/"), "wrong_issuer"),
    Case("no issuer", lambda: acme(iss=DROP), "missing_claim"),
    Case("wrong audience", lambda: acme(aud="other-api"), "wrong_audience"),
    Case("audience as object", lambda: acme(aud={"accounts-api": True}), "bad_claim"),
    Case("sub as object", lambda: acme(sub={"id": 1}), "bad_claim"),
    Case("typ missing where at+jwt required", lambda: acme(headers={"typ": None}), "wrong_type", "acme-at"),
    Case("id token where at+jwt required", lambda: acme(headers={"typ": "JWT"}), "wrong_type", "acme-at"),
    # cross-tenant
    Case("globex token at acme", lambda: GLOBEX.token(now=NOW), "wrong_issuer"),
    Case("acme token at globex", lambda: acme(), "wrong_issuer", "globex"),
    Case("acme iss signed by globex key", lambda: GLOBEX.token(now=NOW, iss=ACME.issuer, aud=ACME.audience),
         "unknown_kid"),
    Case("acme iss, globex key under acme kid", lambda: sign_token(ACME.claims(NOW), GLOBEX.private(), "RS256",
                                                                   ACME.kid()), "bad_signature"),
    # good tokens for contrast
    Case("good RS256", lambda: acme(), None),
    Case("good ES256 at+jwt", lambda: acme("ES256", headers={"typ": "at+jwt"}), None, "acme-at"),
    Case("good globex", lambda: GLOBEX.token(now=NOW), None, "globex"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_hostile_token(world: World, case: Case) -> None:
    token = case.build()
    if case.expect is None:
        verified = await world.verify(token, case.tenant)
        assert verified.tenant_id == case.tenant
        return
    with pytest.raises(TokenError) as info:
        await world.verify(token, case.tenant)
    assert info.value.reason == case.expect
    assert info.value.reason in REASONS
    description = info.value.description
    # Safe inside a quoted WWW-Authenticate parameter: printable ASCII, no quote or backslash, short.
    assert re.fullmatch(r"[ -~]{1,120}", description) and '"' not in description and "\\" not in description
    assert token[20:60] not in description or not token[20:60]


def test_catalogue_covers_every_reason() -> None:
    assert {c.expect for c in CASES if c.expect} == set(REASONS)


async def test_oversize_token_is_not_decoded(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*_: Any) -> bytes:
        raise AssertionError("an oversize token was decoded")

    monkeypatch.setattr(extauthz.tokens, "b64url_decode", no_decoding)
    with pytest.raises(TokenError) as info:
        await world.verify("eyJ" + "A" * (8 << 20) + ".e30.c2ln")
    assert info.value.reason == "oversize"


async def test_unknown_kid_flood_costs_one_fetch_per_cooldown(world: World) -> None:
    before = world.server.hits["jwks"]
    for i in range(200):
        with pytest.raises(TokenError) as info:
            await world.verify(acme(kid=f"flood-{i}"))
        assert info.value.reason == "unknown_kid"
    assert world.server.hits["jwks"] == before + 1
    world.clock.now += 30
    with pytest.raises(TokenError):
        await world.verify(acme(kid="flood-late"))
    assert world.server.hits["jwks"] == before + 2


async def test_cross_tenant_tokens_cause_no_key_fetch(world: World) -> None:
    before = world.server.hits["jwks"]
    for i in range(20):
        with pytest.raises(TokenError):
            await world.verify(GLOBEX.token(now=NOW, kid=f"globex-{i}"))
    assert world.server.hits["jwks"] == before


async def test_key_endpoint_down_cold_is_backend_unavailable() -> None:
    server = await JwksServer(jwks=ACME.jwks(), status=503).start()
    tenant = ACME.tenant(jwks=JwksSource(uri=server.jwks_url, allow_http_loopback=True, timeout=0.5))
    keys = key_set_for(tenant)
    try:
        await keys.start()
        with pytest.raises(BackendUnavailable):
            await verify_token(acme(), tenant, keys, float(NOW))
    finally:
        await keys.close()
        await server.stop()


async def test_key_endpoint_down_warm_keeps_verifying(world: World) -> None:
    world.server.status = 503
    await world.keys["acme"].refresh()
    assert world.keys["acme"].status()["stale"] is True
    assert (await world.verify(acme())).subject == "user-1"


def test_high_s_twin_is_a_different_string() -> None:
    token = acme("ES256")
    assert high_s(token) != token   # why the cache and revocation must not key on the token text


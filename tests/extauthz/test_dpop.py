"""DPoP (RFC 9449) at the Authorizer: a request with `Authorization: DPoP <token>` and one `DPoP: <proof>`
passes only with a fresh proof of the token's key for this very request; each broken rule has its answer."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from envoy.service.auth.v3 import attribute_context_pb2

from extauthz.authorizer import Authorizer
from extauthz.decision import Outcome
from extauthz.dpop_proof import MAX_PROOF_BYTES, access_token_hash, normalise_url
from extauthz.dpop_replay import MemoryReplay
from extauthz.dpop_sign import key_thumbprint, make_proof, proof_jwk
from extauthz.revocation import MemoryRevocations
from extauthz.signing import PrivateKey, encode_jws
from extauthz.tenant import DpopPolicy, Tenant
from extauthz.tenant_set import Tenants, build_tenants, retire
from extauthz.tokens import b64url_decode, b64url_encode
from extauthz.verify import verify_token
from pavilion.errors import BackendUnavailable
from tests.extauthz.issuer import Issuer, hmac_token, padded

ACME = Issuer(algs=("ES256",))
STRICT = Issuer(issuer="https://idp.strict.test", algs=("ES256",), name="strict")
URL = "https://api.acme.test/orders"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@functools.cache
def client_key(name: str = "one") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def bound_token(key: PrivateKey | None = None, issuer: Issuer = ACME, **claims: Any) -> str:
    return issuer.token("ES256", cnf={"jkt": key_thumbprint(key or client_key())}, **claims)


def attributes(method: str = "GET", url: str = URL + "?page=2") -> attribute_context_pb2.AttributeContext:
    scheme, _, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return attribute_context_pb2.AttributeContext(request=attribute_context_pb2.AttributeContext.Request(
        http=attribute_context_pb2.AttributeContext.HttpRequest(method=method, scheme=scheme, host=host,
                                                                  path=slash + path)))


def headers(token: str, proof: str | None) -> dict[str, str]:
    found = {"authorization": f"DPoP {token}"}
    if proof is not None:
        found["dpop"] = proof
    return found


class Stack:
    def __init__(self, authorizer: Authorizer, verifications: list[str]) -> None:
        self.authorizer = authorizer
        self.verifications = verifications

    async def check(self, request_headers: dict[str, str], method: str = "GET", url: str = URL + "?page=2",
                    extensions: dict[str, str] | None = None) -> Outcome:
        attrs = attributes(method, url)
        path = attrs.request.http.path
        now = self.authorizer.check_now(request_headers, path, extensions or {}, attrs)
        if now is not None:
            return now
        return await self.authorizer.check(request_headers, path, extensions or {}, attrs)

    async def dpop(self, token: str, proof: str | None, **kwargs: Any) -> Outcome:
        return await self.check(headers(token, proof), **kwargs)


async def make_stack(*tenants: Tenant, replay: Any = None) -> tuple[Stack, Tenants]:
    built = await build_tenants(tenants or [ACME.tenant("acme"), STRICT.tenant("strict", dpop=DpopPolicy(
        required=True))])
    verifications: list[str] = []

    async def counting_verify(token: str, tenant: Tenant, keys: Any, now: float) -> Any:
        verifications.append(tenant.id)
        return await verify_token(token, tenant, keys, now)

    return Stack(Authorizer(built, MemoryRevocations(), verify=counting_verify, replay=replay), verifications), built


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    found, tenants = await make_stack()
    try:
        yield found
    finally:
        await retire(tenants, None)


def challenge(outcome: Outcome) -> str:
    return dict(outcome.headers)["www-authenticate"]


def refused(outcome: Outcome, status: int, reason: str) -> str:
    assert (outcome.status, outcome.reason) == (status, reason), outcome
    return challenge(outcome) if status != 503 else ""


async def test_a_fresh_proof_of_the_tokens_key_passes_and_its_replay_is_refused(stack: Stack) -> None:
    token = bound_token(jti="t-ok")
    proof = make_proof(client_key(), method="GET", url=URL, access_token=token)
    outcome = await stack.dpop(token, proof)
    assert outcome.allowed and dict(outcome.headers)["x-pavilion-subject"] == "user-1"
    value = refused(await stack.dpop(token, proof), 401, "dpop_replayed")
    assert value == 'DPoP error="invalid_dpop_proof", error_description="the proof has been used before", ' \
                    'algs="ES256 ES384 RS256 PS256 EdDSA"'
    # Another proof for the same token: the token's verification is cached, the proof checked anew.
    assert (await stack.dpop(token, make_proof(client_key(), method="GET", url=URL, access_token=token))).allowed
    assert stack.verifications == ["acme"]


async def test_a_replay_is_caught_even_if_its_ecdsa_signature_is_respelled(stack: Stack) -> None:
    token = bound_token(jti="t-malleable")
    proof = make_proof(client_key(), method="GET", url=URL, access_token=token)
    head, body, sig = proof.split(".")
    raw = b64url_decode(sig.encode(), "signature")
    s = int.from_bytes(raw[32:], "big")
    respelled = f"{head}.{body}.{b64url_encode(raw[:32] + (P256_ORDER - s).to_bytes(32, 'big'))}"
    assert (await stack.dpop(token, proof)).allowed
    refused(await stack.dpop(token, respelled), 401, "dpop_replayed")


def other_rsa_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def proof_with(token: str, **kwargs: Any) -> str:
    return make_proof(client_key(), method="GET", url=URL, access_token=token, **kwargs)


def signed_raw(header: dict[str, Any] | str, claims: dict[str, Any] | str, key: PrivateKey | None = None,
               alg: str = "ES256") -> str:
    raw = [part if isinstance(part, str) else json.dumps(part) for part in (header, claims)]
    return encode_jws(raw[0].encode(), raw[1].encode(), key or client_key(), alg)


def good_claims(token: str) -> dict[str, Any]:
    return {"jti": "j", "htm": "GET", "htu": URL, "iat": int(time.time()), "ath": access_token_hash(token)}


def good_header() -> dict[str, Any]:
    return {"typ": "dpop+jwt", "alg": "ES256", "jwk": proof_jwk(client_key())}


HOSTILE: dict[str, tuple[Callable[[str], str], str]] = {
    "alg none": (lambda t: f"{b64url_encode(json.dumps({**good_header(), 'alg': 'none'}).encode())}."
                           f"{b64url_encode(json.dumps(good_claims(t)).encode())}.", "dpop_proof_invalid"),
    "alg none, signature present": (lambda t: "{}.{}.c2ln".format(
        b64url_encode(json.dumps({**good_header(), "alg": "none"}).encode()),
        b64url_encode(json.dumps(good_claims(t)).encode())), "dpop_alg_not_allowed"),
    "HS256 with the jwk as the secret": (lambda t: hmac_token(
        {**good_header(), "alg": "HS256"}, good_claims(t), json.dumps(proof_jwk(client_key())).encode()),
        "dpop_alg_not_allowed"),
    "private key in the jwk": (lambda t: signed_raw(
        {**good_header(), "jwk": {**proof_jwk(client_key()), "d": b64url_encode(
            client_key().private_numbers().private_value.to_bytes(32, "big"))}}, good_claims(t)),
        "dpop_proof_invalid"),
    "symmetric jwk": (lambda t: signed_raw({**good_header(), "jwk": {"kty": "oct", "k": "c2VjcmV0"}}, good_claims(t)),
                      "dpop_proof_invalid"),
    "RSA key of 1024 bits": (lambda t: make_proof(other_rsa_key(1024), method="GET", url=URL, access_token=t),
                             "dpop_proof_invalid"),
    "typ JWT": (lambda t: proof_with(t, header={"typ": "JWT"}), "dpop_proof_invalid"),
    "no typ": (lambda t: proof_with(t, header={"typ": None}), "dpop_proof_invalid"),
    "no jwk": (lambda t: proof_with(t, header={"jwk": None}), "dpop_proof_invalid"),
    "jku in the header": (lambda t: proof_with(t, header={"jku": "https://evil.test/jwks"}), "dpop_proof_invalid"),
    "crit in the header": (lambda t: proof_with(t, header={"crit": ["exp"]}), "dpop_proof_invalid"),
    "alg not matching the key": (lambda t: signed_raw({**good_header(), "alg": "ES384"}, good_claims(t)),
                                 "dpop_proof_invalid"),
    "tampered payload": (lambda t: ".".join([proof_with(t).split(".")[0], b64url_encode(json.dumps(
        {**good_claims(t), "htu": "https://api.acme.test/admin"}).encode()), proof_with(t).split(".")[2]]),
        "dpop_proof_invalid"),
    "wrong htu path": (lambda t: make_proof(client_key(), method="GET", url="https://api.acme.test/admin",
                                            access_token=t), "dpop_htu_mismatch"),
    "wrong htu host": (lambda t: make_proof(client_key(), method="GET", url="https://evil.test/orders",
                                            access_token=t), "dpop_htu_mismatch"),
    "wrong htu scheme": (lambda t: make_proof(client_key(), method="GET", url="http://api.acme.test/orders",
                                              access_token=t), "dpop_htu_mismatch"),
    "htu not a string": (lambda t: proof_with(t, claims={"htu": 7}), "dpop_htu_mismatch"),
    "wrong htm": (lambda t: make_proof(client_key(), method="POST", url=URL, access_token=t), "dpop_htm_mismatch"),
    "htm in lower case": (lambda t: make_proof(client_key(), method="get", url=URL, access_token=t),
                          "dpop_htm_mismatch"),
    "old iat": (lambda t: proof_with(t, iat=time.time() - 60 - 30 - 5), "dpop_expired"),
    "future iat": (lambda t: proof_with(t, iat=time.time() + 30 + 5), "dpop_iat_in_future"),
    "iat as a string": (lambda t: proof_with(t, claims={"iat": str(int(time.time()))}), "dpop_proof_invalid"),
    "no iat": (lambda t: proof_with(t, claims={"iat": None}), "dpop_proof_invalid"),
    "no jti": (lambda t: proof_with(t, claims={"jti": None}), "dpop_proof_invalid"),
    "jti of 129 characters": (lambda t: proof_with(t, jti="j" * 129), "dpop_proof_invalid"),
    "no ath": (lambda t: make_proof(client_key(), method="GET", url=URL), "dpop_ath_mismatch"),
    "ath of another token": (lambda t: proof_with(t, claims={"ath": access_token_hash(t + "x")}),
                             "dpop_ath_mismatch"),
    "another key than the token's": (lambda t: make_proof(client_key("two"), method="GET", url=URL,
                                                          access_token=t), "dpop_key_mismatch"),
    "oversize": (lambda t: proof_with(t, claims={"pad": "x" * MAX_PROOF_BYTES}), "dpop_proof_oversize"),
    "padded base64": (lambda t: ".".join(padded(part) for part in proof_with(t).split(".")), "dpop_proof_invalid"),
    "duplicate member": (lambda t: signed_raw(good_header(), json.dumps(good_claims(t))[:-1] + ', "htm": "GET"}'),
                         "dpop_proof_invalid"),
    "four segments": (lambda t: proof_with(t) + ".e30", "dpop_proof_invalid"),
    "not a JWT": (lambda t: "hello", "dpop_proof_invalid"),
    "the access token as its own proof": (lambda t: t, "dpop_proof_invalid"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_a_hostile_proof_gets_its_reason_and_an_invalid_dpop_proof_challenge(stack: Stack, case: str) -> None:
    make, reason = HOSTILE[case]
    token = bound_token(jti=f"t-{case}")
    value = refused(await stack.dpop(token, make(token)), 401, reason)
    assert value.startswith('DPoP error="invalid_dpop_proof", error_description="')
    assert value.endswith('algs="ES256 ES384 RS256 PS256 EdDSA"')
    assert token not in value
    # The token itself is fine: a good proof still passes (nothing of the bad one was remembered).
    assert (await stack.dpop(token, proof_with(token))).allowed


@pytest.mark.parametrize(("request_headers", "status", "reason"), [
    ({"authorization": "DPoP TOKEN", "dpop": "PROOF,PROOF"}, 400, "dpop_multiple_proofs"),
    ({"authorization": "DPoP TOKEN"}, 401, "dpop_proof_missing"),
    ({"authorization": "DPoP TOKEN", "dpop": " "}, 401, "dpop_proof_missing"),
    ({"authorization": "DPoP TOKEN, Bearer TOKEN", "dpop": "PROOF"}, 400, "multiple_credentials"),
    ({"authorization": "DPoP ", "dpop": "PROOF"}, 400, "empty_credential"),
    ({"authorization": "DPoP a b", "dpop": "PROOF"}, 400, "malformed_credential"),
])
async def test_malformed_dpop_requests(stack: Stack, request_headers: dict[str, str], status: int,
                                       reason: str) -> None:
    token = bound_token(jti="t-malformed")
    filled = {name: value.replace("TOKEN", token).replace("PROOF", proof_with(token))
              for name, value in request_headers.items()}
    value = refused(await stack.check(filled), status, reason)
    assert value.startswith("DPoP ") and 'algs="' in value
    assert stack.verifications == []  # refused before any token work


async def test_a_token_in_the_query_beside_a_dpop_one_is_two_credentials(stack: Stack) -> None:
    token = bound_token(jti="t-query")
    refused(await stack.dpop(token, proof_with(token), url=URL + "?access_token=x"), 400, "multiple_credentials")


async def test_a_dpop_bound_token_sent_as_a_bearer_token_is_refused_every_time(stack: Stack) -> None:
    token = bound_token(jti="t-downgrade")
    assert (await stack.dpop(token, proof_with(token))).allowed  # verified and cached for DPoP
    for _ in range(2):
        attrs = attributes()
        assert stack.authorizer.check_now({"authorization": f"Bearer {token}"}, "/orders", {}, attrs) is None
        value = refused(await stack.check({"authorization": f"Bearer {token}", "dpop": proof_with(token)}),
                        401, "dpop_bound_bearer")
        assert value.startswith('DPoP error="invalid_token"')


async def test_a_dpop_proof_with_an_unbound_token_is_refused(stack: Stack) -> None:
    token = ACME.token("ES256", jti="t-unbound")
    for _ in range(2):
        value = refused(await stack.dpop(token, proof_with(token)), 401, "dpop_token_unbound")
        assert value.startswith('DPoP error="invalid_token"')
    assert (await stack.check({"authorization": f"Bearer {token}"})).allowed  # as a bearer token it is fine


async def test_a_tenant_requiring_dpop_refuses_its_bearer_tokens_even_after_a_dpop_success(stack: Stack) -> None:
    unbound = STRICT.token("ES256", jti="s-bearer")
    for _ in range(2):  # never cached as a bearer token, so check_now cannot let it through
        refused(await stack.check({"authorization": f"Bearer {unbound}"}), 401, "dpop_required")
    token = bound_token(issuer=STRICT, jti="s-dpop")
    assert (await stack.dpop(token, proof_with(token))).allowed
    assert (await stack.check({"authorization": "Bearer " + ACME.token("ES256", jti="free")})).allowed


async def test_token_problems_under_the_dpop_scheme_are_invalid_token_dpop_challenges(stack: Stack) -> None:
    expired = bound_token(jti="t-old", iat=int(time.time()) - 600, exp=int(time.time()) - 300)
    value = refused(await stack.dpop(expired, proof_with(expired)), 401, "expired")
    assert value.startswith('DPoP error="invalid_token", error_description="') and 'algs="' in value
    refused(await stack.dpop("abc", proof_with("abc")), 401, "malformed")


async def test_a_route_refusal_of_a_dpop_request_is_a_dpop_challenge(stack: Stack) -> None:
    token = bound_token(jti="t-route")
    value = refused(await stack.dpop(token, proof_with(token), extensions={"tenant": "strict"}), 403, "wrong_tenant")
    assert value.startswith('DPoP error="insufficient_scope"')


async def test_revocation_is_checked_for_dpop_requests(stack: Stack) -> None:
    token = bound_token(jti="t-revoked")
    assert (await stack.dpop(token, proof_with(token))).allowed
    await stack.authorizer.store.revoke_token(ACME.issuer, "t-revoked", time.time() + 300)
    refused(await stack.dpop(token, proof_with(token)), 401, "revoked")


async def test_the_tenants_proof_algorithms_and_max_age_apply() -> None:
    found, tenants = await make_stack(ACME.tenant("acme", clock_skew=0.0, dpop=DpopPolicy(
        max_age=5, algorithms=("ES384", "EdDSA"))))
    try:
        token = bound_token(jti="t-algs")
        value = refused(await found.dpop(token, proof_with(token)), 401, "dpop_alg_not_allowed")
        assert value.endswith('algs="ES384 EdDSA"')
        p384 = ec.generate_private_key(ec.SECP384R1())
        token = bound_token(p384, jti="t-384")
        assert (await found.dpop(token, make_proof(p384, method="GET", url=URL, access_token=token))).allowed
        old = make_proof(p384, method="GET", url=URL, access_token=token, iat=time.time() - 7)
        refused(await found.dpop(token, old), 401, "dpop_expired")
    finally:
        await retire(tenants, None)


class BrokenReplay:
    async def first_use(self, key: str, ttl: float) -> bool:
        raise BackendUnavailable("redis", "ConnectionError")


@pytest.mark.parametrize(("policy", "allowed"), [("deny", False), ("allow", True)])
async def test_a_replay_store_failure_follows_on_store_error(policy: str, allowed: bool) -> None:
    found, tenants = await make_stack(ACME.tenant("acme", on_store_error=policy), replay=BrokenReplay())
    try:
        token = bound_token(jti=f"t-store-{policy}")
        outcome = await found.dpop(token, proof_with(token))
        assert outcome.allowed is allowed
        if not allowed:
            refused(outcome, 503, "dpop_store_unavailable")
    finally:
        await retire(tenants, None)


async def test_the_memory_replay_set_forgets_expired_jtis_and_refuses_to_grow_past_its_cap() -> None:
    now = [100.0]
    replay = MemoryReplay(clock=lambda: now[0], max_entries=2)
    assert await replay.first_use("a", 10) and not await replay.first_use("a", 10)
    assert await replay.first_use("b", 20)
    with pytest.raises(BackendUnavailable):
        await replay.first_use("c", 10)
    now[0] = 111.0  # "a" expired: its room is free again, and "a" is new again
    assert await replay.first_use("c", 10) and len(replay) == 2
    assert not await replay.first_use("b", 5)


@pytest.mark.parametrize(("a", "b"), [
    ("https://API.Acme.test/orders", "https://api.acme.test/orders"),
    ("HTTPS://api.acme.test:443/orders", "https://api.acme.test/orders"),
    ("http://api.acme.test:80/orders", "http://api.acme.test/orders"),
    ("https://api.acme.test/orders?x=1#frag", "https://api.acme.test/orders"),
    ("https://api.acme.test", "https://api.acme.test/"),
    ("https://api.acme.test/a/./b/../orders", "https://api.acme.test/a/orders"),
    ("https://api.acme.test/%7euser/%2f", "https://api.acme.test/~user/%2F"),
    ("https://[::1]:8443/x", "https://[::1]:8443/x"),
])
def test_urls_are_compared_after_rfc3986_normalisation(a: str, b: str) -> None:
    assert normalise_url(a) == normalise_url(b) is not None


@pytest.mark.parametrize(("a", "b"), [
    ("https://api.acme.test/orders", "http://api.acme.test/orders"),
    ("https://api.acme.test:8443/orders", "https://api.acme.test/orders"),
    ("https://api.acme.test/Orders", "https://api.acme.test/orders"),
    ("https://api.acme.test/orders/", "https://api.acme.test/orders"),
    ("https://api.acme.test/a%2Fb", "https://api.acme.test/a/b"),
])
def test_different_urls_stay_different(a: str, b: str) -> None:
    assert normalise_url(a) != normalise_url(b)


@pytest.mark.parametrize("url", ["ftp://api.acme.test/x", "https://user@api.acme.test/x", "https:///x",
                                 "https://api.acme.test:99999/x", "/orders"])
def test_non_http_urls_do_not_normalise(url: str) -> None:
    assert normalise_url(url) is None


@pytest.mark.parametrize("host", ["api.acme.test/orders#", "api.acme.test/orders?", "evil@api.acme.test", ""])
async def test_a_host_that_would_move_the_path_is_no_url(stack: Stack, host: str) -> None:
    token = bound_token(jti="t-host")
    proof = proof_with(token)
    attrs = attributes()
    attrs.request.http.host = host
    attrs.request.http.path = "/admin"
    outcome = await stack.authorizer.check(headers(token, proof), "/admin", {}, attrs)
    refused(outcome, 401, "dpop_htu_mismatch")


async def test_rs256_ps256_and_eddsa_proofs_pass(stack: Stack) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    for key, alg in ((other_rsa_key(2048), "RS256"), (other_rsa_key(2048), "PS256"),
                     (ed25519.Ed25519PrivateKey.generate(), "EdDSA")):
        token = bound_token(key, jti=f"t-{alg}")
        assert (await stack.dpop(token, make_proof(key, method="GET", url=URL, access_token=token, alg=alg))).allowed


@pytest.mark.parametrize(("envoy_host", "htu", "reason"), [
    ("api.acme.test", "https://api.acme.test:8443/orders", "ok"),       # the gateway stripped the port
    ("api.acme.test", "https://other.test:8443/orders", "dpop_htu_mismatch"),
    ("api.acme.test", "http://api.acme.test:8443/orders", "dpop_htu_mismatch"),
    ("api.acme.test:8443", "https://api.acme.test:8443/orders", "ok"),  # a port Envoy passes on is compared
    ("api.acme.test:8443", "https://api.acme.test:9443/orders", "dpop_htu_mismatch"),
    ("api.acme.test:8443", "https://api.acme.test/orders", "dpop_htu_mismatch"),
    ("api.acme.test:443", "https://api.acme.test/orders", "ok"),
])
async def test_the_port_is_compared_only_when_envoy_passes_it_on(stack: Stack, envoy_host: str, htu: str,
                                                                 reason: str) -> None:
    token = bound_token(jti=f"t-port-{envoy_host}-{htu}")
    outcome = await stack.dpop(token, make_proof(client_key(), method="GET", url=htu, access_token=token),
                               url=f"https://{envoy_host}/orders")
    assert outcome.reason == reason


@pytest.mark.parametrize("iat", [10**400, -5, 1e400, 253402300800, None])
async def test_an_iat_that_is_no_time_is_refused_not_an_error(stack: Stack, iat: Any) -> None:
    token = bound_token(jti=f"t-iat-{iat}")
    # 1e400 is written out as a JSON number that Python reads as inf.
    claims = {**good_claims(token), "iat": iat}
    text = json.dumps(claims).replace("Infinity", "1e400")
    refused(await stack.dpop(token, signed_raw(good_header(), text)), 401, "dpop_proof_invalid")


async def test_the_redis_replay_sets_local_set_is_only_a_cache() -> None:
    from extauthz.dpop_replay import RedisReplay

    class Client:
        def __init__(self) -> None:
            self.keys: set[str] = set()

        async def set(self, key: str, value: str, *, nx: bool, px: int) -> bool | None:
            assert nx and px > 0
            if key in self.keys:
                return None
            self.keys.add(key)
            return True

    client = Client()
    replay = RedisReplay(client)
    replay._local = MemoryReplay(max_entries=1)
    assert await replay.first_use("a", 10) and await replay.first_use("b", 10)  # local set full: still fine
    assert not await replay.first_use("b", 10) and not await replay.first_use("a", 10)
    client.keys.clear()
    assert not await replay.first_use("a", 10)  # answered locally, no round trip


async def test_a_request_without_credentials_on_a_dpop_only_route_gets_a_dpop_challenge(stack: Stack) -> None:
    outcome = await stack.check({}, extensions={"tenant": "strict"})
    assert refused(outcome, 401, "missing") == 'DPoP algs="ES256 ES384 RS256 PS256 EdDSA"'
    outcome = await stack.check({"authorization": "Basic dXNlcjpwYXNz"}, extensions={"tenant": "strict"})
    assert refused(outcome, 401, "unsupported_scheme").startswith("DPoP ")
    for extensions in ({"tenant": "acme"}, {"tenant": "acme,strict"}, {}):  # bearer tokens are welcome there
        assert refused(await stack.check({}, extensions=extensions), 401, "missing") == "Bearer"


async def test_a_token_bound_to_a_certificate_and_a_dpop_key_needs_both(stack: Stack) -> None:
    from tests.extauthz.test_cert_binding import RP_ONE, RP_TWO

    token = ACME.token("ES256", jti="t-both", cnf={"jkt": key_thumbprint(client_key()), "x5t#S256": RP_ONE[1]})
    for certificate, expected in ((RP_ONE[0], "ok"), (RP_TWO[0], "certificate_mismatch"), ("", "certificate_missing")):
        attrs = attributes(url=URL)
        attrs.source.certificate = certificate
        outcome = await stack.authorizer.check(headers(token, proof_with(token)), "/orders", {}, attrs)
        assert outcome.reason == expected
        if expected != "ok":
            assert challenge(outcome).startswith('DPoP error="invalid_token"')


def nonce_of(outcome: Outcome) -> str:
    return dict(outcome.headers)["dpop-nonce"]


async def test_a_tenant_asking_for_nonces_gives_one_and_accepts_proofs_carrying_it() -> None:
    now = [time.time()]
    built = await build_tenants([ACME.tenant("acme", dpop=DpopPolicy(nonce=True))])
    authorizer = Authorizer(built, MemoryRevocations(), clock=lambda: now[0])
    found = Stack(authorizer, [])
    try:
        token = bound_token(jti="t-nonce")
        outcome = await found.dpop(token, make_proof(client_key(), method="GET", url=URL, access_token=token,
                                                     iat=now[0]))
        value = refused(outcome, 401, "dpop_nonce_required")
        assert value.startswith('DPoP error="use_dpop_nonce", error_description="') and 'algs="' in value
        nonce = nonce_of(outcome)
        def with_nonce(value: str) -> str:
            return make_proof(client_key(), method="GET", url=URL, access_token=token, iat=now[0],
                              claims={"nonce": value})
        assert (await found.dpop(token, with_nonce(nonce))).allowed
        refused(await found.dpop(token, with_nonce(nonce[:-1] + ("A" if nonce[-1] != "A" else "B"))), 401,
                "dpop_nonce_stale")
        refused(await found.dpop(token, with_nonce("x" * 27)), 401, "dpop_nonce_stale")
        now[0] += 60
        assert (await found.dpop(token, with_nonce(nonce))).allowed  # the previous window's is still good
        now[0] += 60
        outcome = await found.dpop(token, with_nonce(nonce))
        refused(outcome, 401, "dpop_nonce_stale")
        assert nonce_of(outcome) != nonce
        assert (await found.dpop(token, with_nonce(nonce_of(outcome)))).allowed
    finally:
        await retire(built, None)


def test_nonces_are_bound_to_their_secret_and_window() -> None:
    from extauthz.dpop_nonce import Nonces

    now = [60.0 * 16_667]  # the start of a window
    one, other = Nonces(b"a" * 32, lambda: now[0]), Nonces(b"b" * 32, lambda: now[0])
    nonce = one.current()
    assert one.accepts(nonce) and not other.accepts(nonce) and not one.accepts(None) and not one.accepts(7)
    now[0] += 119.9  # the end of the next window
    assert one.accepts(nonce) and one.current() != nonce
    now[0] += 0.1
    assert not one.accepts(nonce)

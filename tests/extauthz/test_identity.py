"""Identity assertions through the Authorizer: claims and signature, the per-(token, audience) cache and its
re-signing before expiry, single flight, signing off the event loop, the header stripped from every allowed
answer, nothing changed on routes or services without identity, and key rotation."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from extauthz.authorizer import Authorizer
from extauthz.decision import Outcome
from extauthz.identity_assertion import AUDIENCE_EXTENSION, IdentityAssertions
from extauthz.identity_config import FileKeySource, IdentitySettings
from extauthz.identity_keys import FileSigningKey, SigningKey, load_signing_key
from extauthz.identity_service import follow_identity
from extauthz.revocation import MemoryRevocations
from extauthz.service import to_response
from extauthz.signing import private_key_pem
from extauthz.tenant_set import Tenants, build_tenants, retire
from pavilion.errors import BackendUnavailable
from tests.extauthz.issuer import Issuer, cached_key

ACME = Issuer()
GATEWAY = "https://gateway.test"
HEADER = "x-pavilion-identity"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingKey:
    """A signing key that counts its signatures and the threads they ran on."""

    def __init__(self, inner: SigningKey, fail: bool = False) -> None:
        self.inner, self.fail = inner, fail
        self.alg, self.kid, self.jwk = inner.alg, inner.kid, inner.jwk
        self.signed = 0
        self.threads: set[str] = set()

    def sign(self, signing_input: bytes) -> bytes:
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise BackendUnavailable("the token is gone")
        self.signed += 1
        return self.inner.sign(signing_input)

    def close(self) -> None:
        pass


def key_file(directory: Path, alg: str = "ES256", name: str = "identity") -> Path:
    path = directory / f"{name}.pem"
    path.write_bytes(private_key_pem(cached_key(alg, name)[0]))
    path.chmod(0o600)
    return path


def settings_for(path: Path, **overrides: Any) -> IdentitySettings:
    return IdentitySettings(issuer=GATEWAY, key=FileKeySource(str(path)), **overrides)


@pytest.fixture
async def tenants() -> Any:
    built = await build_tenants((ACME.tenant(claims_to_headers=(("email", "x-user-email"),)),))
    yield built
    await retire(built, None)


def make(tenants: Tenants, path: Path, clock: Clock, fail: bool = False,
         **overrides: Any) -> tuple[Authorizer, IdentityAssertions, CountingKey]:
    settings = settings_for(path, **overrides)
    key = CountingKey(load_signing_key(settings), fail=fail)
    identity = IdentityAssertions(settings, key, clock=clock)
    return Authorizer(tenants, MemoryRevocations(), clock=clock, identity=identity), identity, key


def assertion_of(outcome: Outcome) -> str:
    values = [value for name, value in outcome.headers if name == HEADER]
    assert len(values) == 1, outcome.headers
    return values[0]


def verified(assertion: str, identity: IdentityAssertions, audience: str) -> dict[str, Any]:
    """The claims of an assertion whose signature, iss and aud hold (times are the tests' fake clock's)."""
    header = jwt.get_unverified_header(assertion)
    keys = {key["kid"]: key for key in identity.ring.jwks()["keys"]}
    claims: dict[str, Any] = jwt.decode(assertion, jwt.PyJWK(keys[header["kid"]]).key, algorithms=[header["alg"]],
                                        audience=audience, issuer=GATEWAY,
                                        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})
    return claims


async def test_an_identity_route_gets_a_signed_assertion_with_the_callers_identity(tenants: Tenants,
                                                                                  tmp_path: Path) -> None:
    clock = Clock(1_000_000.0)
    authorizer, identity, _key = make(tenants, key_file(tmp_path), clock)
    token = ACME.token(now=clock.now, email="a@acme.test", client_id="mobile-app", scope="orders:read profile",
                       scp=["orders:write"])
    outcome = await authorizer.check({"authorization": f"Bearer {token}"}, "/orders",
                                     {"tenant": "acme", AUDIENCE_EXTENSION: "orders-api"})
    assert outcome.allowed
    assertion = assertion_of(outcome)
    header = jwt.get_unverified_header(assertion)
    assert header == {"alg": "ES256", "kid": identity.ring.current.kid, "typ": "JWT"}
    assert identity.ring.current.kid == identity.ring.jwks()["keys"][0]["kid"]  # the RFC 7638 thumbprint
    claims = jwt.decode(assertion, jwt.PyJWK(identity.ring.jwks()["keys"][0]).key, algorithms=["ES256"],
                        audience="orders-api", issuer=GATEWAY, options={"verify_exp": False, "verify_iat": False,
                                                                        "verify_nbf": False})
    assert claims == {"iss": GATEWAY, "aud": "orders-api", "sub": "user-1", "tenant": "acme",
                      "client": "mobile-app", "scope": "orders:read orders:write profile",
                      "iat": 1_000_000, "nbf": 1_000_000, "exp": 1_000_000 + 300, "jti": claims["jti"]}
    assert token not in assertion and token.split(".")[2] not in json.dumps(claims)
    assert HEADER not in outcome.headers_to_remove  # Envoy removes after setting: it must not be listed
    assert ("x-user-email", "a@acme.test") in outcome.headers  # the plain headers still go too
    other = await authorizer.check({"authorization": f"Bearer {token}"}, "/orders",
                                   {"tenant": "acme", AUDIENCE_EXTENSION: "billing-api"})
    other_claims = jwt.decode(assertion_of(other), options={"verify_signature": False})
    assert other_claims["aud"] == "billing-api" and other_claims["jti"] != claims["jti"]


async def test_exp_is_the_tokens_when_it_expires_first_and_such_an_assertion_is_never_resigned(
        tenants: Tenants, tmp_path: Path) -> None:
    clock = Clock(2_000_000.0)
    authorizer, _identity, key = make(tenants, key_file(tmp_path), clock)
    token = ACME.token(now=clock.now, exp=int(clock.now) + 60)
    headers, extensions = {"authorization": f"Bearer {token}"}, {"tenant": "acme", AUDIENCE_EXTENSION: "orders-api"}
    first = await authorizer.check(headers, "/", extensions)
    assert jwt.decode(assertion_of(first), options={"verify_signature": False})["exp"] == int(clock.now) + 60
    clock.now += 55  # far past half of its 60 s, but a new one would expire at the same instant
    assert authorizer.check_now(headers, "/", extensions) is first
    await asyncio.sleep(0.05)
    assert key.signed == 1


async def test_assertions_are_cached_and_resigned_in_the_background_before_they_expire(tenants: Tenants,
                                                                                       tmp_path: Path) -> None:
    clock = Clock(3_000_000.0)
    authorizer, identity, key = make(tenants, key_file(tmp_path), clock, lifetime=60.0)
    token = ACME.token(now=clock.now, exp=int(clock.now) + 3600)
    headers, extensions = {"authorization": f"Bearer {token}"}, {"tenant": "acme", AUDIENCE_EXTENSION: "orders-api"}
    assert authorizer.check_now(headers, "/", extensions) is None  # nothing signed yet: `check` signs
    first = await authorizer.check(headers, "/", extensions)
    assert key.signed == 1
    for _ in range(5):
        assert authorizer.check_now(headers, "/", extensions) is first  # the very same answer, no signature
    assert key.signed == 1
    clock.now += 31  # past half of its life: still served, and its successor signed meanwhile
    assert authorizer.check_now(headers, "/", extensions) is first
    for _ in range(100):
        if key.signed == 2:
            break
        await asyncio.sleep(0.01)
    assert key.signed == 2
    second = authorizer.check_now(headers, "/", extensions)
    assert second is not None and second is not first
    claims = verified(assertion_of(second), identity, "orders-api")
    assert claims["iat"] == int(clock.now) and claims["exp"] == int(clock.now) + 60
    clock.now += 57  # within the last seconds of its life: not handed out, a fresh one is signed first
    assert authorizer.check_now(headers, "/", extensions) is None
    third = await authorizer.check(headers, "/", extensions)
    assert key.signed == 3 and third is not second


async def test_concurrent_requests_share_one_signing_which_runs_off_the_event_loop(tenants: Tenants,
                                                                                  tmp_path: Path) -> None:
    clock = Clock(4_000_000.0)
    authorizer, _identity, key = make(tenants, key_file(tmp_path), clock)
    token = ACME.token(now=clock.now)
    headers, extensions = {"authorization": f"Bearer {token}"}, {"tenant": "acme", AUDIENCE_EXTENSION: "orders-api"}
    await authorizer.check(headers, "/", {"tenant": "acme"})  # verified and cached, no assertion
    assert key.signed == 0
    outcomes = await asyncio.gather(*(authorizer.check(headers, "/", extensions) for _ in range(20)))
    assert key.signed == 1
    assert len({assertion_of(outcome) for outcome in outcomes}) == 1
    assert key.threads and threading.current_thread().name not in key.threads
    assert all(name.startswith("identity-sign") for name in key.threads)


async def test_every_allowed_answer_removes_a_client_sent_assertion_and_plain_routes_never_sign(
        tenants: Tenants, tmp_path: Path) -> None:
    clock = Clock(5_000_000.0)
    authorizer, identity, key = make(tenants, key_file(tmp_path), clock)
    forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."
    token = ACME.token(now=clock.now)
    headers = {"authorization": f"Bearer {token}", HEADER: forged}
    plain = await authorizer.check(headers, "/", {"tenant": "acme"})
    assert plain.allowed and HEADER in plain.headers_to_remove
    assert all(name != HEADER for name, _ in plain.headers)
    again = authorizer.check_now(headers, "/", {"tenant": "acme"})
    assert again is plain  # the route without identity: the cached answer itself, nothing signed
    assert key.signed == 0 and len(identity) == 0
    response = to_response(plain)
    assert HEADER in response.ok_response.headers_to_remove
    signed = await authorizer.check(headers, "/", {"tenant": "acme", AUDIENCE_EXTENSION: "orders-api"})
    response = to_response(signed)
    assert HEADER not in response.ok_response.headers_to_remove
    assert [h.header.value for h in response.ok_response.headers if h.header.key == HEADER] != [forged]


async def test_without_identity_nothing_changes(tenants: Tenants) -> None:
    clock = Clock(6_000_000.0)
    authorizer = Authorizer(tenants, MemoryRevocations(), clock=clock)
    headers = {"authorization": f"Bearer {ACME.token(now=clock.now)}"}
    extensions = {"tenant": "acme", AUDIENCE_EXTENSION: "orders-api"}
    outcome = await authorizer.check(headers, "/", extensions)
    assert outcome.allowed and HEADER not in outcome.headers_to_remove
    assert all(name != HEADER for name, _ in outcome.headers)
    assert authorizer.check_now(headers, "/", extensions) is outcome


async def test_a_signing_failure_is_a_503_and_a_bad_audience_a_route_error(tenants: Tenants, tmp_path: Path) -> None:
    clock = Clock(7_000_000.0)
    authorizer, _identity, key = make(tenants, key_file(tmp_path), clock, fail=True)
    headers = {"authorization": f"Bearer {ACME.token(now=clock.now)}"}
    failed = await authorizer.check(headers, "/", {"tenant": "acme", AUDIENCE_EXTENSION: "orders-api"})
    assert (failed.status, failed.reason) == (503, "identity_unavailable")
    key.fail = False
    bad = await authorizer.check(headers, "/", {"tenant": "acme", AUDIENCE_EXTENSION: " orders\n"})
    assert (bad.status, bad.reason) == (503, "route_identity_invalid")
    assert key.signed == 0
    # A revoked token gets no assertion: revocation is asked before anything is signed.
    await authorizer.store.revoke_token(ACME.issuer, "jti-1", time.time() + 600)
    revoked = await authorizer.check(headers, "/", {"tenant": "acme", AUDIENCE_EXTENSION: "orders-api"})
    assert (revoked.status, revoked.reason) == (401, "revoked") and key.signed == 0


async def test_a_rotated_key_signs_and_the_replaced_one_stays_published_for_the_lifetime(
        tenants: Tenants, tmp_path: Path) -> None:
    clock = Clock(8_000_000.0)
    old_path = key_file(tmp_path, "ES256", "old")
    authorizer, identity, _key = make(tenants, old_path, clock, lifetime=120.0)
    old_kid = identity.ring.current.kid
    headers = {"authorization": f"Bearer {ACME.token(now=clock.now, exp=int(clock.now) + 3600)}"}
    extensions = {"tenant": "acme", AUDIENCE_EXTENSION: "orders-api"}
    before = assertion_of(await authorizer.check(headers, "/", extensions))
    assert await identity.reload(settings_for(key_file(tmp_path, "RS256", "new"), lifetime=120.0))
    new_kid = identity.ring.current.kid
    assert new_kid != old_kid and isinstance(identity.ring.current, FileSigningKey)
    assert [k["kid"] for k in identity.ring.jwks()["keys"]] == [new_kid, old_kid]
    jwt.decode(before, jwt.PyJWK(identity.ring.jwks()["keys"][1]).key, algorithms=["ES256"], audience="orders-api",
               options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})
    clock.now += 61  # the cached assertion is re-signed with the new key
    await authorizer.check(headers, "/", extensions)
    for _ in range(100):
        after = authorizer.check_now(headers, "/", extensions)
        if after is not None and jwt.get_unverified_header(assertion_of(after))["kid"] == new_kid:
            break
        await asyncio.sleep(0.01)
    assert jwt.get_unverified_header(assertion_of(after))["alg"] == "RS256"  # type: ignore[arg-type]
    clock.now += 120  # lifetime + a minute after the swap: the old key is gone from the set
    assert [k["kid"] for k in identity.ring.jwks()["keys"]] == [new_kid]
    # A key that cannot load keeps the current one.
    broken = tmp_path / "broken.pem"
    broken.write_text("not a key")
    assert not await identity.reload(settings_for(broken, lifetime=120.0))
    assert identity.ring.current.kid == new_kid


async def test_a_replaced_key_file_is_followed_without_a_restart(tmp_path: Path) -> None:
    path = key_file(tmp_path, "ES256", "first")
    config = tmp_path / "identity.yaml"
    config.write_text(f"identity:\n  issuer: {GATEWAY}\n  key: {{file: {path.name}}}\n")
    settings = settings_for(path)
    identity = IdentityAssertions(settings, load_signing_key(settings))
    first = identity.ring.current.kid
    stop = asyncio.Event()
    follower = asyncio.create_task(follow_identity(str(config), "", identity, stop, interval=0.05))
    try:
        await asyncio.sleep(0.2)  # the follower has taken its first look
        replacement = key_file(tmp_path, "ES256", "second")
        replacement.replace(path)  # as a secret rotation does: a new file in place
        for _ in range(200):
            if identity.ring.current.kid != first:
                break
            await asyncio.sleep(0.02)
        assert identity.ring.current.kid == load_signing_key(settings_for(path)).kid != first
        assert first in [k["kid"] for k in identity.ring.jwks()["keys"]]
    finally:
        stop.set()
        await follower
        await identity.close()


async def test_an_edit_elsewhere_in_the_file_does_not_load_the_key_again(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = key_file(tmp_path, "ES256", "steady")
    config = tmp_path / "extauthz.yaml"
    config.write_text(f"identity:\n  issuer: {GATEWAY}\n  key: {{file: {path.name}}}\n")
    settings = settings_for(path)
    identity = IdentityAssertions(settings, load_signing_key(settings))
    loads: list[IdentitySettings] = []

    def counted(wanted: IdentitySettings) -> SigningKey:
        loads.append(wanted)
        return load_signing_key(wanted)

    monkeypatch.setattr("extauthz.identity_assertion.load_signing_key", counted)
    stop = asyncio.Event()
    follower = asyncio.create_task(follow_identity(str(config), "", identity, stop, interval=0.05))
    try:
        await asyncio.sleep(0.2)
        config.write_text(config.read_text() + "# tenants edited below, say\n")
        await asyncio.sleep(0.4)
        assert loads == []
        config.write_text(config.read_text().replace("identity:\n", "identity:\n  lifetime: 2m\n"))
        for _ in range(100):
            if loads:
                break
            await asyncio.sleep(0.02)
        assert [s.lifetime for s in loads] == [120.0] and identity.settings.lifetime == 120.0
    finally:
        stop.set()
        await follower
        await identity.close()

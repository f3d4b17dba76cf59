"""Opaque tokens through OAuth 2.0 Token Introspection (RFC 7662), against a real local introspection endpoint.

The Authorizer runs as in the service (real tenant generation, real aiohttp client, in-memory revocations);
a fake clock, shared by the verified-token cache and the introspector, moves time for the cache tests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from extauthz.authorizer import Authorizer
from extauthz.decision import Outcome
from extauthz.introspection import Introspector, basic_credentials
from extauthz.introspection_tenant import is_compact_jws
from extauthz.keys import KeySet
from extauthz.revocation import MemoryRevocations
from extauthz.tenant import NO_KEYS, IntrospectionPolicy, JwksSource, Tenant
from extauthz.tenant_set import Tenants, build_tenants, retire
from extauthz.token_cache import VerifiedTokenCache
from tests.extauthz.introspection_server import IntrospectionServer
from tests.extauthz.issuer import Issuer
from tests.extauthz.test_cert_binding import RP_ONE, RP_TWO

ISSUER = "https://idp.legacy.test"
AUDIENCE = "accounts-api"
OPAQUE = "2YotnFZFEjr1zCsicMWpAA"  # RFC 6749's example access token
JWT_ISSUER = Issuer(algs=("ES256",))


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Stack:
    server: IntrospectionServer
    authorizer: Authorizer
    clock: Clock
    tenants: Tenants
    secret_file: Path
    extra: list[IntrospectionServer] = field(default_factory=list)

    async def check(self, token: str = OPAQUE, route: str | None = "legacy", certificate: str | None = None,
                    **extensions: str) -> Outcome:
        context = dict(extensions)
        if route is not None:
            context["tenant"] = route
        attributes = _attributes(certificate) if certificate is not None else None
        return await self.authorizer.check({"authorization": f"Bearer {token}"}, "/accounts", context, attributes)

    def active(self, token: str = OPAQUE, **claims: Any) -> dict[str, Any]:
        answer = {"active": True, "iss": ISSUER, "aud": AUDIENCE, "sub": "user-7", "client_id": "rp-app",
                  "scope": "accounts:read profile", "exp": int(self.clock.now) + 600, "iat": int(self.clock.now),
                  "token_type": "Bearer"}
        answer.update(claims)
        self.server.answers[token] = {k: v for k, v in answer.items() if v is not ...}
        return answer


def _attributes(certificate: str) -> Any:
    from envoy.service.auth.v3 import attribute_context_pb2
    attributes = attribute_context_pb2.AttributeContext()
    attributes.source.certificate = certificate
    return attributes


def legacy(server: IntrospectionServer, secret_file: Path, tenant_id: str = "legacy", issuer: str = ISSUER,
           **policy: Any) -> Tenant:
    settings: dict[str, Any] = {"endpoint": server.url, "client_id": "pavilion-gateway",
                                "client_secret_file": str(secret_file), "allow_http_loopback": True}
    settings.update(policy)
    return Tenant(id=tenant_id, issuer=issuer, audiences=(AUDIENCE,), jwks=JwksSource(inline=NO_KEYS),
                  claims_to_headers=(("username", "x-user-name"),), introspection=IntrospectionPolicy(**settings))


async def make_stack(tmp_path: Path, server: IntrospectionServer, *tenants: Tenant, clock: Clock,
                     ) -> tuple[Authorizer, Tenants]:
    def introspector(tenant: Tenant, keys: KeySet) -> Introspector:
        return Introspector(tenant, keys, clock=clock)

    generation = await build_tenants(tenants, introspector_factory=introspector)
    return Authorizer(generation, MemoryRevocations(clock=clock), VerifiedTokenCache(clock=clock), clock=clock), \
        generation


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    server = await IntrospectionServer().start()
    secret_file = tmp_path / "introspection-secret"
    secret_file.write_text(server.client_secret + "\n")
    clock = Clock()
    tenants = (legacy(server, secret_file), JWT_ISSUER.tenant("acme"))
    authorizer, generation = await make_stack(tmp_path, server, *tenants, clock=clock)
    built = Stack(server, authorizer, clock, generation, secret_file)
    try:
        yield built
    finally:
        await retire(authorizer.tenants, None)
        await server.stop()
        for extra in built.extra:
            await extra.stop()


def header_map(outcome: Outcome) -> dict[str, str]:
    return dict(outcome.headers)


# -- the call and the answer -------------------------------------------------------------------------------


async def test_an_active_opaque_token_passes_with_its_identity(stack: Stack) -> None:
    stack.active(username="ada")
    outcome = await stack.check()
    assert (outcome.status, outcome.reason) == (200, "ok")
    headers = header_map(outcome)
    assert headers["x-pavilion-subject"] == "user-7"
    assert headers["x-pavilion-tenant"] == "legacy"
    assert headers["x-user-name"] == "ada"
    assert (outcome.tenant, outcome.subject, outcome.client) == ("legacy", "user-7", "rp-app")


async def test_the_request_is_a_form_post_with_client_secret_basic(stack: Stack) -> None:
    stack.active()
    await stack.check()
    (request,) = stack.server.requests
    assert request["method"] == "POST"
    assert request["form"] == {"token": OPAQUE, "token_type_hint": "access_token"}
    headers = request["headers"]
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert headers["Accept"] == "application/json"
    user, _, password = base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode().partition(":")
    # RFC 6749 section 2.3.1: form-encoded before Basic (the secret has a space, a colon and a plus)
    assert (unquote_plus(user), unquote_plus(password)) == ("pavilion-gateway", stack.server.client_secret)
    assert password == "s3cret%3A+with+spaces%2Bplus"


def test_basic_credentials_form_encode_both_parts() -> None:
    value = basic_credentials("a b", "c:d+e")
    assert base64.b64decode(value.removeprefix("Basic ")).decode() == "a+b:c%3Ad%2Be"


async def test_an_inactive_token_is_401_token_inactive(stack: Stack) -> None:
    outcome = await stack.check("unknown-token")
    assert (outcome.status, outcome.reason) == (401, "token_inactive")
    assert header_map(outcome)["www-authenticate"].startswith('Bearer error="invalid_token"')


@pytest.mark.parametrize(("claims", "reason"), [
    ({"active": "true"}, "token_inactive"),
    ({"active": 1}, "token_inactive"),
    ({"iss": "https://other.test"}, "wrong_issuer"),
    ({"aud": "other-api"}, "wrong_audience"),
    ({"aud": ["other-api", "more"]}, "wrong_audience"),
    ({"aud": ...}, "missing_claim"),
    ({"exp": ...}, "missing_claim"),
    ({"exp": "9999999999"}, "bad_claim"),
    ({"exp": True}, "bad_claim"),
    ({"exp": 1000}, "expired"),
    ({"nbf": 9_999_999_999}, "not_yet_valid"),
    ({"iat": 9_999_999_999}, "issued_in_future"),
    ({"token_type": "refresh_token"}, "wrong_type"),
    ({"token_type": 7}, "bad_claim"),
    ({"sub": 12}, "bad_claim"),
    ({"cnf": {"jwk": {}}}, "unverifiable_binding"),
])
async def test_each_rule_of_the_answer(stack: Stack, claims: dict[str, Any], reason: str) -> None:
    stack.active(**claims)
    outcome = await stack.check()
    assert (outcome.status, outcome.reason) == (401, reason)


@pytest.mark.parametrize("claims", [{"iss": ...}, {"aud": [AUDIENCE, "x"]}, {"token_type": ...}, {"nbf": 1000}])
async def test_optional_members_and_list_audiences_pass(stack: Stack, claims: dict[str, Any]) -> None:
    stack.active(**claims)
    assert (await stack.check()).status == 200


async def test_scopes_claims_and_client_flow_as_a_jwts(stack: Stack) -> None:
    stack.active(groups=["ops"])
    assert (await stack.check(scopes="accounts:read")).status == 200
    refused = await stack.check(scopes="accounts:write")
    assert (refused.status, refused.reason) == (403, "missing_scope")
    assert (await stack.check(claims='{"groups": ["ops"]}')).status == 200
    assert (await stack.check(claims='{"groups": ["admins"]}')).status == 403


async def test_a_certificate_bound_opaque_token_needs_its_certificate(stack: Stack) -> None:
    stack.active(cnf={"x5t#S256": RP_ONE[1]})
    for _ in range(2):  # first check, then the cached one
        assert (await stack.check(certificate=RP_ONE[0])).status == 200
        assert (await stack.check(certificate=RP_TWO[0])).reason == "certificate_mismatch"
        assert (await stack.check()).reason == "certificate_missing"


async def test_revocation_by_jti_and_by_subject_cutoff(stack: Stack) -> None:
    stack.active(jti="op-1")
    assert (await stack.check()).status == 200
    store = stack.authorizer.store
    assert isinstance(store, MemoryRevocations)
    await store.revoke_token(ISSUER, "op-1", stack.clock.now + 600)
    assert (await stack.check()).reason == "revoked"
    stack.active("other-token", jti="op-2")
    assert (await stack.check("other-token")).status == 200
    await store.revoke_subject("legacy", "user-7", stack.clock.now + 1)
    assert (await stack.check("other-token")).reason == "revoked"


# -- caching ------------------------------------------------------------------------------------------------


async def test_an_active_answer_is_reused_and_check_now_serves_it(stack: Stack) -> None:
    stack.active()
    assert (await stack.check()).status == 200
    assert (await stack.check()).status == 200
    fast = stack.authorizer.check_now({"authorization": f"Bearer {OPAQUE}"}, "/", {"tenant": "legacy"})
    assert fast is not None and fast.status == 200
    assert stack.server.calls == 1


async def test_the_cache_ends_after_cache_seconds(stack: Stack) -> None:
    stack.active()
    await stack.check()
    stack.clock.now += 59
    await stack.check()
    assert stack.server.calls == 1
    stack.clock.now += 2  # 61 s: past `cache` (60 s), though the token lives 600 s
    assert (await stack.check()).status == 200
    assert stack.server.calls == 2


async def test_the_cache_never_outlives_the_tokens_exp(stack: Stack) -> None:
    stack.active(exp=int(stack.clock.now) + 10)
    assert (await stack.check()).status == 200
    stack.clock.now += 11  # past exp (before `cache` ends), within the 30 s clock skew: asked again, accepted
    assert ((await stack.check()).status, stack.server.calls) == (200, 2)
    stack.clock.now += 30  # past exp and the skew: asked again, and the answer's exp is refused
    outcome = await stack.check()
    assert (outcome.status, outcome.reason, stack.server.calls) == (401, "expired", 3)


async def test_an_inactive_answer_is_reused_for_negative_cache_seconds(stack: Stack) -> None:
    for _ in range(3):
        assert (await stack.check("nope")).reason == "token_inactive"
    assert stack.server.calls == 1
    stack.clock.now += 6  # past negative_cache (5 s)
    stack.active("nope")  # the IdP now says active
    assert (await stack.check("nope")).status == 200
    assert stack.server.calls == 2


async def test_concurrent_checks_of_one_token_share_one_call(stack: Stack) -> None:
    stack.active()
    stack.server.delay = 0.2
    outcomes = await asyncio.gather(*(stack.check() for _ in range(20)))
    assert {o.status for o in outcomes} == {200}
    assert stack.server.calls == 1


async def test_concurrent_checks_of_an_inactive_token_share_one_call(stack: Stack) -> None:
    stack.server.delay = 0.2
    outcomes = await asyncio.gather(*(stack.check("bad") for _ in range(10)))
    assert {o.reason for o in outcomes} == {"token_inactive"}
    assert stack.server.calls == 1


# -- the IdP failing ----------------------------------------------------------------------------------------


async def test_an_idp_error_is_503_and_not_cached(stack: Stack) -> None:
    stack.active()
    stack.server.status = 500
    for _ in range(2):
        outcome = await stack.check()
        assert (outcome.status, outcome.reason) == (503, "introspection_unavailable")
    assert stack.server.calls == 2  # errors are not remembered
    stack.server.status = 200
    assert (await stack.check()).status == 200


async def test_an_idp_down_cold_is_503(tmp_path: Path) -> None:
    server = await IntrospectionServer().start()
    await server.stop()  # its port now refuses connections
    secret = tmp_path / "secret"
    secret.write_text("x")
    clock = Clock()
    authorizer, generation = await make_stack(tmp_path, server, legacy(server, secret), clock=clock)
    try:
        outcome = await authorizer.check({"authorization": f"Bearer {OPAQUE}"}, "/", {"tenant": "legacy"})
        assert (outcome.status, outcome.reason) == (503, "introspection_unavailable")
    finally:
        await retire(generation, None)


async def test_a_slow_idp_times_out_as_503(tmp_path: Path) -> None:
    server = await IntrospectionServer(delay=2.0).start()
    secret = tmp_path / "secret"
    secret.write_text(server.client_secret)
    clock = Clock()
    authorizer, generation = await make_stack(tmp_path, server, legacy(server, secret, timeout=0.2), clock=clock)
    try:
        started = time.monotonic()
        outcome = await authorizer.check({"authorization": f"Bearer {OPAQUE}"}, "/", {"tenant": "legacy"})
        assert (outcome.status, outcome.reason) == (503, "introspection_unavailable")
        assert time.monotonic() - started < 1.5  # ended by the timeout, not by the IdP's answer
    finally:
        await retire(generation, None)
        await server.stop()


@pytest.mark.parametrize("body", [
    b'{"active": true, "active": false}',
    b'[{"active": true}]',
    b'"active"',
    b"not json",
    b'{"active": true, "exp": NaN}',
    b"\xff\xfe",
])
async def test_an_unreadable_answer_is_503(stack: Stack, body: bytes) -> None:
    stack.server.body_override = body
    outcome = await stack.check()
    assert (outcome.status, outcome.reason) == (503, "introspection_unavailable")


async def test_an_oversize_answer_is_503(stack: Stack) -> None:
    stack.server.stream_bytes = 200_000
    assert (await stack.check()).reason == "introspection_unavailable"
    stack.server.stream_bytes = 1_000  # the same stream, small: read (and refused for its missing exp)
    assert (await stack.check()).reason == "missing_claim"


async def test_redirects_are_not_followed(stack: Stack) -> None:
    other = await IntrospectionServer(answers={OPAQUE: stack.active()}).start()
    stack.extra.append(other)
    stack.server.redirect_to = other.url
    outcome = await stack.check()
    assert (outcome.status, outcome.reason) == (503, "introspection_unavailable")
    assert other.calls == 0


async def test_a_wrong_client_secret_is_introspection_refused(stack: Stack, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    stack.active()
    stack.server.client_secret = "rotated-at-the-idp"
    for _ in range(2):
        outcome = await stack.check()
        assert (outcome.status, outcome.reason) == (503, "introspection_refused")
    assert stack.server.calls == 2
    logged = capsys.readouterr()
    text = logged.out + logged.err
    assert "introspection_refused" in text
    assert OPAQUE not in text and "s3cret" not in text


# -- which tenant asks --------------------------------------------------------------------------------------


async def test_only_a_tenant_the_route_names_is_asked(stack: Stack) -> None:
    stack.active()
    outcome = await stack.check(route="acme")  # a route of the JWT tenant only
    assert (outcome.status, outcome.reason) == (401, "malformed")
    assert stack.server.calls == 0


async def test_without_a_route_tenant_the_only_introspecting_tenant_asks(stack: Stack) -> None:
    stack.active()
    assert (await stack.check(route=None)).status == 200
    assert stack.server.calls == 1


async def test_two_introspecting_tenants_on_one_route_are_ambiguous(tmp_path: Path) -> None:
    server = await IntrospectionServer().start()
    secret = tmp_path / "secret"
    secret.write_text(server.client_secret)
    clock = Clock()
    authorizer, generation = await make_stack(
        tmp_path, server, legacy(server, secret), legacy(server, secret, "other", "https://other.test"), clock=clock)
    try:
        for route in ({"tenant": "legacy,other"}, {}):
            outcome = await authorizer.check({"authorization": f"Bearer {OPAQUE}"}, "/", route)
            assert (outcome.status, outcome.reason) == (401, "introspection_ambiguous")
        outcome = await authorizer.check({"authorization": f"Bearer {OPAQUE}"}, "/", {"tenant": "other"})
        assert outcome.reason == "token_inactive"
        assert server.calls == 1
    finally:
        await retire(generation, None)
        await server.stop()


async def test_a_jwt_of_a_tenant_with_keys_is_never_introspected(stack: Stack) -> None:
    token = JWT_ISSUER.token("ES256")
    assert (await stack.check(token, route="acme,legacy")).status == 200
    assert stack.server.calls == 0


async def test_a_jwt_of_a_tenant_without_keys_is_introspected(stack: Stack) -> None:
    token = Issuer(algs=("ES256",), issuer=ISSUER).token("ES256")
    assert is_compact_jws(token)
    stack.active(token)
    assert (await stack.check(token)).status == 200
    assert stack.server.calls == 1
    refused = await stack.check(token, route="acme")  # a route that does not name the tenant: never sent
    assert refused.status == 403
    assert stack.server.calls == 1


async def test_an_oversize_opaque_token_is_refused_before_the_idp(stack: Stack) -> None:
    outcome = await stack.check("a" * 9000)
    assert (outcome.status, outcome.reason) == (401, "oversize")
    assert stack.server.calls == 0


@pytest.mark.parametrize(("discovered", "http_loopback", "expected"), [
    ("", True, (200, "ok")),
    (None, True, (503, "introspection_unavailable")),  # the document names no introspection_endpoint
    ("", False, (503, "introspection_unavailable")),  # plain http, which only the key source allows
])
async def test_the_endpoint_can_come_from_discovery(tmp_path: Path, discovered: str | None, http_loopback: bool,
                                                   expected: tuple[int, str]) -> None:
    server = IntrospectionServer(discovered=discovered)
    await server.start()
    server.issuer = server.base
    secret = tmp_path / "secret"
    secret.write_text(server.client_secret)
    clock = Clock()
    tenant = Tenant(id="disc", issuer=server.base, audiences=(AUDIENCE,),
                    jwks=JwksSource(discovery=server.base, allow_http_loopback=True),
                    introspection=IntrospectionPolicy(client_id="pavilion-gateway", client_secret_file=str(secret),
                                                      allow_http_loopback=http_loopback))
    authorizer, generation = await make_stack(tmp_path, server, tenant, clock=clock)
    server.answers[OPAQUE] = {"active": True, "iss": server.base, "aud": AUDIENCE, "sub": "s",
                              "exp": int(clock.now) + 60}
    try:
        outcome = await authorizer.check({"authorization": f"Bearer {OPAQUE}"}, "/", {"tenant": "disc"})
        assert (outcome.status, outcome.reason) == expected
        assert server.calls == (1 if expected[0] == 200 else 0)
    finally:
        await retire(generation, None)
        await server.stop()


async def test_a_token_with_form_special_characters_reaches_the_idp_intact(stack: Stack) -> None:
    token = "a+b/c~d-e_f.g=="
    stack.active(token)
    assert (await stack.check(token)).status == 200
    assert stack.server.requests[0]["form"]["token"] == token


async def test_status_shows_the_client_not_the_secret(stack: Stack) -> None:
    status = json.dumps(stack.tenants.status())
    assert "pavilion-gateway" in status
    assert stack.server.client_secret not in status
    assert stack.server.client_secret not in repr(stack.tenants.tenants)


async def test_a_cancelled_check_does_not_cancel_the_shared_call(stack: Stack) -> None:
    stack.active()
    stack.server.delay = 0.3
    first = asyncio.ensure_future(stack.check())
    second = asyncio.ensure_future(stack.check())
    await asyncio.sleep(0.1)
    first.cancel()  # as when Envoy's ext_authz timeout ends one request
    assert (await second).status == 200
    assert first.cancelled()
    assert stack.server.calls == 1


async def test_an_opaque_dpop_bound_token_needs_its_proof(stack: Stack) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from extauthz.dpop_sign import key_thumbprint, make_proof

    key = ec.generate_private_key(ec.SECP256R1())
    stack.active(cnf={"jkt": key_thumbprint(key)})
    bearer = await stack.check()
    assert (bearer.status, bearer.reason) == (401, "dpop_bound_bearer")  # no downgrade to bearer
    proof = make_proof(key, method="GET", url="https://api.test/accounts", access_token=OPAQUE)
    outcome = await stack.authorizer.check({"authorization": f"DPoP {OPAQUE}", "dpop": proof}, "/accounts",
                                           {"tenant": "legacy"}, _request_attributes("https", "api.test",
                                                                                     "/accounts"))
    assert (outcome.status, outcome.reason) == (200, "ok")


def _request_attributes(scheme: str, host: str, path: str) -> Any:
    from envoy.service.auth.v3 import attribute_context_pb2
    attributes = attribute_context_pb2.AttributeContext()
    http = attributes.request.http
    http.method, http.scheme, http.host, http.path = "GET", scheme, host, path
    return attributes


async def test_a_reload_keeps_an_unchanged_tenants_client_and_closes_a_changed_ones(stack: Stack) -> None:
    old = stack.tenants
    (legacy_tenant, acme) = old.tenants
    same = await build_tenants([legacy_tenant, acme], previous=old)
    assert same.introspector(legacy_tenant) is old.introspector(legacy_tenant)
    stack.active()
    assert (await stack.check()).status == 200  # the client now has a session
    changed = legacy(stack.server, stack.secret_file, cache=30.0)
    new = await build_tenants([changed, acme], previous=same)
    before = old.introspector(legacy_tenant)
    assert before is not None and new.introspector(changed) is not before
    await retire(same, new)
    assert before._session is None  # closed
    stack.authorizer.use(new)
    assert (await stack.check()).status == 200  # a new tenant: not the old cache entry, asked again
    assert stack.server.calls == 2


async def test_a_tenant_named_twice_by_a_route_is_one_candidate(stack: Stack) -> None:
    stack.active()
    assert (await stack.check(route="legacy, legacy,acme")).status == 200


async def test_retiring_a_tenant_lets_its_calls_in_flight_answer(stack: Stack) -> None:
    stack.active()
    stack.server.delay = 0.3
    pending = asyncio.ensure_future(stack.check())
    await asyncio.sleep(0.1)
    await retire(stack.tenants, None)  # a reload removed the tenant while the call was in flight
    assert (await pending).status == 200


async def test_a_flood_of_distinct_tokens_reaches_the_idp_32_at_a_time(stack: Stack) -> None:
    for index in range(40):
        stack.active(f"flood-{index}")
    stack.server.delay = 0.3
    outcomes = await asyncio.gather(*(stack.check(f"flood-{index}") for index in range(40)))
    assert {o.status for o in outcomes} == {200}  # the 8 that waited still answered within the 1 s timeout
    assert stack.server.most_at_once == 32

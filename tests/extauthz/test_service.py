"""The Check service over real gRPC (grpc.aio server on a random loopback port, real client), with the
hostile-request catalogue at the service level: every case has its decided answer, none a gRPC error."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from prometheus_client import REGISTRY

from extauthz import decision
from extauthz.app import reload_once
from extauthz.authorizer import Authorizer
from extauthz.revocation import MemoryRevocations, RedisRevocations, RevocationQuery, RevocationStore
from extauthz.service import SERVICE_NAME, AuthorizationService, register, to_response
from extauthz.tenant import JwksSource, Tenant
from extauthz.tenant_set import Tenants, build_tenants, retire
from extauthz.verify import verify_token
from pavilion.grpc_server import GrpcServer
from tests.extauthz.issuer import Issuer
from tests.extauthz.jwks_server import JwksServer
from tests.extauthz.test_revocation import wait_subscribed
from tests.procs import Proc, free_port

ACME = Issuer()
BETA = Issuer(issuer="https://idp.beta.test", name="beta")
CLAIMS = (("email", "x-user-email"), ("groups", "x-user-groups"))

Check = Callable[..., Awaitable[external_auth_pb2.CheckResponse]]


def check_request(headers: dict[str, str], path: str = "/orders", tenant: str | None = "acme",
                  extensions: dict[str, str] | None = None, certificate: str = "") -> external_auth_pb2.CheckRequest:
    """`certificate`: the client certificate as Envoy sends it (URL-encoded PEM), "" for none."""
    attributes = attribute_context_pb2.AttributeContext(
        source=attribute_context_pb2.AttributeContext.Peer(certificate=certificate),
        request=attribute_context_pb2.AttributeContext.Request(
            http=attribute_context_pb2.AttributeContext.HttpRequest(method="GET", path=path, headers=headers)),
        context_extensions=extensions or {})
    if tenant is not None:
        attributes.context_extensions["tenant"] = tenant
    return external_auth_pb2.CheckRequest(attributes=attributes)


async def serve(authorizer: Authorizer) -> tuple[GrpcServer, Check, grpc.aio.Channel]:
    server = GrpcServer("127.0.0.1", 0, register=register(authorizer), service_names=[SERVICE_NAME])
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)

    async def check(headers: dict[str, str], path: str = "/orders", tenant: str | None = "acme",
                    extensions: dict[str, str] | None = None, certificate: str = "") -> external_auth_pb2.CheckResponse:
        return await stub.Check(check_request(headers, path, tenant, extensions, certificate), timeout=5)

    return server, check, channel


class CountingStore:
    """A store that counts the questions it is asked (to show revocation runs on cache hits too)."""

    def __init__(self, inner: RevocationStore) -> None:
        self.inner = inner
        self.asked = 0

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    def revoked_locally(self, query: RevocationQuery) -> bool | None:
        self.asked += 1
        return self.inner.revoked_locally(query)

    async def is_revoked(self, query: RevocationQuery) -> bool:
        self.asked += 1
        return await self.inner.is_revoked(query)

    async def revoke_token(self, issuer: str, jti: str, expires_at: float) -> bool:
        return await self.inner.revoke_token(issuer, jti, expires_at)

    async def revoke_subject(self, tenant_id: str, subject: str, before: float, ttl: float | None = None) -> None:
        await self.inner.revoke_subject(tenant_id, subject, before, ttl)

    async def revoke_tenant(self, tenant_id: str, before: float, ttl: float | None = None) -> None:
        await self.inner.revoke_tenant(tenant_id, before, ttl)


@pytest.fixture
async def stack() -> AsyncIterator[dict[str, Any]]:
    tenants = await build_tenants([
        ACME.tenant("acme", claims_to_headers=CLAIMS),
        BETA.tenant("beta", on_store_error="allow"),
    ])
    memory = MemoryRevocations()
    store = CountingStore(memory)
    verifications = []

    async def counting_verify(token: str, tenant: Tenant, keys: Any, now: float) -> Any:
        verifications.append(tenant.id)
        return await verify_token(token, tenant, keys, now)

    authorizer = Authorizer(tenants, store, verify=counting_verify)
    server, check, channel = await serve(authorizer)
    try:
        yield {"check": check, "memory": memory, "store": store, "verifications": verifications,
               "authorizer": authorizer, "tenants": tenants}
    finally:
        await channel.close()
        await server.stop(0)
        await retire(authorizer.tenants, None)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def denied(response: external_auth_pb2.CheckResponse) -> tuple[int, dict[str, str], str]:
    assert response.HasField("denied_response"), response
    assert response.status.code != 0
    denial = response.denied_response
    return denial.status.code, {h.header.key: h.header.value for h in denial.headers}, denial.body


def ok_headers(response: external_auth_pb2.CheckResponse) -> tuple[dict[str, str], list[str]]:
    assert response.status.code == 0 and response.HasField("ok_response"), response
    ok = response.ok_response
    return {h.header.key: h.header.value for h in ok.headers}, list(ok.headers_to_remove)


async def test_a_valid_token_is_allowed_with_identity_headers_and_metadata(stack: dict[str, Any]) -> None:
    token = ACME.token(sub="alice", email="alice@acme.test", groups=["admin", "dev"])
    response = await stack["check"]({**bearer(token), "x-pavilion-tenant": "beta", "x-user-email": "spoof"})
    headers, removed = ok_headers(response)
    assert headers == {"x-pavilion-tenant": "acme", "x-pavilion-subject": "alice",
                       "x-user-email": "alice@acme.test", "x-user-groups": "admin,dev"}
    assert removed == []  # every identity header is set, which replaces whatever the client sent
    assert dict(response.dynamic_metadata) == {"tenant": "acme", "subject": "alice"}
    bare = ok_headers(await stack["check"](bearer(ACME.token(sub="bob"))))
    assert bare[1] == ["x-user-email", "x-user-groups"]  # not set this time: removed so they cannot be spoofed


@pytest.mark.parametrize(("claims", "client"), [
    ({"client_id": "rp-1", "azp": "rp-2"}, "rp-1"),
    ({"azp": "rp-2"}, "rp-2"),
    ({}, None),
    ({"client_id": "rp\n1", "azp": "rp-2"}, None),  # not safe as a value: no client, the token still passes
    ({"client_id": 42, "azp": "rp-2"}, "rp-2"),
    ({"client_id": "x" * 2000}, None),
])
async def test_the_tokens_client_is_in_the_metadata_for_rate_limits(stack: dict[str, Any], claims: dict[str, Any],
                                                                      client: str | None) -> None:
    response = await stack["check"](bearer(ACME.token(sub="alice", jti=f"c-{len(str(claims))}", **claims)))
    assert response.status.code == 0
    expected = {"tenant": "acme", "subject": "alice", **({"client": client} if client else {})}
    assert dict(response.dynamic_metadata) == expected


@pytest.mark.parametrize(("headers", "path", "status", "reason", "challenge"), [
    ({}, "/", 401, "missing", "Bearer"),
    ({"authorization": "Basic dXNlcjpwYXNz"}, "/", 401, "unsupported_scheme", "Bearer"),
    ({"authorization": "Bearer"}, "/", 400, "empty_bearer", 'Bearer error="invalid_request"'),
    ({"authorization": "Bearer a.b.c, Bearer d.e.f"}, "/", 400, "multiple_credentials",
     'Bearer error="invalid_request"'),
    ({"authorization": "Bearer a.b.c"}, "/x?access_token=d.e.f", 400, "multiple_credentials",
     'Bearer error="invalid_request"'),
    ({"authorization": "Bearer not-a-jwt"}, "/", 401, "malformed", 'Bearer error="invalid_token"'),
    ({"authorization": "Bearer " + "a" * 20000 + ".b.c"}, "/", 401, "oversize", 'Bearer error="invalid_token"'),
])
async def test_hostile_requests_get_their_decided_answer(stack: dict[str, Any], headers: dict[str, str], path: str,
                                                        status: int, reason: str, challenge: str) -> None:
    response = await stack["check"](headers, path)
    code, response_headers, body = denied(response)
    assert code == status
    assert body == f'{{"error": "{reason}"}}'
    # The reason, and nothing of the request, for the edge's problem+json `detail` (error_responses).
    assert dict(response.dynamic_metadata) == {"reason": reason}
    assert response_headers["www-authenticate"].startswith(challenge)
    if challenge == "Bearer":
        assert response_headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("make_token", "reason"), [
    (lambda: ACME.token()[:-4] + ("AAAA" if not ACME.token().endswith("AAAA") else "BBBB"), "bad_signature"),
    (lambda: ACME.token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200), "expired"),
    (lambda: ACME.token(nbf=int(time.time()) + 3600), "not_yet_valid"),
    (lambda: ACME.token(aud="someone-else"), "wrong_audience"),
    (lambda: ACME.token(kid="nobody"), "unknown_kid"),
    (lambda: Issuer(issuer="https://evil.test", name="evil").token(), "unknown_issuer"),
    (lambda: ACME.token(email="a@b.test\r\nx-pavilion-tenant: beta"), "bad_claim"),
    (lambda: ACME.token(groups=["users", "admin,root"]), "bad_claim"),
    (lambda: ACME.token(email="x" * 2000), "bad_claim"),
])
async def test_refused_tokens_are_401_invalid_token(stack: dict[str, Any], make_token: Callable[[], str],
                                                    reason: str) -> None:
    code, headers, body = denied(await stack["check"](bearer(make_token())))
    assert (code, body) == (401, f'{{"error": "{reason}"}}')
    assert headers["www-authenticate"].startswith('Bearer error="invalid_token", error_description="')
    assert "\r" not in headers["www-authenticate"] and "\n" not in headers["www-authenticate"]


async def test_a_valid_token_of_another_tenant_is_403_and_a_shared_route_admits_both(stack: dict[str, Any]) -> None:
    beta_token = BETA.token()
    code, headers, body = denied(await stack["check"](bearer(beta_token), tenant="acme"))
    assert (code, body) == (403, '{"error": "wrong_tenant"}')
    assert headers["www-authenticate"].startswith('Bearer error="insufficient_scope"')
    assert ok_headers(await stack["check"](bearer(beta_token), tenant="acme,beta"))[0]["x-pavilion-tenant"] == "beta"
    assert ok_headers(await stack["check"](bearer(beta_token), tenant=None))[0]["x-pavilion-tenant"] == "beta"
    code, _, body = denied(await stack["check"](bearer(beta_token), tenant="nosuch"))
    assert (code, body) == (503, '{"error": "route_tenant_unknown"}')


async def test_revoked_tokens_subjects_and_tenants_are_refused(stack: dict[str, Any]) -> None:
    memory: MemoryRevocations = stack["memory"]
    token = ACME.token(jti="jti-77", sub="carol")
    assert ok_headers(await stack["check"](bearer(token)))
    await memory.revoke_token(ACME.issuer, "jti-77", time.time() + 300)
    code, _, body = denied(await stack["check"](bearer(token)))
    assert (code, body) == (401, '{"error": "revoked"}')
    other = ACME.token(jti="jti-78", sub="dave", iat=int(time.time()) - 5)
    assert ok_headers(await stack["check"](bearer(other)))
    await memory.revoke_subject("acme", "dave", time.time())
    assert denied(await stack["check"](bearer(other)))[0] == 401
    newer = ACME.token(jti="jti-79", sub="dave", iat=int(time.time()) + 2)
    assert ok_headers(await stack["check"](bearer(newer)))
    await memory.revoke_tenant("acme", time.time() + 10)
    assert denied(await stack["check"](bearer(newer)))[0] == 401


async def test_verification_is_cached_but_revocation_is_asked_every_time(stack: dict[str, Any]) -> None:
    token = ACME.token()
    for _ in range(5):
        ok_headers(await stack["check"](bearer(token)))
    assert stack["verifications"] == ["acme"]
    assert stack["store"].asked == 5


async def test_a_config_change_reverifies_under_the_new_tenant(stack: dict[str, Any], tmp_path: Path) -> None:
    token = ACME.token()
    ok_headers(await stack["check"](bearer(token)))
    authorizer: Authorizer = stack["authorizer"]
    old: Tenants = authorizer.tenants
    new = await build_tenants([ACME.tenant("acme", audiences=("other-api",)),
                               BETA.tenant("beta", on_store_error="allow")], previous=old)
    authorizer.use(new)
    await retire(old, new)
    code, _, body = denied(await stack["check"](bearer(token)))
    assert (code, body) == (401, '{"error": "wrong_audience"}')
    old_beta, new_beta = old.get("beta"), new.get("beta")
    assert old_beta is not None and new_beta is old_beta  # unchanged: same object, same running key set
    assert new.keys(new_beta) is old.keys(old_beta)


async def test_an_unexpected_error_is_a_503_answer_not_a_grpc_error() -> None:
    async def broken_verify(*_args: Any) -> Any:
        raise RuntimeError("boom")

    tenants = await build_tenants([ACME.tenant("acme")])
    server, check, channel = await serve(Authorizer(tenants, MemoryRevocations(), verify=broken_verify))
    try:
        code, _, body = denied(await check(bearer(ACME.token())))
        assert (code, body) == (503, '{"error": "internal_error"}')
    finally:
        await channel.close()
        await server.stop(0)
        await retire(tenants, None)


async def test_redis_down_follows_each_tenants_on_store_error() -> None:
    store = RedisRevocations(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    tenants = await build_tenants([ACME.tenant("acme"), BETA.tenant("beta", on_store_error="allow")])
    server, check, channel = await serve(Authorizer(tenants, store))
    try:
        code, _, body = denied(await check(bearer(ACME.token())))
        assert (code, body) == (503, '{"error": "store_unavailable"}')
        assert ok_headers(await check(bearer(BETA.token()), tenant="beta"))[0]["x-pavilion-tenant"] == "beta"
    finally:
        await channel.close()
        await server.stop(0)
        await store.close()
        await retire(tenants, None)


async def test_key_endpoint_down_cold_is_503_and_warm_keeps_serving_stale_keys() -> None:
    jwks = await JwksServer(jwks=ACME.jwks()).start()
    jwks.status = 503
    # A long retry delay: no background refetch may run while the test counts fetches.
    source = JwksSource(uri=jwks.jwks_url, allow_http_loopback=True, timeout=0.5, error_retry=60.0)
    tenants = await build_tenants([ACME.tenant("acme", jwks=source), BETA.tenant("beta")])
    server, check, channel = await serve(Authorizer(tenants, MemoryRevocations()))
    try:
        code, _, body = denied(await check(bearer(ACME.token())))
        assert (code, body) == (503, '{"error": "keys_unavailable"}')
        # An issuer no tenant has never causes a fetch.
        hits = jwks.hits["jwks"]
        unknown = Issuer(issuer="https://unknown.test", name="unknown").token()
        assert denied(await check(bearer(unknown)))[2] == '{"error": "unknown_issuer"}'
        assert jwks.hits["jwks"] == hits
        jwks.status = 200
        acme = tenants.get("acme")
        assert acme is not None and await tenants.keys(acme).refresh()
        assert ok_headers(await check(bearer(ACME.token())))
        jwks.status = 503
        await tenants.keys(acme).refresh()  # fails: the last good keys stay
        assert tenants.keys(acme).status()["stale"]
        assert ok_headers(await check(bearer(ACME.token(jti="fresh-token"))))
    finally:
        await channel.close()
        await server.stop(0)
        await retire(tenants, None)
        await jwks.stop()


async def test_reload_swaps_good_configs_and_keeps_the_last_good_one(tmp_path: Path, stack: dict[str, Any]) -> None:
    path = tmp_path / "tenants.yaml"
    inline = json.dumps(ACME.jwks())
    good = (f"tenants:\n  - id: acme\n    issuer: {ACME.issuer}\n    audiences: [{ACME.audience}]\n"
            f"    jwks: {{inline: {inline}}}\n")
    path.write_text(good)
    authorizer: Authorizer = stack["authorizer"]
    assert await reload_once(path, authorizer)
    assert [t.id for t in authorizer.tenants.tenants] == ["acme"]
    assert ok_headers(await stack["check"](bearer(ACME.token())))
    path.write_text(good.replace("audiences:", "audiences: [x]\n    audiences:"))
    assert not await reload_once(path, authorizer)
    assert [t.id for t in authorizer.tenants.tenants] == ["acme"]
    assert ok_headers(await stack["check"](bearer(ACME.token())))


async def test_a_cached_answer_is_sent_as_the_bytes_of_the_normal_response(stack: dict[str, Any]) -> None:
    authorizer: Authorizer = stack["authorizer"]
    servicer = AuthorizationService(authorizer)
    token = ACME.token(sub="alice", email="alice@acme.test", groups=["admin", "dev"])
    request = check_request(bearer(token))
    first = await servicer.Check(request, None)
    second = await servicer.Check(request, None)
    assert isinstance(first, bytes) and second is first  # serialized once, then the same bytes
    http = request.attributes.request.http
    outcome = await authorizer.check(http.headers, http.path, request.attributes.context_extensions)
    assert first == to_response(outcome).SerializeToString()
    denial = await servicer.Check(check_request({}), None)  # a refusal is returned serialized too
    assert isinstance(denial, bytes)
    assert external_auth_pb2.CheckResponse.FromString(denial) == to_response(decision.missing_credential())
    # Over the wire (no response serializer) the client reads the message built field by field.
    assert await stack["check"](bearer(token)) == to_response(outcome)
    code, _, _ = denied(await stack["check"]({}))
    assert code == 401


async def test_answers_from_the_memo_are_counted_as_allowed(stack: dict[str, Any]) -> None:
    servicer = AuthorizationService(stack["authorizer"])
    labels = {"status": "200", "reason": "ok"}
    before = REGISTRY.get_sample_value("pavilion_extauthz_checks_total", labels) or 0.0
    request = check_request(bearer(ACME.token()))
    for _ in range(5):
        assert isinstance(await servicer.Check(request, None), bytes)
    await servicer.Check(check_request({}), None)
    servicer.flush_counts()
    assert REGISTRY.get_sample_value("pavilion_extauthz_checks_total", labels) == before + 5
    servicer.flush_counts()  # nothing new: nothing added twice
    assert REGISTRY.get_sample_value("pavilion_extauthz_checks_total", labels) == before + 5


async def test_a_cached_token_answered_without_waiting_is_refused_once_revoked_elsewhere(
        redis_server: tuple[Proc, int]) -> None:
    _proc, port = redis_server
    url = f"redis://127.0.0.1:{port}/0"
    store, writer = RedisRevocations(url, local_ttl=60.0), RedisRevocations(url)
    await store.start()
    await writer.start()
    tenants = await build_tenants([ACME.tenant("acme", claims_to_headers=CLAIMS)])
    authorizer = Authorizer(tenants, store)
    server, check, channel = await serve(authorizer)
    try:
        await wait_subscribed(store)
        token = ACME.token(jti="cached-1")
        assert ok_headers(await check(bearer(token)))
        assert ok_headers(await check(bearer(token)))
        request = check_request(bearer(token))
        http = request.attributes.request.http
        args = (http.headers, http.path, request.attributes.context_extensions)
        assert authorizer.check_now(*args) is not None and authorizer.check_now(*args).allowed  # type: ignore[union-attr]
        await writer.revoke_token(ACME.issuer, "cached-1", time.time() + 60)
        started = time.monotonic()
        while authorizer.check_now(*args).allowed:  # type: ignore[union-attr]
            assert time.monotonic() - started < 1.0, "a cached token stayed allowed after its revocation"
            await asyncio.sleep(0.01)
        code, _, body = denied(await check(bearer(token)))
        assert (code, body) == (401, '{"error": "revoked"}')
    finally:
        await channel.close()
        await server.stop(0)
        await store.close()
        await writer.close()
        await retire(tenants, None)


async def test_a_cached_token_sent_badly_still_gets_the_refusal_of_a_malformed_request(stack: dict[str, Any]) -> None:
    token = ACME.token()
    assert ok_headers(await stack["check"](bearer(token)))  # now cached: the no-wait path knows it
    cases = [
        ({"authorization": f"Bearer {token}, Bearer {token}"}, "/orders", "multiple_credentials"),
        ({"authorization": f"Bearer {token}"}, f"/orders?access_token={token}", "multiple_credentials"),
        ({"authorization": f"Bearer {token}\tx"}, "/orders", "malformed_credential"),
    ]
    for headers, path, reason in cases:
        code, _, body = denied(await stack["check"](headers, path))
        assert (code, json.loads(body)["error"]) == (400, reason), (headers, path)

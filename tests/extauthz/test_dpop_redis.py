"""DPoP replay protection against a real Redis: two Authorizers (two replicas) sharing one Redis through
their revocation stores catch a proof replayed to the other one; the jti expires with the proof's window;
Redis down follows the tenant's on_store_error."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from extauthz.authorizer import Authorizer
from extauthz.decision import Outcome
from extauthz.dpop_replay import RedisReplay, replay_key
from extauthz.dpop_sign import key_thumbprint, make_proof
from extauthz.revocation import RedisRevocations
from extauthz.tenant import DpopPolicy
from extauthz.tenant_set import Tenants, build_tenants, retire
from tests.extauthz.test_dpop import ACME, URL, attributes, bound_token, client_key, headers
from tests.procs import Proc, start_redis

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_server() -> Iterator[tuple[Proc, int]]:
    proc, port = start_redis()
    try:
        yield proc, port
    finally:
        proc.stop()


@pytest.fixture
async def tenants() -> AsyncIterator[Tenants]:
    built = await build_tenants([ACME.tenant("acme", dpop=DpopPolicy(max_age=2), clock_skew=0.0),
                                 ACME.tenant("lenient", issuer="https://idp.lenient.test", on_store_error="allow"),
                                 ACME.tenant("nonced", issuer="https://idp.nonced.test", dpop=DpopPolicy(nonce=True))])
    try:
        yield built
    finally:
        await retire(built, None)


async def replicas(port: int, tenants: Tenants, count: int = 2) -> list[Authorizer]:
    found = []
    for _ in range(count):
        store = RedisRevocations(f"redis://127.0.0.1:{port}/0", timeout=0.5)
        await store.start()
        found.append(Authorizer(tenants, store))
    return found


async def close(authorizers: list[Authorizer]) -> None:
    for authorizer in authorizers:
        await authorizer.store.close()


async def answer(authorizer: Authorizer, token: str, proof: str) -> Outcome:
    attrs = attributes(url=URL)
    return await authorizer.check(headers(token, proof), attrs.request.http.path, {}, attrs)


async def ask(authorizer: Authorizer, token: str, proof: str) -> tuple[int, str]:
    outcome = await answer(authorizer, token, proof)
    return outcome.status, outcome.reason


async def test_a_proof_replayed_to_another_replica_is_refused(redis_server: tuple[Proc, int],
                                                               tenants: Tenants) -> None:
    _, port = redis_server
    one, two = await replicas(port, tenants)
    try:
        assert isinstance(one.replay, RedisReplay) and isinstance(two.replay, RedisReplay)
        token = bound_token(jti="r-1")
        proof = make_proof(client_key(), method="GET", url=URL, access_token=token, jti="proof-r-1")
        assert await ask(one, token, proof) == (200, "ok")
        assert await ask(two, token, proof) == (401, "dpop_replayed")
        assert await ask(one, token, proof) == (401, "dpop_replayed")
        fresh = make_proof(client_key(), method="GET", url=URL, access_token=token)
        assert await ask(two, token, fresh) == (200, "ok")
        # The jti is kept in Redis for the proof's window (max_age 2 s + 1 s), not forever.
        client = aioredis.Redis(port=port)
        try:
            ttl = await client.pttl(replay_key(key_thumbprint(client_key()), "proof-r-1"))
            assert 0 < ttl <= 3000
        finally:
            await client.aclose()
    finally:
        await close([one, two])


async def test_a_nonce_given_by_one_replica_is_accepted_by_another(redis_server: tuple[Proc, int],
                                                                    tenants: Tenants) -> None:
    _, port = redis_server
    one, two = await replicas(port, tenants)
    try:
        token = ACME.token("ES256", iss="https://idp.nonced.test", cnf={"jkt": key_thumbprint(client_key())},
                           jti="r-nonce")
        outcome = await answer(one, token, make_proof(client_key(), method="GET", url=URL, access_token=token))
        assert (outcome.status, outcome.reason) == (401, "dpop_nonce_required")
        nonce = dict(outcome.headers)["dpop-nonce"]
        proof = make_proof(client_key(), method="GET", url=URL, access_token=token, claims={"nonce": nonce})
        assert await ask(two, token, proof) == (200, "ok")
    finally:
        await close([one, two])


async def test_redis_down_follows_each_tenants_on_store_error(tenants: Tenants) -> None:
    proc, port = start_redis()
    authorizers = await replicas(port, tenants, count=1)
    try:
        proc.stop()
        token = bound_token(jti="r-down")
        proof = make_proof(client_key(), method="GET", url=URL, access_token=token)
        assert await ask(authorizers[0], token, proof) == (503, "dpop_store_unavailable")
        lenient = ACME.token("ES256", iss="https://idp.lenient.test",
                             cnf={"jkt": key_thumbprint(client_key())}, jti="r-len")
        proof = make_proof(client_key(), method="GET", url=URL, access_token=lenient)
        # on_store_error allow: the proof is accepted (revocation too cannot be asked, and is allowed).
        assert await ask(authorizers[0], lenient, proof) == (200, "ok")
    finally:
        await close(authorizers)
        proc.stop()


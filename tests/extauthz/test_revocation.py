"""Revocation semantics on both stores, and the Redis store's round trips, pub/sub cache and failures."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from extauthz.revocation import MemoryRevocations, RedisRevocations, RevocationQuery, RevocationStore, token_key
from pavilion.errors import BackendUnavailable
from tests.procs import Proc, free_port, start_redis

ISS = "https://idp.acme.test"


def query(jti: str | None = "j1", subject: str = "alice", iat: float | None = None,
          tenant: str = "acme") -> RevocationQuery:
    return RevocationQuery(tenant, ISS, subject, jti, time.time() - 10 if iat is None else iat)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RevocationStore]:
    result: RevocationStore
    if request.param == "memory":
        result = MemoryRevocations()
    else:
        _proc, port = request.getfixturevalue("redis_server")
        result = RedisRevocations(f"redis://127.0.0.1:{port}/0")
    await result.start()
    try:
        yield result
    finally:
        await result.close()


async def test_one_token_is_revoked_by_issuer_and_jti_only(store: RevocationStore) -> None:
    assert not await store.is_revoked(query())
    assert await store.revoke_token(ISS, "j1", time.time() + 60)
    assert await store.is_revoked(query("j1"))
    assert not await store.is_revoked(query("j2"))
    assert not await store.is_revoked(query(None))
    other_issuer = RevocationQuery("acme", "https://other.test", "alice", "j1", time.time())
    assert not await store.is_revoked(other_issuer)


async def test_an_expired_token_needs_no_revocation_and_a_revocation_ends_with_the_token(
        store: RevocationStore) -> None:
    assert not await store.revoke_token(ISS, "old", time.time() - 1)
    assert await store.revoke_token(ISS, "short", time.time() + 0.3)
    assert await store.is_revoked(query("short"))
    await asyncio.sleep(1.4)  # past the TTL and past the Redis store's 1 s local cache
    assert not await store.is_revoked(query("short"))


async def test_subject_revocation_refuses_tokens_issued_before_the_cutoff(store: RevocationStore) -> None:
    cutoff = time.time()
    await store.revoke_subject("acme", "alice", cutoff)
    assert await store.is_revoked(query(subject="alice", iat=cutoff - 5))
    assert not await store.is_revoked(query(subject="alice", iat=cutoff + 5))
    no_iat = RevocationQuery("acme", ISS, "alice", "j", None)
    assert await store.is_revoked(no_iat)  # without iat a token cannot prove it is newer than the cut-off
    assert not await store.is_revoked(query(subject="bob", iat=cutoff - 5))
    assert not await store.is_revoked(query(subject="alice", iat=cutoff - 5, tenant="beta"))


async def test_tenant_revocation_refuses_every_older_token_of_that_tenant(store: RevocationStore) -> None:
    cutoff = time.time()
    await store.revoke_tenant("acme", cutoff)
    assert await store.is_revoked(query(subject="anyone", iat=cutoff - 1))
    assert not await store.is_revoked(query(subject="anyone", iat=cutoff + 1))
    assert not await store.is_revoked(query(subject="anyone", iat=cutoff - 1, tenant="beta"))


async def wait_subscribed(store: RedisRevocations) -> None:
    deadline = time.monotonic() + 5
    while not store.subscribed:
        assert time.monotonic() < deadline, "never subscribed"
        await asyncio.sleep(0.02)


async def command_calls(port: int, command: str) -> int:
    client = aioredis.Redis(port=port)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_a_check_costs_at_most_one_mget_and_repeats_come_from_the_local_cache(
        redis_server: tuple[Proc, int]) -> None:
    _proc, port = redis_server
    store = RedisRevocations(f"redis://127.0.0.1:{port}/0")
    await store.start()
    try:
        await wait_subscribed(store)
        before = await command_calls(port, "mget")
        assert not await store.is_revoked(query())
        assert await command_calls(port, "mget") == before + 1
        for _ in range(20):
            assert not await store.is_revoked(query())
        assert await command_calls(port, "mget") == before + 1
        assert await command_calls(port, "get") == 0
    finally:
        await store.close()


@pytest.fixture
async def replicas(redis_server: tuple[Proc, int]) -> AsyncIterator[tuple[RedisRevocations, RedisRevocations]]:
    """Two replicas on one Redis: a writer, and a subscribed reader whose local cache keeps answers 60 s."""
    _proc, port = redis_server
    url = f"redis://127.0.0.1:{port}/0"
    writer, reader = RedisRevocations(url), RedisRevocations(url, local_ttl=60.0)
    await writer.start()
    await reader.start()
    try:
        await wait_subscribed(reader)
        yield writer, reader
    finally:
        await writer.close()
        await reader.close()


async def test_a_revocation_reaches_another_replica_at_once_despite_its_cache(
        replicas: tuple[RedisRevocations, RedisRevocations]) -> None:
    writer, reader = replicas
    assert not await reader.is_revoked(query("j9"))  # now cached as "not revoked" for 60 s
    await writer.revoke_token(ISS, "j9", time.time() + 60)
    started = time.monotonic()
    while not await reader.is_revoked(query("j9")):
        assert time.monotonic() - started < 1.0, "revocation did not reach the other replica within 1 s"
        await asyncio.sleep(0.01)


def subscribed_gauge() -> float | None:
    return REGISTRY.get_sample_value("pavilion_extauthz_revocation_subscribed")


async def test_redis_down_is_backend_unavailable_quickly_and_recovery_flushes_the_cache() -> None:
    port = free_port()
    store = RedisRevocations(f"redis://127.0.0.1:{port}/0", timeout=0.2, local_ttl=60.0)
    await store.start()
    try:
        assert subscribed_gauge() == 0.0
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await store.is_revoked(query())
        assert time.monotonic() - started < 1.0
        proc, _ = start_redis(port)
        try:
            await wait_subscribed(store)
            assert subscribed_gauge() == 1.0
            assert not await store.is_revoked(query("j5"))   # cached for 60 s while subscribed
            proc.kill()
            with pytest.raises(BackendUnavailable):
                # The subscription drops with the server: the cache is no longer trusted.
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    await store.is_revoked(query("j5"))
                    await asyncio.sleep(0.02)
            assert not store.subscribed and subscribed_gauge() == 0.0
            proc, _ = start_redis(port)
            await wait_subscribed(store)
            assert subscribed_gauge() == 1.0
            writer = aioredis.Redis(port=port)
            # Written behind the store's back (no publish): only a flushed cache can see it.
            await writer.set(token_key(ISS, "j5"), "1", ex=60)
            await writer.aclose()
            assert await store.is_revoked(query("j5"))
        finally:
            proc.stop()
    finally:
        await store.close()


async def test_both_stores_answer_known_keys_without_waiting(store: RevocationStore) -> None:
    await store.revoke_token(ISS, "j7", time.time() + 60)
    if isinstance(store, RedisRevocations):
        await wait_subscribed(store)
        assert store.revoked_locally(query("j7")) is None  # never read yet: only is_revoked can tell
        assert await store.is_revoked(query("j7"))
    assert store.revoked_locally(query("j7")) is True
    assert store.revoked_locally(query("j8")) is (None if isinstance(store, RedisRevocations) else False)


async def test_keys_in_use_are_refreshed_in_the_background_in_one_mget(redis_server: tuple[Proc, int]) -> None:
    _proc, port = redis_server
    store = RedisRevocations(f"redis://127.0.0.1:{port}/0", local_ttl=0.4)
    await store.start()
    try:
        await wait_subscribed(store)
        queries = [query(f"r{n}", subject=f"user{n}") for n in range(20)]
        for q in queries:
            assert not await store.is_revoked(q)
        before = await command_calls(port, "mget")
        writer = aioredis.Redis(port=port)
        started = time.monotonic()
        while time.monotonic() - started < 1.6:
            # Four lifetimes of the local cache: the request path never has to wait for Redis.
            assert all(store.revoked_locally(q) is False for q in queries)
            await asyncio.sleep(0.01)
        # 20 tokens (41 keys) kept fresh for 1.6 s: a few batched MGETs, not one per token per refresh.
        assert await command_calls(port, "mget") - before <= 12
        # Written behind the store's back (no publish): the refresh still sees it within local_ttl.
        await writer.set(token_key(ISS, "r3"), "1", ex=60)
        await writer.aclose()
        seen = time.monotonic()
        while not store.revoked_locally(queries[3]):
            assert time.monotonic() - seen < 1.0, "a refreshed key missed a revocation for longer than local_ttl"
            await asyncio.sleep(0.01)
    finally:
        await store.close()


async def test_checks_of_one_token_that_miss_together_share_one_mget(redis_server: tuple[Proc, int]) -> None:
    _proc, port = redis_server
    store = RedisRevocations(f"redis://127.0.0.1:{port}/0")
    await store.start()
    try:
        await wait_subscribed(store)
        await store.revoke_token(ISS, "j3", time.time() + 60)
        before = await command_calls(port, "mget")
        answers = await asyncio.gather(*(store.is_revoked(query("j3")) for _ in range(20)),
                                       *(store.is_revoked(query("j4")) for _ in range(20)))
        assert answers == [True] * 20 + [False] * 20
        assert await command_calls(port, "mget") == before + 2
    finally:
        await store.close()


async def test_a_shared_mget_that_fails_fails_every_check_waiting_for_it() -> None:
    store = RedisRevocations(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    await store.start()
    try:
        results = await asyncio.gather(*(store.is_revoked(query()) for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, BackendUnavailable) for r in results), results
    finally:
        await store.close()


async def test_a_short_pause_keeps_the_cache_warm_and_a_long_one_stops_the_refresh(
        redis_server: tuple[Proc, int]) -> None:
    _proc, port = redis_server
    store = RedisRevocations(f"redis://127.0.0.1:{port}/0", local_ttl=0.2, keep_warm=1.0)
    await store.start()
    try:
        await wait_subscribed(store)
        assert not await store.is_revoked(query("w1"))
        assert store.revoked_locally(query("w1")) is False  # read from the local cache: now in use
        await asyncio.sleep(0.6)  # three lifetimes of the local cache without a check
        assert store.revoked_locally(query("w1")) is False
        await asyncio.sleep(2.0)  # past keep_warm: no longer refreshed, so expired
        assert store.revoked_locally(query("w1")) is None
        idle = await command_calls(port, "mget")
        await asyncio.sleep(0.5)
        assert await command_calls(port, "mget") == idle
    finally:
        await store.close()


class Monotonic:
    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


async def test_a_remembered_verdict_is_not_used_past_its_oldest_key(redis_server: tuple[Proc, int]) -> None:
    _proc, port = redis_server
    clock = Monotonic()
    store = RedisRevocations(f"redis://127.0.0.1:{port}/0", local_ttl=1.0, monotonic=clock)
    await store.start()
    try:
        await wait_subscribed(store)
        q = query("m1")
        assert not await store.is_revoked(q)
        assert store.revoked_locally(q) is False
        assert store.revoked_locally(q) is False   # the remembered verdict
        clock.now += 1.5  # no refresh ran meanwhile: every key of q is older than local_ttl
        assert store.revoked_locally(q) is None
    finally:
        await store.close()


async def test_a_remembered_verdict_is_dropped_with_the_subscription() -> None:
    port = free_port()
    proc, _ = start_redis(port)
    store = RedisRevocations(f"redis://127.0.0.1:{port}/0", timeout=0.2, local_ttl=60.0)
    await store.start()
    try:
        await wait_subscribed(store)
        q = query("m2")
        assert not await store.is_revoked(q)
        assert store.revoked_locally(q) is False
        proc.kill()
        deadline = time.monotonic() + 3
        while store.revoked_locally(q) is not None:
            assert time.monotonic() < deadline, "a verdict outlived the subscription that kept it current"
            await asyncio.sleep(0.02)
    finally:
        proc.stop()
        await store.close()


async def test_a_remembered_verdict_follows_each_published_revocation(
        replicas: tuple[RedisRevocations, RedisRevocations]) -> None:
    writer, reader = replicas
    q = query("m3", subject="carol")
    assert not await reader.is_revoked(q)
    assert reader.revoked_locally(q) is False
    await writer.revoke_subject("acme", "carol", time.time())
    deadline = time.monotonic() + 1
    while not reader.revoked_locally(q):
        assert time.monotonic() < deadline, "a remembered verdict hid a subject revocation"
        await asyncio.sleep(0.01)


def test_revocation_subscribed_is_absent_with_the_memory_store_and_exposed_with_redis() -> None:
    """An unset gauge would be exposed as 0 and page whoever runs without Redis: a fresh process shows
    the metric only once a Redis store exists."""
    script = (
        "from prometheus_client import generate_latest\n"
        "from extauthz.app import ExtAuthzSettings, make_store\n"
        "make_store(ExtAuthzSettings())\n"
        "print('memory:', b'revocation_subscribed' in generate_latest())\n"
        "make_store(ExtAuthzSettings(redis_url='redis://127.0.0.1:1/0'))\n"
        "print('redis:', b'revocation_subscribed' in generate_latest())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split("\n")[:2] == ["memory: False", "redis: True"], done.stderr

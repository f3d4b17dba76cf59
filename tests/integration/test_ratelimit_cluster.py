"""The Redis Cluster store on a 3-node cluster started by the test."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from redis.crc import key_slot

from pavilion.errors import BackendUnavailable
from ratelimit.redis_store import RedisClusterStore, redis_key
from ratelimit.store import Check
from tests.integration.ratelimit_procs import redis_cluster, start_ratelimit
from tests.procs import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ports() -> Iterator[list[int]]:
    with redis_cluster(3) as ports:
        yield ports


async def test_counts_on_a_three_node_cluster_with_many_descriptors_per_request(ports: list[int]) -> None:
    store = RedisClusterStore.from_hosts(f"127.0.0.1:{ports[0]}", timeout=0.5)
    await store.start()
    try:
        checks = [Check(f"edge|client=c{i}|0.fixed_window.3600", "fixed_window", 3, 3600) for i in range(12)]
        checks.append(Check("edge|client=c0|1.token_bucket.60", "token_bucket", 2, 60))
        checks.append(Check("edge|client=c1|1.sliding_window.3600", "sliding_window", 2, 3600))
        slots = {key_slot(redis_key(c).encode()) for c in checks}
        assert len(slots) > 3  # the keys really land on several slots (and so several nodes)
        seen = []
        for _ in range(4):
            seen.append(await store.apply(checks))
        fixed = [[o.used for o in outcomes[:12]] for outcomes in seen]
        assert fixed == [[n] * 12 for n in (1, 2, 3, 4)]
        assert [outcomes[11].allowed for outcomes in seen] == [True, True, True, False]
        assert [outcomes[12].allowed for outcomes in seen] == [True, True, False, False]
        assert [outcomes[13].allowed for outcomes in seen] == [True, True, False, False]
        # The same counter reached alone, in a request of its own, is the same counter.
        alone = await store.apply([checks[5]])
        assert alone[0].used == 5
    finally:
        await store.close()


async def test_a_cluster_that_wants_a_password_gets_it_on_every_node() -> None:
    with redis_cluster(3, password="hunter2") as secured:
        store = RedisClusterStore.from_hosts(f"redis://:hunter2@127.0.0.1:{secured[0]}", timeout=0.5)
        wrong = RedisClusterStore.from_hosts(f"redis://:nope@127.0.0.1:{secured[0]}", timeout=0.5)
        await store.start()
        try:
            checks = [Check(f"edge|client=s{i}|0.fixed_window.3600", "fixed_window", 3, 3600) for i in range(12)]
            assert len({store._slots[key_slot(redis_key(c).encode())] for c in checks if store._slots}) == 3
            assert [o.used for o in await store.apply(checks)] == [1] * 12  # every node took AUTH
            with pytest.raises(BackendUnavailable) as refused:
                await wrong.apply(checks)
            assert "hunter2" not in str(refused.value) and "nope" not in str(refused.value)
        finally:
            await store.close()
            await wrong.close()


async def test_a_stale_slot_map_is_corrected_by_moved(ports: list[int]) -> None:
    store = RedisClusterStore.from_hosts(",".join(f"127.0.0.1:{p}" for p in ports), timeout=0.5)
    await store.start()
    try:
        check = Check("edge|client=moved|0.fixed_window.3600", "fixed_window", 10, 3600)
        assert (await store.apply([check]))[0].used == 1
        slot = key_slot(redis_key(check).encode())
        owner = store._slots[slot] if store._slots else ""
        wrong = next(f"127.0.0.1:{p}" for p in ports if f"127.0.0.1:{p}" != owner)
        store._slots = [wrong] * len(store._slots or [])  # as if every slot had moved
        assert (await store.apply([check]))[0].used == 2  # sent on to the owner named by MOVED
        for _ in range(100):  # and the map is reloaded in the background
            if store._slots is not None and store._slots[slot] == owner:
                break
            await asyncio.sleep(0.02)
        assert store._slots is not None and store._slots[slot] == owner
    finally:
        await store.close()


def test_the_service_on_a_cluster_with_several_descriptors_per_request(tmp_path: Path,
                                                                      ports: list[int]) -> None:
    config = tmp_path / "ratelimit.yaml"
    config.write_text("domain: c\ndescriptors:\n"
                      "  - key: user\n    rate_limit: {unit: hour, requests_per_unit: 2}\n"
                      "  - key: path\n    rate_limit: {unit: hour, requests_per_unit: 3, algorithm: sliding_window}\n"
                      "  - key: ip\n    rate_limit: {unit: hour, requests_per_unit: 9, algorithm: token_bucket}\n")
    service, port, _admin = start_ratelimit(
        config, extra=["--redis-cluster", ",".join(f"127.0.0.1:{p}" for p in ports), "--redis-timeout-ms", "500"])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)

            def ask(user: str) -> list[tuple[int, int]]:
                request = rls_pb2.RateLimitRequest(domain="c", descriptors=[
                    ratelimit_pb2.RateLimitDescriptor(entries=[ratelimit_pb2.RateLimitDescriptor.Entry(
                        key=key, value=value)]) for key, value in (("user", user), ("path", "/x"), ("ip", "1"))])
                response = stub.ShouldRateLimit(request, timeout=5)
                return [(s.code, s.limit_remaining) for s in response.statuses]

            ok, over = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT
            assert ask("u1") == [(ok, 1), (ok, 2), (ok, 8)]
            assert ask("u1") == [(ok, 0), (ok, 1), (ok, 7)]
            assert ask("u1") == [(over, 0), (ok, 0), (ok, 6)]
            assert ask("u2") == [(ok, 1), (over, 0), (ok, 5)]
        assert "ratelimit_internal_error" not in service.output()
        assert "redis_breaker" not in service.output()
    finally:
        service.stop()


async def test_an_unreachable_cluster_fails_fast_and_is_found_later(ports: list[int]) -> None:
    dead = free_port()
    store = RedisClusterStore.from_hosts(f"127.0.0.1:{dead},127.0.0.1:{ports[1]}", timeout=0.5)
    check = Check("edge|client=late|0.fixed_window.3600", "fixed_window", 10, 3600)
    try:
        store._seeds = [("127.0.0.1", dead)]  # only the dead seed at first
        await store.start()  # logs, does not raise
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await store.apply([check])
        assert time.monotonic() - started < 1.0  # no wait on the slot map
        store._seeds.append(("127.0.0.1", ports[1]))  # the cluster becomes reachable
        await asyncio.sleep(1.1)  # past the once-a-second limit on slot map reloads
        with contextlib.suppress(BackendUnavailable):
            await store.apply([check])  # asks for the map in the background
        for _ in range(100):
            with contextlib.suppress(BackendUnavailable):
                assert (await store.apply([check]))[0].used >= 1
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the cluster was never found")
    finally:
        await store.close()

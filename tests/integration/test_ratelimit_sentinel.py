"""`pavilion ratelimit --redis redis+sentinel://...`: counters on the master a sentinel names, with its
password, and on the promoted replica after the master dies; /status says which master it uses. And
RedisSentinelStore with a sentinel that wants its own password."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from pavilion.errors import BackendUnavailable
from ratelimit.redis_sentinel import RedisSentinelStore
from ratelimit.store import Check
from tests.integration.ratelimit_procs import start_ratelimit
from tests.sentinel_procs import MASTER_NAME, sentinel_group

pytestmark = pytest.mark.integration

OK, OVER = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT
CONFIG = "domain: ha\ndescriptors:\n  - key: client\n    rate_limit: {unit: hour, requests_per_unit: 5}\n"
REQUEST = rls_pb2.RateLimitRequest(domain="ha", descriptors=[ratelimit_pb2.RateLimitDescriptor(
    entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="client", value="alice")])])


def store(admin_port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/status", timeout=5) as response:
        shown: dict[str, object] = json.loads(response.read())["store"]
        return shown


def test_counters_follow_the_master_through_a_failover(tmp_path: Path) -> None:
    config = tmp_path / "ha.yaml"
    config.write_text(CONFIG)
    with sentinel_group(password="s3cret-pw") as group:
        service, port, admin = start_ratelimit(config, extra=["--redis", group.url(), "--redis-timeout-ms", "200"])
        try:
            shown = store(admin)
            assert shown["kind"] == "redis-sentinel" and shown["master"] == f"127.0.0.1:{group.master_port}"
            assert shown["auth"] is True and "s3cret-pw" not in json.dumps(shown)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = rls_pb2_grpc.RateLimitServiceStub(channel)
                for remaining in (4, 3, 2):
                    response = stub.ShouldRateLimit(REQUEST, timeout=5)
                    assert response.statuses[0].limit_remaining == remaining
                # The counter is on the master and has reached the replica: then the master dies.
                assert group.cli(group.master_port, "KEYS", "rl:*")
                end = time.monotonic() + 10
                while not group.replicated():
                    assert time.monotonic() < end, "the replica never caught up"
                    time.sleep(0.05)
                group.master.stop()

                # Until the sentinel has promoted the replica and the breaker's next probe passes, answers
                # come from on_backend_error (allow: OK, remaining = the limit, nothing counted); then the
                # service, having asked the sentinel again by itself, counts on the new master from where
                # the old one was.
                end = time.monotonic() + 30
                while True:
                    response = stub.ShouldRateLimit(REQUEST, timeout=5)
                    if response.statuses[0].limit_remaining != 5:
                        break
                    assert response.overall_code == OK
                    assert time.monotonic() < end, f"never counted again: {store(admin)}"
                    time.sleep(0.1)
                assert store(admin)["master"] == f"127.0.0.1:{group.replica_port}"
                codes = [(response.overall_code, response.statuses[0].limit_remaining)]
                for _ in range(2):
                    response = stub.ShouldRateLimit(REQUEST, timeout=5)
                    codes.append((response.overall_code, response.statuses[0].limit_remaining))
                assert codes == [(OK, 1), (OK, 0), (OVER, 0)]
        finally:
            service.stop()


# A day's window: the tests count across a failover (seconds), and a minute's window rolling over in
# between started the count again (one run in about twenty).
CHECK = Check("t|k=v|0.fixed_window.86400", "fixed_window", 10, 86400)


async def test_the_sentinel_password_opens_the_sentinel_and_the_master_gets_its_own() -> None:
    with sentinel_group(password="master-pw", sentinel_password="sentinel-pw") as group:
        store = RedisSentinelStore.from_url(group.url(), timeout=1.0)
        await store.start()
        try:
            shown = store.location()
            assert shown["master"] == f"127.0.0.1:{group.master_port}" and shown["master_name"] == MASTER_NAME
            assert shown["auth"] is True and shown["sentinel_auth"] is True
            assert "master-pw" not in json.dumps(shown) and "sentinel-pw" not in json.dumps(shown)
            [outcome] = await store.apply([CHECK])
            assert (outcome.allowed, outcome.remaining) == (True, 9)
        finally:
            await store.close()

        wrong = RedisSentinelStore.from_url(group.url().replace("sentinel-pw", "nope"), timeout=1.0)
        await wrong.start()  # logged, not raised: the service starts and answers by on_backend_error
        try:
            assert wrong.location()["master"] is None
            with pytest.raises(BackendUnavailable, match="no master known yet"):
                await wrong.apply([CHECK])
        finally:
            await wrong.close()


async def test_a_master_demoted_while_it_still_answers_is_left_without_a_request_failing() -> None:
    """SENTINEL FAILOVER promotes the replica while the old master still answers (as would a partition
    that cuts it from the sentinels only): no error tells the store, its question every second does."""
    with sentinel_group() as group:
        store = RedisSentinelStore.from_url(group.url(), timeout=1.0)
        await store.start()
        try:
            [outcome] = await store.apply([CHECK])
            assert outcome.remaining == 9 and store.location()["master"] == f"127.0.0.1:{group.master_port}"
            end = time.monotonic() + 10
            while not group.replicated():
                assert time.monotonic() < end, "the replica never caught up"
                await asyncio.sleep(0.05)
            assert group.cli(group.sentinel_port, "SENTINEL", "FAILOVER", MASTER_NAME) == "OK"
            end = time.monotonic() + 30
            while store.location()["master"] != f"127.0.0.1:{group.replica_port}":
                assert time.monotonic() < end, "the store stayed on the old master"
                await asyncio.sleep(0.1)
            [outcome] = await store.apply([CHECK])
            assert outcome.remaining == 8  # on the new master, from the count it had replicated
        finally:
            await store.close()

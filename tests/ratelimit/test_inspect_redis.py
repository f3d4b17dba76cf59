"""GET /limits over a real redis-server: what requests consumed shows, checking consumes nothing (every
key and value in Redis unchanged after 50 calls), and a stopped Redis shows as the breaker's fallback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pavilion.admin import AdminServer
from ratelimit.app import store_status
from ratelimit.breaker import CircuitBreaker
from ratelimit.config import parse_config_text
from ratelimit.inspect import routes as inspect_routes
from ratelimit.limiter import Descriptor, Limiter
from ratelimit.redis_store import RedisStore
from ratelimit.resp import RespConnection
from tests.procs import Proc, start_redis

pytestmark = pytest.mark.integration

# Hour and day windows: a test run never straddles a window's end in practice, and each algorithm is here.
CONFIG = """\
domain: pavilion
descriptors:
  - key: route
    value: accounts
    descriptors:
      - key: tenant
        rate_limits:
          - {unit: hour, requests_per_unit: 5, name: fixed}
          - {unit: hour, requests_per_unit: 8, algorithm: sliding_window, name: sliding}
          - {unit: day, requests_per_unit: 24, algorithm: token_bucket, burst: 10, name: bucket}
        on_backend_error: deny
"""
ACME = Descriptor((("route", "accounts"), ("tenant", "acme")))


class Stack:
    def __init__(self, redis: Proc, redis_port: int, limiter: Limiter, redis_store: RedisStore,
                 breaker: CircuitBreaker, address: str) -> None:
        self.redis, self.redis_port, self.limiter = redis, redis_port, limiter
        self.redis_store, self.breaker, self.address = redis_store, breaker, address

    async def limits(self, session: aiohttp.ClientSession, *descriptors: str) -> dict[str, Any]:
        params = [("domain", "pavilion"), *(("descriptor", text) for text in descriptors)]
        async with session.get(f"http://{self.address}/limits", params=params) as reply:
            assert reply.status == 200, await reply.text()
            return dict(await reply.json())


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    redis, port = start_redis()
    redis_store = RedisStore.from_url(f"redis://127.0.0.1:{port}", timeout=1.0)
    breaker = CircuitBreaker(redis_store, failures_to_open=1, cool_down=60)
    limiter = Limiter(parse_config_text(CONFIG, "limits.yaml"), breaker)
    admin = AdminServer("127.0.0.1", 0, routes=inspect_routes(
        limiter, lambda: store_status(redis_store, limiter, breaker)))
    try:
        await redis_store.start()
        admin_port = await admin.start()
        yield Stack(redis, port, limiter, redis_store, breaker, f"127.0.0.1:{admin_port}")
    finally:
        await admin.stop()
        await breaker.close()
        redis.stop()


async def redis_contents(port: int) -> dict[bytes, Any]:
    """Every key in Redis and its value."""
    conn = await RespConnection.open("127.0.0.1", port, timeout=2.0, connect_timeout=2.0)
    try:
        keys = await conn.call("KEYS", "*")
        return {key: await conn.call("GET", key) for key in sorted(keys)}
    finally:
        conn.close()


async def test_consumption_shows_and_fifty_inspections_change_nothing_in_redis(stack: Stack) -> None:
    for _ in range(3):
        assert (await stack.limiter.should_rate_limit("pavilion", [ACME])).code.name == "OK"
    before = await redis_contents(stack.redis_port)
    assert len(before) == 3  # one key per algorithm: fixed and sliding window counters, the bucket's TAT
    async with aiohttp.ClientSession() as session:
        for _ in range(50):
            answer = await stack.limits(session, "route=accounts,tenant=acme")
    assert await redis_contents(stack.redis_port) == before
    assert answer["backend"] == {"answered": True}
    assert answer["store"]["kind"] == "redis" and answer["store"]["breaker"] == "closed"
    shown = answer["descriptors"][0]
    by_name = {limit["name"]: limit for limit in shown["limits"]}
    assert {name: (limit["used"], limit["remaining"]) for name, limit in by_name.items()} == \
        {"fixed": (3, 2), "sliding": (3, 5), "bucket": (3, 7)}
    assert all(limit["answered_by"] == "store" for limit in by_name.values())
    assert (shown["code"], shown["limit_remaining"]) == ("OK", 2)
    assert 0 < shown["duration_until_reset"] <= 3600
    # The two requests the fixed window has left are still there: the checks took none.
    codes = [(await stack.limiter.should_rate_limit("pavilion", [ACME])).code.name for _ in range(3)]
    assert codes == ["OK", "OK", "OVER_LIMIT"]
    async with aiohttp.ClientSession() as session:
        over = (await stack.limits(session, "route=accounts,tenant=acme"))["descriptors"][0]
    assert (over["code"], over["limit_remaining"], over["current_limit"]["name"]) == ("OVER_LIMIT", 0, "fixed")


async def test_a_stopped_redis_shows_the_fallback_then_the_open_breaker(stack: Stack) -> None:
    stack.redis.stop()
    async with aiohttp.ClientSession() as session:
        first = await stack.limits(session, "route=accounts,tenant=acme")
        second = await stack.limits(session, "route=accounts,tenant=acme")
    assert first["backend"]["answered"] is False and first["backend"]["fallbacks"] == ["deny"]
    assert first["descriptors"][0]["code"] == "OVER_LIMIT"
    assert first["descriptors"][0]["limits"][0]["answered_by"] == "fallback_deny"
    assert second["backend"]["error"] == "redis unavailable: circuit breaker open"
    assert second["store"]["breaker"] == "open" and second["store"]["serving"] is False

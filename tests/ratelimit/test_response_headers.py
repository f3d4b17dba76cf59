"""`--response-headers`: envoyproxy/ratelimit's three headers (LIMIT_RESPONSE_HEADERS_ENABLED) about
the descriptor closest to its limit or the last one over it, the draft's fields, or none."""

from __future__ import annotations

import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2

from pavilion.errors import BackendUnavailable
from ratelimit.answer import header_style
from ratelimit.clock import ManualClock
from ratelimit.config import parse_config_text
from ratelimit.headers import ENVOYPROXY_NAMES, HeaderNames, envoyproxy_headers
from ratelimit.limiter import Descriptor, Limiter
from ratelimit.memory_store import MemoryStore
from ratelimit.service import RateLimitService

CONFIG = """
domain: d
descriptors:
  - key: a
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: b
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: c
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: free
    rate_limit: {unlimited: true}
  - key: denied
    on_backend_error: deny
    rate_limit: {unit: minute, requests_per_unit: 9}
"""


def limiter(store: object | None = None) -> Limiter:
    clock = ManualClock(start=1_700_000_000.0)  # 20 s into a minute, 800 s into an hour
    return Limiter(parse_config_text(CONFIG), store or MemoryStore(clock), clock=clock)  # type: ignore[arg-type]


async def headers(limits: Limiter, *keys: str, names: HeaderNames = ENVOYPROXY_NAMES) -> dict[str, str]:
    decision = await limits.should_rate_limit("d", [Descriptor(((key, "x"),)) for key in keys])
    return dict(envoyproxy_headers(decision, names))


async def test_the_descriptor_with_the_least_remaining_is_reported() -> None:
    limits = limiter()
    assert await headers(limits, "a", "b") == {"RateLimit-Limit": "3", "RateLimit-Remaining": "2",
                                              "RateLimit-Reset": "2800"}
    assert await headers(limits, "free") == {}  # unlimited: nothing counted, nothing said


async def test_the_last_descriptor_over_its_limit_wins() -> None:
    limits = limiter()
    await headers(limits, "c")
    await headers(limits, "shadow")
    # c is over (remaining 0, resets in 1 s); shadow is over but shadowed: OK with 0 remaining; b has 2 left.
    assert await headers(limits, "c", "b") == {"RateLimit-Limit": "1", "RateLimit-Remaining": "0",
                                              "RateLimit-Reset": "1"}
    assert (await headers(limits, "shadow", "b"))["RateLimit-Limit"] == "1"  # the least remaining, 0
    assert (await headers(limits, "b", "c"))["RateLimit-Limit"] == "1"  # over beats a smaller remaining


async def test_names_are_configurable_and_a_fallback_answer_is_left_out() -> None:
    class Down:
        async def apply(self, checks: object) -> object:
            raise BackendUnavailable("redis", "down")

        async def close(self) -> None:
            pass

    names = HeaderNames("X-Limit", "X-Left", "X-Reset")
    assert await headers(limiter(), "a", names=names) == {"X-Limit": "5", "X-Left": "4", "X-Reset": "40"}
    assert await headers(limiter(Down()), "denied", "a") == {}  # no real counts behind either


@pytest.mark.parametrize(("style", "expected"), [
    ("draft", {"RateLimit-Policy", "RateLimit"}),
    ("envoyproxy", {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"}),
    ("none", set()),
])
async def test_each_style_through_the_servicer(style: str, expected: set[str]) -> None:
    service = RateLimitService(limiter(), headers=header_style(style))
    request = rls_pb2.RateLimitRequest(domain="d", descriptors=[ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="a", value="x")])])
    response = await service.ShouldRateLimit(request.SerializeToString(), None)  # type: ignore[arg-type]
    assert {header.key for header in response.response_headers_to_add} == expected


def test_an_unknown_style_is_refused() -> None:
    with pytest.raises(ValueError, match="give one of draft, envoyproxy, none"):
        header_style("x-ratelimit")

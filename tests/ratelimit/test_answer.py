"""Answers built from a plan's shared parts: each request's statuses and headers are its own, whatever
the plan's earlier requests said, and the limit that decided is the one reported."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.service.ratelimit.v3 import rls_pb2

from pavilion.errors import BackendUnavailable
from ratelimit.answer import plan_answer, to_response
from ratelimit.config import parse_config_text
from ratelimit.limiter import Descriptor, Limiter
from ratelimit.store import Check, Outcome

OK, OVER = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT

CONFIG = """
domain: svc
descriptors:
  - key: multi
    rate_limits:
      - {unit: second, requests_per_unit: 2, name: burst}
      - {unit: day, requests_per_unit: 100, name: daily}
  - key: client
    # sliding: an over answer is not remembered (known_over is for fixed windows), so both requests ask the store
    rate_limit: {unit: minute, requests_per_unit: 3, name: per-client, algorithm: sliding_window}
    on_backend_error: deny
  - key: free
    rate_limit: {unlimited: true}
"""


class ScriptedStore:
    """Answers each apply with the next list of outcomes, or raises when the list is None."""

    def __init__(self, *answers: list[Outcome] | None) -> None:
        self.answers = list(answers)

    async def apply(self, checks: Sequence[Check]) -> list[Outcome]:
        answer = self.answers.pop(0)
        if answer is None:
            raise BackendUnavailable("redis", "down")
        assert len(answer) == len(checks)
        return answer

    async def close(self) -> None:
        pass


def headers(response: rls_pb2.RateLimitResponse) -> dict[str, str]:
    return {h.key: h.value for h in response.response_headers_to_add}


async def test_each_request_gets_its_own_statuses_from_one_plan() -> None:
    store = ScriptedStore(
        # burst 1 left, daily 0 left: the daily limit decides (least remaining); client over.
        [Outcome(True, 1, 0.5, 1), Outcome(True, 0, 3600.0, 100), Outcome(False, 0, 20.0, 3)],
        # then everything within its first limit: the shared statuses as they are.
        [Outcome(True, 1, 0.25, 1), Outcome(True, 50, 3600.0, 50), Outcome(True, 2, 20.0, 1)],
    )
    limiter = Limiter(parse_config_text(CONFIG), store)
    answer = plan_answer(limiter.plan("svc", [Descriptor((("multi", "x"),)), Descriptor((("client", "a"),)),
                                              Descriptor((("free", "y"),))]))

    first = to_response(await limiter.decide(answer.plan), answer)
    multi, client, free = first.statuses
    assert first.overall_code == OVER
    assert (multi.code, multi.current_limit.name, multi.limit_remaining) == (OK, "daily", 0)
    assert multi.duration_until_reset.seconds == 3600
    assert (client.code, client.current_limit.name, client.duration_until_reset.seconds) == (OVER, "per-client", 20)
    assert (free.code, free.limit_remaining, free.HasField("current_limit")) == (OK, 2**32 - 1, False)
    assert headers(first)["Retry-After"] == "20"

    second = to_response(await limiter.decide(answer.plan), answer)
    multi, client, free = second.statuses
    assert second.overall_code == OK
    assert (multi.code, multi.current_limit.name, multi.limit_remaining) == (OK, "burst", 1)
    assert (multi.duration_until_reset.seconds, multi.duration_until_reset.nanos) == (0, 250_000_000)
    assert (client.code, client.limit_remaining, client.current_limit.name) == (OK, 2, "per-client")
    assert free.limit_remaining == 2**32 - 1
    assert headers(second) == {"RateLimit-Policy": '"burst";q=2;w=1, "daily";q=100;w=86400, "per-client";q=3;w=60',
                               "RateLimit": '"burst";r=1;t=1, "daily";r=50;t=3600, "per-client";r=2;t=20'}
    # The plan's shared statuses were copied, never written.
    assert all(not status.limit_remaining and not status.HasField("duration_until_reset")
               for status in answer.template.statuses[:2])


async def test_a_fallback_answer_leaves_its_descriptors_out_of_the_headers() -> None:
    limiter = Limiter(parse_config_text(CONFIG), ScriptedStore(None))
    answer = plan_answer(limiter.plan("svc", [Descriptor((("multi", "x"),)), Descriptor((("client", "a"),))]))
    response = to_response(await limiter.decide(answer.plan), answer)
    # multi: on_backend_error allow (the default); client: deny. Neither has real counts behind it.
    assert [status.code for status in response.statuses] == [OK, OVER]
    assert response.overall_code == OVER
    assert set(headers(response)) == {"Retry-After"}

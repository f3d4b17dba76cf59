"""envoyproxy/ratelimit's per-descriptor `share_threshold` (every value a wildcard matches counts on one
counter) and `value_to_metric` / `detailed_metric` (request values in the metric label), through the
limiter and the servicer."""

from __future__ import annotations

from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from prometheus_client import REGISTRY

from ratelimit.clock import ManualClock
from ratelimit.config import parse_config_text
from ratelimit.limiter import Code, Descriptor, Limiter
from ratelimit.memory_store import MemoryStore
from ratelimit.metrics import RuleMetrics
from ratelimit.service import RateLimitService

CONFIG = """
domain: files
descriptors:
  - key: path
    value: reports/*
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 2}
    descriptors:
      - key: user
        value_to_metric: true
        rate_limit: {unit: minute, requests_per_unit: 3}
  - key: path
    value: images/*
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: tenant
    value_to_metric: true
    descriptors:
      - key: plan
        value: gold
        detailed_metric: true
        rate_limit: {unit: minute, requests_per_unit: 100}
      - key: plan
        rate_limit: {unit: minute, requests_per_unit: 10}
"""


def test_share_threshold_and_value_to_metric_apply_to_their_level_and_below() -> None:
    rules = {rule.stats_key: (rule.share_threshold, rule.value_to_metric) for rule in parse_config_text(CONFIG).rules}
    assert rules == {
        "files.path_reports/*": ((0,), ()),
        "files.path_reports/*.user": ((0,), (1,)),
        "files.path_images/*": ((), ()),
        "files.tenant.plan_gold": ((), (0,)),
        "files.tenant.plan": ((), (0,)),
    }


def limiter() -> Limiter:
    clock = ManualClock(start=1_700_000_000.0)
    return Limiter(parse_config_text(CONFIG), MemoryStore(clock), clock=clock)


async def codes(limiter: Limiter, *entries: tuple[str, str]) -> Code:
    decision = await limiter.should_rate_limit("files", [Descriptor(tuple(entries))])
    return decision.statuses[0].code


async def test_values_under_a_shared_wildcard_count_on_one_counter() -> None:
    limits = limiter()
    assert await codes(limits, ("path", "reports/a.pdf")) is Code.OK
    assert await codes(limits, ("path", "reports/b.csv")) is Code.OK
    assert await codes(limits, ("path", "reports/c.txt")) is Code.OVER_LIMIT  # the third value, same counter


async def test_values_under_a_wildcard_without_share_threshold_count_apart() -> None:
    limits = limiter()
    for name in ("a.png", "b.png", "c.png"):
        assert await codes(limits, ("path", f"images/{name}")) is Code.OK
        assert await codes(limits, ("path", f"images/{name}")) is Code.OK
    assert await codes(limits, ("path", "images/a.png")) is Code.OVER_LIMIT


async def test_a_shared_level_stays_shared_below_it_and_the_other_levels_do_not() -> None:
    limits = limiter()
    for name in ("a", "b", "c"):  # one user over three files of the shared wildcard: one counter, limit 3
        assert await codes(limits, ("path", f"reports/{name}"), ("user", "ann")) is Code.OK
    assert await codes(limits, ("path", "reports/d"), ("user", "ann")) is Code.OVER_LIMIT
    assert await codes(limits, ("path", "reports/a"), ("user", "bob")) is Code.OK  # another user, another counter


def descriptor(*entries: tuple[str, str]) -> ratelimit_pb2.RateLimitDescriptor:
    return ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries])


def hits(rule: str) -> float:
    return REGISTRY.get_sample_value("pavilion_ratelimit_total_hits_total", {"domain": "files", "rule": rule}) or 0.0


async def test_metric_labels_hold_request_values_only_where_the_config_says() -> None:
    service = RateLimitService(limiter(), RuleMetrics())
    expected = {
        # share_threshold: the wildcard, whatever the file; value_to_metric on user: its value
        (("path", "reports/a.pdf"), ("user", "ann")): "files.path_reports/*.user_ann",
        (("path", "reports/b.csv"),): "files.path_reports/*",
        # no value_to_metric under images/*: the wildcard
        (("path", "images/x.png"),): "files.path_images/*",
        # value_to_metric on tenant, not on the key-only plan below it
        (("tenant", "acme"), ("plan", "silver")): "files.tenant_acme.plan",
        # detailed_metric: every value, percent-encoded as in the counter key
        (("tenant", "a b"), ("plan", "gold")): "files.tenant_a%20b.plan_gold",
    }
    before = {label: hits(label) for label in expected.values()}
    for entries in expected:
        request = rls_pb2.RateLimitRequest(domain="files", descriptors=[descriptor(*entries)])
        for _ in range(2):  # the second one from the kept plan
            response = await service.ShouldRateLimit(request.SerializeToString(), None)  # type: ignore[arg-type]
            assert response.overall_code == rls_pb2.RateLimitResponse.OK
    service.metrics.flush()
    assert {label: hits(label) - before[label] for label in expected.values()} == dict.fromkeys(expected.values(), 2)

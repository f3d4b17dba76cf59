"""GET /limits (ratelimit/inspect.py) and `pavilion ratelimit-inspect` over the memory store: the query,
the answer (rule, counters, fallbacks), that nothing is consumed or counted in the per-rule metrics,
and the CLI's URL, table and errors."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from prometheus_client import REGISTRY

from pavilion.admin import AdminServer
from pavilion.config_files import Source
from pavilion.errors import BackendUnavailable
from ratelimit.clock import ManualClock
from ratelimit.config import parse_config
from ratelimit.inspect import MAX_DESCRIPTORS, MAX_ENTRIES, BadQuery, Query, inspect, parse_descriptor, parse_query
from ratelimit.inspect import routes as inspect_routes
from ratelimit.inspect_cli import limits_url, render, run_inspect
from ratelimit.limiter import Descriptor, Limiter
from ratelimit.memory_store import MemoryStore
from ratelimit.metrics import RuleMetrics
from ratelimit.service import RateLimitService
from ratelimit.store import Check, Outcome

T0 = 1_699_999_200.25  # a quarter second into a minute window

CONFIG = """\
domain: pavilion
descriptors:
  - key: route
    value: accounts
    descriptors:
      - key: tenant
        rate_limit: {unit: minute, requests_per_unit: 5, name: per-tenant}
        on_backend_error: deny
  - key: api
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: bucket
    rate_limits:
      - {unit: second, requests_per_unit: 10, unit_multiplier: 30, algorithm: token_bucket, burst: 4, name: tb}
      - {unit: day, requests_per_unit: 1000, name: daily}
  - key: vip
    rate_limit: {unit: hour, requests_per_unit: 7, replaces: [{name: daily}]}
  - key: free
    rate_limit: {unlimited: true}
"""


def make(config: str = CONFIG, store: Any = None) -> tuple[Limiter, ManualClock]:
    clock = ManualClock(T0)
    rules = parse_config([Source("limits.yaml", config)])
    return Limiter(rules, store or MemoryStore(clock), clock=clock), clock


def q(*descriptors: str, domain: str = "pavilion") -> Query:
    return Query(domain, tuple(parse_descriptor(text) for text in descriptors))


async def consume(limiter: Limiter, times: int, *entries: tuple[str, str], domain: str = "pavilion") -> None:
    for _ in range(times):
        await limiter.should_rate_limit(domain, [Descriptor(tuple(entries))])


# -- the query -----------------------------------------------------------------------------------------

def test_a_descriptor_is_its_entries_in_order_a_key_alone_has_an_empty_value() -> None:
    assert parse_descriptor("route=accounts,tenant=acme") == (("route", "accounts"), ("tenant", "acme"))
    assert parse_descriptor("tenant") == (("tenant", ""),)
    assert parse_descriptor("q=a=b") == (("q", "a=b"),)  # split at the first `=` only
    assert parse_descriptor("k%3Dx=v%2Cw,n=%25") == (("k=x", "v,w"), ("n", "%"))


@pytest.mark.parametrize("text", ["", "=v", "a=1,,b=2", "x" * 1025 + "=v"])
def test_a_malformed_descriptor_names_the_parameter(text: str) -> None:
    with pytest.raises(BadQuery) as caught:
        parse_descriptor(text)
    assert caught.value.parameter == "descriptor"
    assert str(caught.value).startswith("descriptor: ")


def test_the_query_takes_one_descriptor_parameter_per_descriptor() -> None:
    query = parse_query([("domain", "d"), ("descriptor", "route=accounts"), ("descriptor", "tenant=acme")], ["d"])
    assert query == Query("d", ((("route", "accounts"),), (("tenant", "acme"),)))


@pytest.mark.parametrize(("pairs", "domains", "parameter", "words"), [
    ([("domain", "d")], ["d"], "descriptor", "missing"),
    ([("descriptor", "a=1"), ("hits", "3")], ["d"], "hits", "unknown parameter"),
    ([("domain", "d"), ("domain", "e"), ("descriptor", "a=1")], ["d", "e"], "domain", "twice"),
    ([("domain", ""), ("descriptor", "a=1")], ["d"], "domain", "empty"),
    ([("descriptor", "a=1")], ["d", "e"], "domain", "2 domains: d, e"),
    ([("descriptor", "a=1")] * (MAX_DESCRIPTORS + 1), ["d"], "descriptor", f"more than {MAX_DESCRIPTORS}"),
    ([("descriptor", ",".join(f"k{i}=v" for i in range(MAX_ENTRIES + 1)))], ["d"], "descriptor",
     f"at most {MAX_ENTRIES}"),
])
def test_a_bad_query_names_the_parameter(pairs: list[tuple[str, str]], domains: list[str], parameter: str,
                                         words: str) -> None:
    with pytest.raises(BadQuery) as caught:
        parse_query(pairs, domains)
    assert caught.value.parameter == parameter
    assert words in str(caught.value)


def test_the_bounds_themselves_are_accepted_and_one_domain_needs_no_naming() -> None:
    entries = ",".join(f"k{i}=v" for i in range(MAX_ENTRIES))
    query = parse_query([("descriptor", entries)] * MAX_DESCRIPTORS, ["only"])
    assert query.domain == "only" and len(query.descriptors) == MAX_DESCRIPTORS
    assert all(len(descriptor) == MAX_ENTRIES for descriptor in query.descriptors)


# -- the answer ----------------------------------------------------------------------------------------

async def test_a_request_s_consumption_shows_and_inspecting_consumes_nothing() -> None:
    limiter, _ = make()
    await consume(limiter, 2, ("route", "accounts"), ("tenant", "acme"))
    for _ in range(50):
        answer = await inspect(limiter, q("route=accounts,tenant=acme"))
    shown = answer["descriptors"][0]
    assert (shown["code"], shown["limit_remaining"], shown["state"]) == ("OK", 3, "within")
    assert shown["limits"][0]["used"] == 2 and shown["limits"][0]["answered_by"] == "store"
    # The three requests left are all admitted: the 50 checks took none of them.
    decisions = [await limiter.should_rate_limit("pavilion", [Descriptor((("route", "accounts"), ("tenant", "acme")))])
                 for _ in range(4)]
    assert [decision.code.name for decision in decisions] == ["OK", "OK", "OK", "OVER_LIMIT"]


async def test_an_exhausted_limit_is_over_with_nothing_remaining_and_the_reset() -> None:
    limiter, clock = make()
    await consume(limiter, 5, ("route", "accounts"), ("tenant", "acme"))
    answer = await inspect(limiter, q("route=accounts,tenant=acme", "route=accounts,tenant=other"))
    assert answer["overall_code"] == "OVER_LIMIT" and answer["backend"] == {"answered": True}
    acme, other = answer["descriptors"]
    assert (acme["code"], acme["limit_remaining"], acme["state"], acme["over"]) == ("OVER_LIMIT", 0, "over", True)
    assert acme["duration_until_reset"] == pytest.approx(59.75)
    assert acme["current_limit"]["name"] == "per-tenant"
    assert acme["limits"][0]["counter_key"] == "pavilion|route=accounts|tenant=acme|0.fixed_window.60"
    assert (other["code"], other["limit_remaining"]) == ("OK", 5)  # another tenant: another counter
    clock.advance(60)
    again = (await inspect(limiter, q("route=accounts,tenant=acme")))["descriptors"][0]
    assert (again["code"], again["limit_remaining"]) == ("OK", 5)  # the next window


async def test_the_matched_rule_is_shown_with_where_it_is_written() -> None:
    limiter, _ = make()
    answer = await inspect(limiter, q("route=accounts,tenant=acme", "bucket=b"))
    tenant, bucket = answer["descriptors"]
    assert tenant["rule"] == {
        "key_path": "route=accounts,tenant", "stats_key": "pavilion.route_accounts.tenant", "name": "per-tenant",
        "source": "limits.yaml:6:9", "unlimited": False, "shadow_mode": False, "replaces": [],
        "on_backend_error": "deny"}
    tb, daily = bucket["limits"]
    assert {key: tb[key] for key in ("name", "algorithm", "unit", "unit_multiplier", "requests_per_unit", "burst")} \
        == {"name": "tb", "algorithm": "token_bucket", "unit": "second", "unit_multiplier": 30,
            "requests_per_unit": 10, "burst": 4}
    assert (tb["remaining"], daily["remaining"]) == (4, 1000)
    assert bucket["limit_remaining"] == 4  # the least remaining decides
    vip = (await inspect(limiter, q("vip=v")))["descriptors"][0]
    assert vip["rule"]["replaces"] == ["daily"]


async def test_replaces_applies_across_the_descriptors_of_one_inspection_as_in_a_request() -> None:
    limiter, _ = make()
    alone = (await inspect(limiter, q("bucket=b")))["descriptors"][0]
    assert [limit.get("replaced", False) for limit in alone["limits"]] == [False, False]
    together = (await inspect(limiter, q("bucket=b", "vip=v")))["descriptors"][0]
    assert [limit.get("replaced", False) for limit in together["limits"]] == [False, True]


async def test_no_rule_unknown_domain_unlimited_and_shadow_mode() -> None:
    limiter, _ = make()
    answer = await inspect(limiter, q("nope=1", "free=x", "api=a"))
    nope, free, api = answer["descriptors"]
    assert (nope["rule"], nope["state"], nope["code"]) == (None, "no rule (unlimited)", "OK")
    assert (free["state"], free["unlimited"], free["limit_remaining"]) == ("unlimited", True, 2**32 - 1)
    await consume(limiter, 2, ("api", "a"))
    api = (await inspect(limiter, q("api=a")))["descriptors"][0]
    assert (api["code"], api["state"], api["shadowed"], api["limit_remaining"]) == \
        ("OK", "over (shadow mode)", True, 0)
    elsewhere = await inspect(limiter, q("route=accounts,tenant=acme", domain="other"))
    assert elsewhere["domain_known"] is False and elsewhere["descriptors"][0]["rule"] is None


async def test_global_shadow_mode_answers_ok_overall_and_says_so() -> None:
    clock = ManualClock(T0)
    limiter = Limiter(parse_config([Source("limits.yaml", CONFIG)]), MemoryStore(clock), clock=clock,
                      global_shadow_mode=True)
    await consume(limiter, 5, ("route", "accounts"), ("tenant", "acme"))
    answer = await inspect(limiter, q("route=accounts,tenant=acme"))
    assert (answer["overall_code"], answer["global_shadow_mode"], answer["global_shadowed"]) == ("OK", True, True)
    assert answer["descriptors"][0]["code"] == "OVER_LIMIT"
    assert "global shadow mode" in render({**answer, "store": {"kind": "memory"}})


async def test_a_fixed_window_found_over_is_answered_from_the_known_over_cache() -> None:
    limiter, _ = make()
    await consume(limiter, 6, ("route", "accounts"), ("tenant", "acme"))  # the 6th: the store says over
    limit = (await inspect(limiter, q("route=accounts,tenant=acme")))["descriptors"][0]["limits"][0]
    assert (limit["answered_by"], limit["allowed"], limit["remaining"]) == ("known_over", False, 0)


class BrokenStore:
    async def apply(self, checks: Sequence[Check]) -> list[Outcome]:
        raise BackendUnavailable("redis", "circuit breaker open")

    async def close(self) -> None:
        return None


async def test_when_the_store_fails_each_rule_s_on_backend_error_answers_and_says_so() -> None:
    limiter, _ = make(store=BrokenStore())
    answer = await inspect(limiter, q("route=accounts,tenant=acme", "bucket=b"))
    assert answer["backend"] == {"answered": False, "error": "redis unavailable: circuit breaker open",
                                 "fallbacks": ["allow", "deny"]}
    tenant, bucket = answer["descriptors"]
    assert (tenant["code"], tenant["fallback"], tenant["limits"][0]["answered_by"]) == \
        ("OVER_LIMIT", "deny", "fallback_deny")
    assert (bucket["code"], bucket["fallback"]) == ("OK", "allow")


async def test_inspecting_never_counts_in_the_per_rule_metrics() -> None:
    limiter, _ = make()
    service = RateLimitService(limiter, RuleMetrics())
    labels = {"domain": "pavilion", "rule": "per-tenant"}

    def total() -> float:
        service.metrics.flush()
        return REGISTRY.get_sample_value("pavilion_ratelimit_total_hits_total", labels) or 0.0

    request = rls_pb2.RateLimitRequest(domain="pavilion", descriptors=[ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="route", value="accounts"),
                 ratelimit_pb2.RateLimitDescriptor.Entry(key="tenant", value="metrics")])])
    before = total()
    await service.ShouldRateLimit(request.SerializeToString(), None)
    assert total() == before + 1
    for _ in range(10):
        await inspect(limiter, q("route=accounts,tenant=metrics"))
    assert total() == before + 1


# -- over HTTP, and the CLI ----------------------------------------------------------------------------

@pytest.fixture
async def admin() -> AsyncIterator[tuple[str, Limiter]]:
    limiter, _ = make()
    server = AdminServer("127.0.0.1", 0, routes=inspect_routes(limiter, lambda: {"kind": "memory"}))
    port = await server.start()
    try:
        yield f"127.0.0.1:{port}", limiter
    finally:
        await server.stop()


async def test_get_limits_answers_json_and_a_bad_query_is_a_400_naming_the_parameter(
        admin: tuple[str, Limiter]) -> None:
    address, limiter = admin
    await consume(limiter, 5, ("route", "accounts"), ("tenant", "acme"))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{address}/limits",
                               params=[("domain", "pavilion"), ("descriptor", "route=accounts,tenant=acme")]) as reply:
            assert reply.status == 200
            answer = await reply.json()
        async with session.get(f"http://{address}/limits?domain=pavilion&descriptor=%3Dx") as bad:
            assert bad.status == 400
            refused = await bad.json()
    assert answer["store"] == {"kind": "memory"}
    assert (answer["descriptors"][0]["code"], answer["descriptors"][0]["limit_remaining"]) == ("OVER_LIMIT", 0)
    assert refused["parameter"] == "descriptor" and "without a key" in refused["error"]


def test_the_cli_url_carries_any_key_and_value_but_a_comma_through_the_server_s_parsing() -> None:
    url = limits_url("h:1", "pavilion", ["route=acc=ounts,ten ant=a%b&c", "tenant"])
    pairs = parse_qsl(urlsplit(url).query)  # what aiohttp's request.query holds
    assert parse_query(pairs, []) == Query("pavilion", ((("route", "acc=ounts"), ("ten ant", "a%b&c")),
                                                        (("tenant", ""),)))


async def test_the_cli_prints_a_table_and_json_and_exits_0(admin: tuple[str, Limiter],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    address, limiter = admin
    await consume(limiter, 5, ("route", "accounts"), ("tenant", "acme"))

    def run(*extra: str, json_out: bool = False) -> int:
        return run_inspect(argparse.Namespace(admin=address, domain=None, json=json_out, descriptors=list(extra)))

    assert await asyncio.to_thread(run, "route=accounts,tenant=acme", "nope=1") == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("route=accounts,tenant=acme"))
    assert row.split() == ["route=accounts,tenant=acme", "per-tenant", "5", "per", "minute", "(fixed_window)", "0",
                           row.split()[7], "OVER", "OVER_LIMIT"]
    assert 0 < float(row.split()[7]) <= 60
    assert "no rule (unlimited)" in out and "limits.yaml:6:9" in out
    assert await asyncio.to_thread(run, "route=accounts,tenant=acme", json_out=True) == 0
    assert json.loads(capsys.readouterr().out)["descriptors"][0]["limit_remaining"] == 0
    assert await asyncio.to_thread(run, "=bad") == 2
    assert "refused the query (400): descriptor:" in capsys.readouterr().err


def test_the_cli_says_when_the_service_cannot_be_reached_or_serves_no_limits(
        capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(admin="127.0.0.1:1", domain=None, json=False, descriptors=["a=1"])
    assert run_inspect(args) == 1
    assert "cannot read http://127.0.0.1:1/limits" in capsys.readouterr().err


async def test_the_cli_tells_to_start_the_service_with_inspect_on_a_404(capsys: pytest.CaptureFixture[str]) -> None:
    server = AdminServer("127.0.0.1", 0)
    port = await server.start()
    try:
        args = argparse.Namespace(admin=f"127.0.0.1:{port}", domain=None, json=False, descriptors=["a=1"])
        assert await asyncio.to_thread(run_inspect, args) == 1
    finally:
        await server.stop()
    assert "--inspect" in capsys.readouterr().err


def test_render_marks_fallbacks_and_a_silent_store() -> None:
    answer = {"domain": "d", "domain_known": True, "overall_code": "OVER_LIMIT", "global_shadowed": False,
              "store": {"kind": "redis", "breaker": "open"},
              "backend": {"answered": False, "error": "redis unavailable: circuit breaker open", "fallbacks": ["deny"]},
              "descriptors": [{"descriptor": "k=v", "code": "OVER_LIMIT", "state": "over",
                               "rule": {"name": "r", "stats_key": "d.k", "source": None, "key_path": "k",
                                        "shadow_mode": False, "unlimited": False},
                               "limits": [{"name": "r", "describe": "1 per hour (fixed_window)", "allowed": False,
                                           "remaining": 0, "reset_after": 12.0, "answered_by": "fallback_deny"}]}]}
    text = render(answer)
    assert "store redis (breaker open)" in text
    assert "the store did not answer (redis unavailable: circuit breaker open)" in text
    assert "OVER (fallback_deny)" in text

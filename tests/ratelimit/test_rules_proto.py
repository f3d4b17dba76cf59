"""Rule → pavilion.v1.RateLimitPolicy (control plane) → Rule (ratelimit) gives the same rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.translate._pavilion import rate_limit_policies
from pavilion.errors import ConfigErrors
from pavilion.v1 import ratelimit_pb2
from ratelimit.config import load_config, parse_config_text
from ratelimit.rules import Limit, Rule
from ratelimit.rules_proto import config_from_policies

CONFIGS = Path(__file__).parent / "configs"


def round_trip(policies: list[ratelimit_pb2.RateLimitPolicy]) -> dict[str, ratelimit_pb2.RateLimitPolicy]:
    return {p.domain: ratelimit_pb2.RateLimitPolicy.FromString(p.SerializeToString()) for p in policies}


@pytest.mark.parametrize("name", ["basic.yaml", "extensions.yaml"])
def test_round_trip_gives_equal_rules(name: str) -> None:
    config = load_config(CONFIGS / name)
    back = config_from_policies(round_trip(rate_limit_policies(config)))
    assert back.rules == config.rules
    assert back.domains == config.domains


def test_every_rule_field_survives() -> None:
    rules = (
        Rule(domain="d", key_path=(("route", "a"), ("limit", "0"), ("tenant", None), ("path", "/v1/*")),
             limits=(Limit(unit="second", requests_per_unit=5, unit_multiplier=30, algorithm="token_bucket",
                           burst=10, name="fast"), Limit(unit="day", requests_per_unit=1000)),
             shadow_mode=True, replaces=("slow",), detailed_metric=True, name="r1", on_backend_error="local",
             share_threshold=(3,), value_to_metric=(2,)),
        Rule(domain="d", key_path=(("client", "internal"),), unlimited=True),
        Rule(domain="e", key_path=(("k", None),), limits=(Limit(unit="hour", requests_per_unit=1),),
             on_backend_error="deny"),
    )
    from ratelimit.matching import RateLimitConfig

    back = config_from_policies(round_trip(rate_limit_policies(RateLimitConfig(rules))))
    assert back.rules == rules
    assert back.match("d", [("route", "a"), ("limit", "0"), ("tenant", "acme"), ("path", "/v1/x")]) == rules[0]


def test_placeholders_keep_shielding_their_value() -> None:
    text = """
domain: d
descriptors:
  - key: client
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: client
    value: trusted
"""
    config = parse_config_text(text)
    policies = rate_limit_policies(config, placeholders=[("d", (("client", "trusted"),))])
    back = config_from_policies(round_trip(policies))
    assert back.match("d", [("client", "x")]) is not None
    assert back.match("d", [("client", "trusted")]) is None


def test_a_domain_without_rules_is_known() -> None:
    back = config_from_policies({"empty": ratelimit_pb2.RateLimitPolicy(domain="empty")})
    assert back.has_domain("empty")


def policy(**rule: object) -> ratelimit_pb2.RateLimitPolicy:
    base: dict[str, object] = {"key_path": [ratelimit_pb2.KeyPathEntry(key="k")],
                               "limits": [ratelimit_pb2.Limit(unit="second", requests_per_unit=1)]}
    base.update(rule)
    return ratelimit_pb2.RateLimitPolicy(domain="d", rules=[ratelimit_pb2.RateLimitRule(**base)])  # type: ignore[arg-type]


@pytest.mark.parametrize(("message", "expected"), [
    (policy(limits=[ratelimit_pb2.Limit(unit="fortnight", requests_per_unit=1)]), "rules[0].limits[0].unit"),
    (policy(limits=[ratelimit_pb2.Limit(unit="second", requests_per_unit=1, algorithm="leaky")]), "algorithm"),
    (policy(on_backend_error="panic"), "on_backend_error"),
    (policy(key_path=[]), "key_path"),
    (policy(unlimited=True), "either unlimited or has limits"),
    (ratelimit_pb2.RateLimitPolicy(domain="d", rules=[policy().rules[0], policy().rules[0]]), "two rules"),
])
def test_a_bad_policy_is_refused_naming_the_domain(message: ratelimit_pb2.RateLimitPolicy, expected: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        config_from_policies({"d": message})
    assert expected in str(caught.value) and "xds:RateLimitPolicy" in str(caught.value)


def test_the_resource_name_must_be_the_domain() -> None:
    with pytest.raises(ConfigErrors, match="differs from the domain"):
        config_from_policies({"other": policy()})


def test_a_shared_level_must_be_a_wildcard_of_the_key_path() -> None:
    rule = ratelimit_pb2.RateLimitRule(key_path=[ratelimit_pb2.KeyPathEntry(key="path", value="/v1/x")],
                                       limits=[ratelimit_pb2.Limit(unit="second", requests_per_unit=1)],
                                       share_threshold=[0])
    with pytest.raises(ConfigErrors, match="share_threshold depth 0 is not a wildcard level"):
        config_from_policies({"d": ratelimit_pb2.RateLimitPolicy(domain="d", rules=[rule])})
    del rule.share_threshold[:]
    rule.value_to_metric.append(1)
    with pytest.raises(ConfigErrors, match="value_to_metric depth is past the key path"):
        config_from_policies({"d": ratelimit_pb2.RateLimitPolicy(domain="d", rules=[rule])})

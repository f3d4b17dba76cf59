from __future__ import annotations

from pathlib import Path

from ratelimit.config import load_config, parse_config_text
from ratelimit.matching import RateLimitConfig
from ratelimit.rules import Limit, Rule

PRECEDENCE = """
domain: d
descriptors:
  - key: ip
    rate_limit: {unit: second, requests_per_unit: 1, name: key_only}
  - key: ip
    value: 10.*
    rate_limit: {unit: second, requests_per_unit: 2, name: short_wildcard}
  - key: ip
    value: 10.1.*
    rate_limit: {unit: second, requests_per_unit: 3, name: long_wildcard}
  - key: ip
    value: 10.1.2.3
    rate_limit: {unit: second, requests_per_unit: 4, name: exact}
  - key: mid
    value: bar*b
    rate_limit: {unit: second, requests_per_unit: 5, name: mid}
  - key: any
    value: "*"
    rate_limit: {unit: second, requests_per_unit: 6, name: any}
  - key: svc
    value: a
    descriptors:
      - key: user
        value: vip-*
        rate_limit: {unit: second, requests_per_unit: 7, name: nested_wildcard}
      - key: user
        rate_limit: {unit: second, requests_per_unit: 8, name: nested_key}
"""


def name(config: RateLimitConfig, *entries: tuple[str, str], domain: str = "d") -> str | None:
    rule = config.match(domain, entries)
    return rule.name if rule else None


def test_exact_then_wildcard_then_key_only() -> None:
    config = parse_config_text(PRECEDENCE)
    assert name(config, ("ip", "10.1.2.3")) == "exact"
    assert name(config, ("ip", "10.1.2.4")) == "long_wildcard"  # the longest matching prefix
    assert name(config, ("ip", "10.9.9.9")) == "short_wildcard"
    assert name(config, ("ip", "192.168.0.1")) == "key_only"


def test_wildcard_only_at_the_end_of_a_value() -> None:
    config = parse_config_text(PRECEDENCE)
    assert name(config, ("mid", "bar*b")) == "mid"  # a `*` inside a value is a literal
    assert name(config, ("mid", "barab")) is None
    assert name(config, ("any", "")) == "any"
    assert name(config, ("any", "whatever")) == "any"


def test_nested_levels_use_the_same_precedence() -> None:
    config = parse_config_text(PRECEDENCE)
    assert name(config, ("svc", "a"), ("user", "vip-1")) == "nested_wildcard"
    assert name(config, ("svc", "a"), ("user", "bob")) == "nested_key"
    assert name(config, ("svc", "b"), ("user", "bob")) is None
    assert name(config, ("svc", "a")) is None  # no limit at that level


def test_depth_must_match_the_request(tmp_path: Path) -> None:
    readme = load_config(Path(__file__).parent / "configs" / "readme")
    # Example 4: a two-entry request matches only a two-level rule.
    assert readme.match("example4", [("key", "value"), ("subkey", "subvalue")]) is not None
    one_level = parse_config_text("domain: example4\ndescriptors:\n  - key: key\n    value: value\n"
                                  "    rate_limit: {requests_per_unit: 300, unit: second}\n")
    assert one_level.match("example4", [("key", "value"), ("subkey", "subvalue")]) is None
    assert one_level.match("example4", [("key", "value")]) is not None


def test_readme_examples_match_as_documented() -> None:
    config = load_config(Path(__file__).parent / "configs" / "readme")

    def rate(domain: str, *entries: tuple[str, str]) -> int | None:
        rule = config.match(domain, entries)
        return rule.limits[0].requests_per_unit if rule and rule.limits else None

    assert rate("messaging", ("message_type", "marketing"), ("to_number", "2061111111")) == 5
    assert rate("messaging", ("to_number", "2061111111")) == 100
    assert rate("messaging", ("message_type", "transactional"), ("to_number", "2061111111")) is None
    assert rate("edge_proxy_per_ip", ("remote_address", "50.0.0.1")) == 10
    assert rate("edge_proxy_per_ip", ("remote_address", "50.0.0.5")) == 0
    assert rate("example9", ("key1", "value1")) == 20
    assert rate("example9", ("key1", "other")) is None
    assert rate("mongo_cps", ("database", "users")) == 500
    assert rate("mongo_cps", ("database", "other")) is None
    assert config.match("unknown", [("database", "users")]) is None
    assert config.match("mongo_cps", []) is None


def test_an_exact_match_without_nested_descriptors_stops_the_walk() -> None:
    # envoyproxy/ratelimit does not backtrack to the key-only branch once the exact one matched.
    config = parse_config_text(
        "domain: d\ndescriptors:\n  - key: a\n    value: x\n    rate_limit: {unit: second, requests_per_unit: 1}\n"
        "  - key: a\n    descriptors:\n      - key: b\n        rate_limit: {unit: second, requests_per_unit: 2}\n"
    )
    assert config.match("d", [("a", "x"), ("b", "y")]) is None
    assert config.match("d", [("a", "z"), ("b", "y")]) is not None


def test_keys_and_values_do_not_run_together() -> None:
    # envoyproxy/ratelimit joins key and value with "_" for its lookups; tuples keep them apart.
    config = parse_config_text(
        "domain: d\ndescriptors:\n  - key: a\n    value: b_c\n    rate_limit: {unit: second, requests_per_unit: 1}\n"
        "  - key: x\n    value: y*\n    rate_limit: {unit: second, requests_per_unit: 1}\n"
    )
    assert config.match("d", [("a_b", "c")]) is None
    assert config.match("d", [("x_y", "z")]) is None
    assert config.match("d", [("x", "yz")]) is not None


def test_config_built_from_rules() -> None:
    rule = Rule("d", (("k", None), ("s", "v")), (Limit("second", 1),))
    config = RateLimitConfig([rule])
    assert config.match("d", [("k", "any"), ("s", "v")]) is rule


def test_envoyproxy_basic_config_semantics() -> None:
    config = load_config(Path(__file__).parent / "configs" / "basic.yaml")

    def rate(*entries: tuple[str, str]) -> int | None:
        rule = config.match("test-domain", entries)
        return rule.limits[0].requests_per_unit if rule else None

    assert rate() is None
    assert rate(("key1", "something")) is None
    assert rate(("key1", "value1")) is None  # a placeholder level has no limit
    assert rate(("key1", "value1"), ("subkey1", "something")) == 5
    assert rate(("key1", "value1"), ("subkey1", "subvalue1")) == 10
    assert rate(("key2", "something")) == 20
    assert rate(("key2", "value2")) == 30
    assert rate(("key2", "value3")) is None  # shielded from key2's default
    assert rate(("key2", "value2"), ("subkey", "subvalue")) is None
    assert rate(("key3", "foo")) == 1
    assert rate(("key5", "value5")) == 15
    assert rate(("key5", "value5"), ("subkey5", "subvalue5")) == 25
    assert rate(("key5", "value5"), ("subkey5", "other")) is None
    assert config.match("foo_domain", [("key3", "foo")]) is None

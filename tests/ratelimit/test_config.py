from __future__ import annotations

from pathlib import Path

import pytest

from pavilion.errors import ConfigErrors
from ratelimit.config import load_config, parse_config_text
from ratelimit.rules import Limit

CONFIGS = Path(__file__).parent / "configs"
BAD = CONFIGS / "bad"

# file -> (line, column, field path, message): the first error each bad file must produce.
REJECTIONS = {
    "empty_domain.yaml": (1, 9, "domain", "config file cannot have empty domain"),
    "domain_not_a_string.yaml": (1, 9, "domain", "expected a string, got a list"),
    "empty_file.yaml": (0, 0, "", "config file cannot have empty domain (the file is empty)"),
    "empty_key.yaml": (3, 5, "descriptors[0].key", "descriptor has empty key"),
    "duplicate_key.yaml": (8, 5, "descriptors[1]", "duplicate descriptor composite key 'test-domain.key1_value1' "
                           "(first at {dir}/duplicate_key.yaml:3:5)"),
    "duplicate_nested_key.yaml": (7, 9, "descriptors[0].descriptors[1]",
                                  "duplicate descriptor composite key 'test-domain.key1.key2_a' "
                                  "(first at {dir}/duplicate_nested_key.yaml:5:9)"),
    "bad_limit_unit.yaml": (5, 13, "descriptors[0].rate_limit.unit",
                            "invalid rate limit unit 'foo'; give one of second, minute, hour, day, week, month, year"),
    "replaces_self.yaml": (7, 11, "descriptors[0].rate_limit.replaces[0]",
                           "replaces should not contain name of same descriptor"),
    "replaces_empty.yaml": (6, 11, "descriptors[0].rate_limit.replaces[0]", "should not have an empty replaces entry"),
    "bad_yaml.yaml": (3, 1, "", "YAML syntax error: expected the node content, but found '<stream end>' "
                      "(while parsing a flow node)"),
    "misspelled_key.yaml": (4, 5, "descriptors[0].ratelimit", "unknown key 'ratelimit'; did you mean 'rate_limit'?"),
    "misspelled_key2.yaml": (6, 7, "descriptors[0].rate_limit.requestsperunit",
                             "unknown key 'requestsperunit'; did you mean 'requests_per_unit'?"),
    "non_string_key.yaml": (4, 5, "descriptors[0].0.25", "unknown key '0.25'"),
    "non_map_list.yaml": (3, 5, "descriptors[0]", "expected a descriptor (a mapping), got a string ('a')"),
    "descriptors_not_a_list.yaml": (3, 3, "descriptors", "expected a list of descriptors, got a mapping"),
    "unlimited_with_unit.yaml": (6, 7, "descriptors[0].rate_limit.unit",
                                 "should not specify rate limit unit when unlimited"),
    "zero_unit_multiplier.yaml": (6, 24, "descriptors[0].rate_limit.unit_multiplier",
                                  "must be between 1 and 4294967295"),
    "bad_algorithm.yaml": (7, 18, "descriptors[0].rate_limit.algorithm",
                           "'leaky_bucket' is not one of fixed_window, sliding_window, token_bucket; "
                           "did you mean 'token_bucket'?"),
    "burst_without_token_bucket.yaml": (7, 7, "descriptors[0].rate_limit.burst",
                                        "burst applies to algorithm token_bucket only, not fixed_window"),
    "rate_limit_and_rate_limits.yaml": (7, 5, "descriptors[0].rate_limits",
                                        "give either rate_limit or rate_limits, not both"),
    "empty_rate_limits.yaml": (4, 18, "descriptors[0].rate_limits", "rate_limits needs at least one limit"),
    "missing_requests_per_unit.yaml": (5, 7, "descriptors[0].rate_limit.requests_per_unit",
                                       "requests_per_unit is missing (write 0 to refuse every request)"),
    "negative_requests_per_unit.yaml": (6, 26, "descriptors[0].rate_limit.requests_per_unit",
                                        "must be between 0 and 4294967295"),
    "string_requests_per_unit.yaml": (6, 26, "descriptors[0].rate_limit.requests_per_unit",
                                      "expected an integer, got a string ('ten')"),
    "bad_on_backend_error.yaml": (4, 23, "descriptors[0].on_backend_error", "'fail' is not one of allow, deny, local"),
    "bad_shadow_mode.yaml": (4, 18, "descriptors[0].shadow_mode", "expected true or false, got a string ('sometimes')"),
    "share_threshold_without_wildcard.yaml": (5, 5, "descriptors[0].share_threshold",
                                              "share_threshold can only be used with a wildcard value (ending "
                                              "with '*'), but 'test-domain.files_reports' has an exact one"),
    "repeated_yaml_key.yaml": (6, 7, "descriptors[0].rate_limit.unit",
                               "key 'unit' is given twice (first at {dir}/repeated_yaml_key.yaml:5:7)"),
}


def test_every_bad_file_has_an_expectation() -> None:
    assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(REJECTIONS)


@pytest.mark.parametrize("name", sorted(REJECTIONS))
def test_rejection_names_file_line_column_and_path(name: str) -> None:
    line, column, path, message = REJECTIONS[name]
    with pytest.raises(ConfigErrors) as caught:
        load_config(BAD / name)
    first = caught.value.errors[0]
    assert first.location is not None
    assert (first.location.file, first.location.line, first.location.column) == (str(BAD / name), line, column)
    assert first.path == path
    assert first.message == message.format(dir=BAD)
    where = f"{BAD / name}:{line}:{column}" if line else str(BAD / name)
    assert str(first) == ": ".join(part for part in (where, path, message.format(dir=BAD)) if part)


def test_a_whole_directory_reports_every_bad_file_at_once() -> None:
    with pytest.raises(ConfigErrors) as caught:
        load_config(BAD)
    files = {Path(error.location.file).name for error in caught.value.errors if error.location}
    assert files == set(REJECTIONS)


def test_duplicate_domain_across_files_and_documents() -> None:
    with pytest.raises(ConfigErrors) as caught:
        load_config(CONFIGS / "dup_domain")
    [error] = caught.value.errors
    assert str(error) == (f"{CONFIGS}/dup_domain/b.yaml:3:9: domain: duplicate domain 'shared' in config file "
                          f"(first at {CONFIGS}/dup_domain/a.yaml:1:9)")


def test_merged_domains_add_up_across_files() -> None:
    config = load_config(CONFIGS / "merge", merge_domains=True)
    assert config.match("shared", [("client", "x")]) is not None
    assert config.match("shared", [("path", "/login")]) is not None
    # b.yaml's placeholder shields its value from a.yaml's key-only rule, as within one file.
    assert config.match("shared", [("client", "batch")]) is None
    with pytest.raises(ConfigErrors, match="duplicate domain 'shared'"):
        load_config(CONFIGS / "merge")


def test_merged_domains_refuse_a_top_level_descriptor_given_twice() -> None:
    with pytest.raises(ConfigErrors) as caught:
        load_config(CONFIGS / "merge_clash", merge_domains=True)
    [error] = caught.value.errors
    assert str(error) == (f"{CONFIGS}/merge_clash/b.yaml:5:5: descriptors[1]: duplicate descriptor composite key "
                          f"'shared.path_/login' (first at {CONFIGS}/merge_clash/a.yaml:3:5)")


def test_missing_path_is_an_error() -> None:
    with pytest.raises(ConfigErrors, match="no such file or directory"):
        load_config(CONFIGS / "nowhere")


def test_readme_examples_load_unchanged() -> None:
    config = load_config(CONFIGS / "readme")
    assert {rule.domain for rule in config.rules} == {
        "mongo_cps", "messaging", "edge_proxy_per_ip", "example4", "internal", "example6", "example7",
        "example8", "example9",
    }
    assert len(config.files) == 9
    by_key = {rule.stats_key: rule for rule in config.rules}
    assert by_key["mongo_cps.database_users"].limits == (Limit("second", 500),)
    assert by_key["messaging.message_type_marketing.to_number"].limits == (Limit("day", 5),)
    assert by_key["edge_proxy_per_ip.remote_address_50.0.0.5"].limits == (Limit("second", 0),)
    ldap = by_key["internal.ldap"]
    assert ldap.unlimited and ldap.limits == ()
    assert by_key["example6.service.user_user-a"].shadow_mode
    assert not by_key["example6.service.user_user-b"].shadow_mode
    assert by_key["example7.key_1_value_1.user_bkthomps"].name == "specific_limit"
    assert by_key["example7.key_2_value_2.user_bkthomps"].replaces == ("specific_limit",)
    assert by_key["example8.key1"].detailed_metric
    assert by_key["example9.key1_value*"].key_path == (("key1", "value*"),)
    assert by_key["messaging.to_number"].source.line == 13


def test_extensions() -> None:
    config = load_config(CONFIGS / "extensions.yaml")
    rules = {rule.stats_key: rule for rule in config.rules}
    tenant = rules["api.tenant"]
    assert tenant.on_backend_error == "local"
    assert tenant.limits == (
        Limit("second", 10, algorithm="token_bucket", burst=20, name="tenant_per_second"),
        Limit("day", 100_000, name="tenant_per_day"),
    )
    assert tenant.limit_names == {"tenant_per_second", "tenant_per_day"}
    login = rules["api.path_/login"]
    assert login.on_backend_error == "deny"
    assert login.limits[0].window_seconds == 300 and login.limits[0].algorithm == "sliding_window"
    assert rules["api.path_/login/special"].replaces == ("tenant_per_second",)
    legacy = rules["api.legacy"]
    assert legacy.shadow_mode  # `yes`, as Go's yaml.v2 reads it
    assert legacy.limits[0].unit == "hour"  # units are case-insensitive, as envoyproxy/ratelimit upper-cases them


def test_window_seconds_of_every_unit() -> None:
    assert [Limit(unit, 1).window_seconds for unit in ("second", "minute", "hour", "day", "week", "month", "year")] \
        == [1, 60, 3600, 86400, 604800, 2592000, 31536000]
    assert Limit("second", 1, unit_multiplier=30).window_seconds == 30
    assert Limit("second", 5).capacity == 5 and Limit("second", 5, burst=9).capacity == 9


def test_scalars_in_string_fields_are_taken_as_written() -> None:
    config = parse_config_text(
        "domain: 42\ndescriptors:\n  - key: code\n    value: 429\n"
        "    rate_limit: {unit: second, requests_per_unit: 1}\n"
        "  - key: flag\n    value: true\n    rate_limit: {unit: second, requests_per_unit: 1}\n"
    )
    assert config.match("42", [("code", "429")]) is not None
    assert config.match("42", [("flag", "true")]) is not None


def test_scalars_in_string_fields_keep_their_text_as_go_yaml_does() -> None:
    """envoyproxy/ratelimit's yaml.v2 fills a string field with the scalar's text, whatever it resolves to."""
    config = parse_config_text(
        "domain: 0100\ndescriptors:\n"
        + "".join(f"  - key: k\n    value: {value}\n    rate_limit: {{unit: second, requests_per_unit: 1}}\n"
                  for value in ("010", "1.50", "on", "0x1F", "1e3")))
    for written in ("010", "1.50", "on", "0x1F", "1e3"):
        assert config.match("0100", [("k", written)]) is not None, written
    for resolved in ("10", "1.5", "true", "31", "1000.0"):
        assert config.match("0100", [("k", resolved)]) is None, resolved


def test_empty_value_is_no_value_and_null_descriptors_are_none() -> None:
    config = parse_config_text(
        "domain: d\ndescriptors:\n  - key: k\n    value: ''\n    rate_limit: {unit: second, requests_per_unit: 1}\n"
        "  - key: empty\n    descriptors:\n"
    )
    [rule] = config.rules
    assert rule.key_path == (("k", None),)
    assert "d" in config.domains


def test_null_blocks_are_absent() -> None:
    config = parse_config_text(
        "domain: d\ndescriptors:\n  - key: a\n    rate_limit:\n  - key: b\n    rate_limits:\n"
        "  - key: c\n    rate_limit:\n      unit: second\n      requests_per_unit: 1\n      replaces:\n"
    )
    assert [rule.stats_key for rule in config.rules] == ["d.c"]
    assert config.match("d", [("a", "x")]) is None

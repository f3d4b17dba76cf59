"""One bad file per rule, each with the exact lines `pavilion validate` must print for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.config.load import load_config
from pavilion.errors import ConfigErrors
from tests.controlplane.config.fixtures_bad import bad_files, expected_errors


@pytest.mark.parametrize("path", bad_files(), ids=lambda p: p.stem)
def test_bad_file_gives_exactly_its_errors(path: Path) -> None:
    expected = expected_errors(path)
    assert expected, f"{path} declares no `# error:` line"
    with pytest.raises(ConfigErrors) as caught:
        load_config(path)
    assert [str(e) for e in caught.value.errors] == expected


def test_every_rule_has_a_fixture() -> None:
    names = {p.stem for p in bad_files()}
    rules = {
        "syntax", "unknown_field", "unknown_top_level", "missing_field", "wrong_type", "bad_duration",
        "zero_duration", "bad_address", "listener_port", "duplicate_name", "duplicate_key", "unknown_service",
        "unknown_listener", "listener_required", "unknown_region", "bad_regex", "header_host", "header_invalid",
        "weights", "service_and_backends", "match_one", "path_slash", "methods", "retry_on", "backoff", "limits",
        "auth_unknown_tenant", "auth_without_extauthz", "per_token_on_public", "section_service",
        "rate_limits_without_ratelimit", "tenant_duplicate", "tenant_invalid", "tenants_without_extauthz",
        "rate_limit_values", "auth_empty", "auth_scopes", "auth_claims",
    }
    assert rules <= names

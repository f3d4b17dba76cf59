"""The real `envoy --mode validate` on translated ext_authz and ratelimit config (examples/protected)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from controlplane.config.load import load_config
from controlplane.envoy_check import check_with_envoy
from tests.procs import ENVOY

pytestmark = pytest.mark.integration

PROTECTED = Path(__file__).resolve().parents[2] / "examples" / "protected"


def test_protected_example_is_accepted_by_envoy() -> None:
    assert check_with_envoy(load_config(PROTECTED), ENVOY) == []


def test_each_filter_alone_is_accepted_by_envoy() -> None:
    config = load_config(PROTECTED)
    no_limits = tuple(replace(r, rate_limits=()) for r in config.routes)
    assert check_with_envoy(replace(config, ratelimit=None, routes=no_limits), ENVOY) == []
    only_ip = tuple(replace(r, auth=None, rate_limits=tuple(x for x in r.rate_limits if x.per == ("client_ip",)))
                    for r in config.routes)
    assert check_with_envoy(replace(config, extauthz=None, tenants=(), routes=only_ip), ENVOY) == []


def test_envoy_checks_the_filters_too() -> None:
    """The check sees the filters: a ratelimit filter without a domain is refused by Envoy itself."""
    config = load_config(PROTECTED)
    assert config.ratelimit is not None
    broken = replace(config, ratelimit=replace(config.ratelimit, domain=""))
    problems = check_with_envoy(broken, ENVOY)
    assert "RateLimitValidationError.Domain" in " ".join(problems)

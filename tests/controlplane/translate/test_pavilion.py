"""Pavilion's own resources in the control plane: who gets them, how they are named and versioned."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from controlplane import resources as urls
from controlplane.cache import Group, SnapshotCache, config_version
from controlplane.config.load import load_config
from controlplane.translate import translate, translate_regional
from controlplane.translate._ratelimit import ratelimit_rules
from pavilion.v1 import ratelimit_pb2, tenant_pb2
from ratelimit.rules_proto import rules_from_policy

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "protected"


def test_extauthz_nodes_get_one_tenant_policy_per_tenant_and_nothing_for_envoy() -> None:
    config = load_config(str(EXAMPLE))
    resources = translate(config, "local", "extauthz")
    assert all(not resources[url] for url in urls.ADS_ORDER)
    assert set(resources) == {*urls.ADS_ORDER, urls.TENANT_POLICY}
    policies = resources[urls.TENANT_POLICY]
    assert all(isinstance(p, tenant_pb2.TenantPolicy) for p in policies)
    assert [p.id for p in policies] == sorted(t.id for t in config.tenants) == ["acme", "beta"]  # type: ignore[attr-defined]


def test_ratelimit_nodes_get_the_rules_of_the_routes_as_one_policy_per_domain() -> None:
    config = load_config(str(EXAMPLE))
    policies = translate(config, "local", "ratelimit")[urls.RATE_LIMIT_POLICY]
    assert [p.domain for p in policies] == ["pavilion"]  # type: ignore[attr-defined]
    policy = policies[0]
    assert isinstance(policy, ratelimit_pb2.RateLimitPolicy)
    assert rules_from_policy(policy) == ratelimit_rules(config)
    assert translate_regional(config, "local", "ratelimit") == {}


def test_edge_nodes_do_not_get_pavilion_types() -> None:
    config = load_config(str(EXAMPLE))
    assert not set(translate(config, "local", "edge")) & set(urls.PAVILION_TYPES)


async def test_pavilion_types_carry_the_config_version_while_resources_keep_their_hashes() -> None:
    config = load_config(str(EXAMPLE))
    cache = SnapshotCache(translate, regional=translate_regional)
    extauthz, edge = Group("local", "extauthz"), Group("local", "edge")
    await cache.install(config, config_version(config))
    first = await cache.snapshot(extauthz)
    assert first.type(urls.TENANT_POLICY).version == config_version(config)
    assert urls.TENANT_POLICY not in (await cache.snapshot(edge)).types

    # A route edit: a new config version, the same tenant resources (Delta sends none of them).
    route = dataclasses.replace(config.routes[0], timeout=9.0)
    edited = dataclasses.replace(config, routes=(route, *config.routes[1:]))
    await cache.install(edited, config_version(edited))
    second = cache.current(extauthz)
    assert second is not None
    assert config_version(edited) != config_version(config)
    assert second.type(urls.TENANT_POLICY).version == config_version(edited)
    assert second.type(urls.TENANT_POLICY).hashes() == first.type(urls.TENANT_POLICY).hashes()
    # Regions of one role share the translated policies.
    other = await cache.snapshot(Group("other", "extauthz"))
    assert other.type(urls.TENANT_POLICY) is second.type(urls.TENANT_POLICY)

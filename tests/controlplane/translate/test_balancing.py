"""`load_balancing` → Cluster.lb_policy (priorities and locality weights unchanged), `hash_on` →
RouteAction.hash_policy, every entry terminal."""

from __future__ import annotations

from dataclasses import replace

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from controlplane.config.model import Backend, HashKey
from controlplane.config.rules import LOAD_BALANCING
from controlplane.translate._balancing import LB_POLICIES
from tests.controlplane.translate.sample import sample_config, translated
from tests.controlplane.translate.test_routes import plain, single


@pytest.mark.parametrize(("balancing", "policy"), [
    ("round_robin", cluster_pb2.Cluster.ROUND_ROBIN), ("least_request", cluster_pb2.Cluster.LEAST_REQUEST),
    ("random", cluster_pb2.Cluster.RANDOM), ("ring_hash", cluster_pb2.Cluster.RING_HASH),
    ("maglev", cluster_pb2.Cluster.MAGLEV),
])
def test_load_balancing_is_the_clusters_lb_policy(balancing: str, policy: int) -> None:
    config = sample_config()
    services = tuple(replace(s, load_balancing=balancing) if s.name == "accounts" else s for s in config.services)
    config = replace(config, services=services)
    found = {c.name: c for c in translated(cluster_pb2.Cluster, config, "eu-west")}
    accounts = found["accounts"]
    assert accounts.lb_policy == policy
    assert found["billing"].lb_policy == cluster_pb2.Cluster.ROUND_ROBIN  # the default, untouched
    # Locality weights stay on whatever the policy (ring_hash and maglev weigh hosts by them too), and
    # Envoy's own ring and table sizes are kept.
    assert accounts.common_lb_config.HasField("locality_weighted_lb_config")
    assert not accounts.HasField("ring_hash_lb_config") and not accounts.HasField("maglev_lb_config")
    # Priorities by region come from the assignment, the same whatever the policy.
    assignment = next(a for a in translated(endpoint_pb2.ClusterLoadAssignment, config, "eu-west")
                      if a.cluster_name == "accounts")
    baseline = next(a for a in translated(endpoint_pb2.ClusterLoadAssignment, sample_config(), "eu-west")
                    if a.cluster_name == "accounts")
    assert assignment == baseline
    assert sorted({e.priority for e in assignment.endpoints}) == [0, 1]


def test_every_choice_has_an_envoy_policy() -> None:
    assert sorted(LB_POLICIES) == sorted(LOAD_BALANCING)


def test_hash_on_becomes_terminal_hash_policies_in_order() -> None:
    route = plain(hash_on=(HashKey("header", "x-session"), HashKey("cookie", "sid", 3600.0, "/app"),
                           HashKey("cookie", "session", 0.0), HashKey("cookie", "read-only"),
                           HashKey("query", "user"), HashKey("source_ip")))
    policies = single(route).route.hash_policy
    assert [p.WhichOneof("policy_specifier") for p in policies] == [
        "header", "cookie", "cookie", "cookie", "query_parameter", "connection_properties"]
    assert all(p.terminal for p in policies)
    header, cookie, session, read_only, query, source = policies
    assert header.header.header_name == "x-session"
    assert (cookie.cookie.name, cookie.cookie.ttl.seconds, cookie.cookie.path) == ("sid", 3600, "/app")
    # A ttl of 0 is there (Envoy sets a session cookie); no ttl means Envoy only reads the cookie.
    assert session.cookie.HasField("ttl") and session.cookie.ttl.ToNanoseconds() == 0
    assert not read_only.cookie.HasField("ttl") and read_only.cookie.path == ""
    assert query.query_parameter.name == "user"
    assert source.connection_properties.source_ip


def test_no_hash_on_no_hash_policy() -> None:
    assert len(single(plain()).route.hash_policy) == 0


def test_hash_policy_with_weighted_backends() -> None:
    route = replace(plain(hash_on=(HashKey("source_ip"),)), backends=(Backend("accounts", 50), Backend("billing", 50)))
    action = single(route).route
    assert len(action.weighted_clusters.clusters) == 2
    assert [p.connection_properties.source_ip for p in action.hash_policy] == [True]

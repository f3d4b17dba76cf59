"""The static bootstrap `pavilion validate` hands to `envoy --mode validate` (Envoy itself runs in
tests/integration/test_envoy_validate.py)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.envoy_check import static_bootstrap
from tests.controlplane.translate.sample import sample_config


def test_clusters_are_static_with_their_endpoints_inlined() -> None:
    bootstrap = static_bootstrap(sample_config(), "us-east")
    clusters = {c.name: c for c in bootstrap.static_resources.clusters}
    assert sorted(clusters) == ["accounts", "billing", "billing-v2"]
    accounts = clusters["accounts"]
    assert accounts.type == cluster_pb2.Cluster.STATIC
    assert not accounts.HasField("eds_cluster_config")
    assert [(lle.priority, lle.locality.region) for lle in accounts.load_assignment.endpoints] == [
        (0, "us-east"), (1, "eu-west")]
    assert accounts.health_checks and accounts.HasField("outlier_detection")  # the rest is kept
    assert bootstrap.node.locality.region == "us-east"


def test_listeners_carry_their_route_config_inline() -> None:
    bootstrap = static_bootstrap(sample_config(), "eu-west")
    for listener in bootstrap.static_resources.listeners:
        manager = hcm_pb2.HttpConnectionManager()
        assert listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
        assert not manager.HasField("rds")
        assert manager.route_config.name == listener.name
        assert manager.route_config.virtual_hosts
        assert [f.name for f in manager.http_filters][-1] == "envoy.filters.http.router"

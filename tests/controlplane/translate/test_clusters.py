from __future__ import annotations

from dataclasses import replace

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from controlplane.config.model import Config, Endpoint, Service
from tests.controlplane.translate.sample import sample_config, translated


def clusters(region: str = "eu-west") -> dict[str, cluster_pb2.Cluster]:
    return {c.name: c for c in translated(cluster_pb2.Cluster, sample_config(), region)}


def assignments(region: str, config: Config | None = None) -> dict[str, endpoint_pb2.ClusterLoadAssignment]:
    found = translated(endpoint_pb2.ClusterLoadAssignment, config or sample_config(), region)
    return {a.cluster_name: a for a in found}


def localities(assignment: endpoint_pb2.ClusterLoadAssignment) -> list[tuple[int, str, list[int], int]]:
    return [(lle.priority, lle.locality.region, [e.endpoint.address.socket_address.port_value
                                                 for e in lle.lb_endpoints], lle.load_balancing_weight.value)
            for lle in assignment.endpoints]


def test_one_eds_cluster_per_service_over_ads() -> None:
    found = clusters()
    assert sorted(found) == ["accounts", "billing", "billing-v2"]
    accounts = found["accounts"]
    assert accounts.type == cluster_pb2.Cluster.EDS
    assert accounts.eds_cluster_config.eds_config.HasField("ads")
    assert accounts.eds_cluster_config.eds_config.resource_api_version == 2  # V3
    assert accounts.connect_timeout.ToNanoseconds() == 250_000_000
    assert accounts.per_connection_buffer_limit_bytes.value == 32 * 1024


def test_upstream_is_http1() -> None:
    options = http_protocol_options_pb2.HttpProtocolOptions()
    key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    packed = clusters()["accounts"].typed_extension_protocol_options[key]
    assert packed.Unpack(options)
    assert options.explicit_http_config.HasField("http_protocol_options")


def test_local_region_is_priority_zero_and_others_priority_one() -> None:
    eu = assignments("eu-west")["accounts"]
    assert localities(eu) == [(0, "eu-west", [9001, 9003], 4), (1, "us-east", [9002], 1)]
    us = assignments("us-east")["accounts"]
    assert localities(us) == [(0, "us-east", [9002], 1), (1, "eu-west", [9001, 9003], 4)]


def test_endpoint_weights_are_kept() -> None:
    eu = assignments("eu-west")["accounts"]
    weights = {e.endpoint.address.socket_address.port_value: e.load_balancing_weight.value
               for lle in eu.endpoints for e in lle.lb_endpoints}
    assert weights == {9001: 1, 9003: 3, 9002: 1}


def test_every_remote_region_shares_priority_one() -> None:
    billing = assignments("eu-west")["billing"]  # no endpoint in eu-west: the remote ones are all that is left
    assert localities(billing) == [(0, "ap-south", [9102], 1), (0, "us-east", [9101], 1)]
    assert localities(assignments("us-east")["billing"]) == [(0, "us-east", [9101], 1), (1, "ap-south", [9102], 1)]


def test_cluster_name_of_assignment_is_the_service_name() -> None:
    assert sorted(assignments("eu-west")) == ["accounts", "billing", "billing-v2"]


def test_endpoint_order_does_not_depend_on_yaml_order() -> None:
    config = sample_config()
    accounts = config.service("accounts")
    shuffled = replace(accounts, endpoints=tuple(reversed(accounts.endpoints)))
    other = replace(config, services=(shuffled, *config.services[1:]))
    assert (assignments("eu-west", other)["accounts"].SerializeToString(deterministic=True)
            == assignments("eu-west")["accounts"].SerializeToString(deterministic=True))


def test_health_check_runs_without_traffic() -> None:
    (check,) = clusters()["accounts"].health_checks
    assert check.http_health_check.path == "/healthz"
    assert check.interval.ToNanoseconds() == 1_000_000_000
    assert check.no_traffic_interval == check.interval
    assert check.timeout.ToNanoseconds() == 500_000_000
    assert (check.healthy_threshold.value, check.unhealthy_threshold.value) == (1, 2)
    assert not clusters()["billing"].health_checks


def test_outlier_detection_can_eject_every_host() -> None:
    outlier = clusters()["accounts"].outlier_detection
    assert outlier.consecutive_5xx.value == 3
    assert outlier.interval.ToNanoseconds() == 1_000_000_000
    assert outlier.base_ejection_time.ToNanoseconds() == 10_000_000_000
    assert outlier.max_ejection_percent.value == 100
    assert not clusters()["billing"].HasField("outlier_detection")


def test_circuit_breaker_thresholds() -> None:
    (limits,) = clusters()["accounts"].circuit_breakers.thresholds
    assert limits.max_connections.value == 1000
    assert limits.max_pending_requests.value == 100
    assert limits.max_requests.value == 1000
    assert not clusters()["billing"].HasField("circuit_breakers")


def test_panic_threshold_is_envoys_default_and_locality_weights_apply() -> None:
    lb = clusters()["accounts"].common_lb_config
    assert not lb.HasField("healthy_panic_threshold")  # why: see controlplane/translate/_clusters.py
    assert lb.HasField("locality_weighted_lb_config")


def test_service_without_endpoints_gets_an_empty_assignment() -> None:
    config = replace(sample_config(), services=(Service("empty", ()),))
    assert localities(assignments("eu-west", config)["empty"]) == []


def test_endpoint_priority_uses_the_node_region_only() -> None:
    config = replace(sample_config(), services=(Service("s", (Endpoint("10.0.0.1", 80, "eu-west"),)),))
    assert localities(assignments("nowhere", config)["s"]) == [(0, "eu-west", [80], 1)]

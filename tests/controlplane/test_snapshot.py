from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane import resources as urls
from controlplane.snapshot import build_snapshot, response_head
from tests.controlplane.xds_fixtures import ToyConfig, cluster, endpoints, toy_translate

CONFIG = ToyConfig(services={"accounts": 9001, "billing": 9002})


def test_versions_are_content_hashes_independent_of_order_and_build() -> None:
    first = build_snapshot(toy_translate(CONFIG, "eu-west"))
    resources = toy_translate(CONFIG, "eu-west")
    resources = {url: list(reversed(items)) for url, items in reversed(resources.items())}
    second = build_snapshot(resources)
    assert first.version == second.version
    assert first.versions() == second.versions()
    assert list(first.type(urls.CLUSTER).resources) == ["accounts", "billing"]


def test_a_change_moves_only_the_versions_of_what_changed() -> None:
    before = build_snapshot(toy_translate(CONFIG, "eu-west"))
    after = build_snapshot(toy_translate(ToyConfig(services={"accounts": 9001, "billing": 9003}), "eu-west"))
    assert before.version != after.version
    assert before.type(urls.CLUSTER).version == after.type(urls.CLUSTER).version
    assert before.type(urls.ENDPOINT).version != after.type(urls.ENDPOINT).version
    old, new = before.type(urls.ENDPOINT).hashes(), after.type(urls.ENDPOINT).hashes()
    assert old["accounts"] == new["accounts"]
    assert old["billing"] != new["billing"]


def test_response_is_head_plus_shared_resource_fields() -> None:
    snapshot = build_snapshot(toy_translate(CONFIG, "eu-west"))
    snap = snapshot.type(urls.ENDPOINT)
    head = response_head(type_url=urls.ENDPOINT, version=snap.version, nonce="7", identifier="pavilion-test")
    response = discovery_pb2.DiscoveryResponse.FromString(head + snap.response_fields)
    assert response.version_info == snap.version
    assert response.nonce == "7"
    assert response.control_plane.identifier == "pavilion-test"
    assert [item.type_url for item in response.resources] == [urls.ENDPOINT, urls.ENDPOINT]
    assert response.resources[1].value == snap.resources["billing"].serialized
    assert snap.resources["billing"].packed().value == snap.resources["billing"].serialized
    only = discovery_pb2.DiscoveryResponse.FromString(head + snap.select(["billing", "nope"])[0].response_field)
    assert len(only.resources) == 1


def test_every_known_type_is_present_even_when_empty() -> None:
    snapshot = build_snapshot({urls.CLUSTER: [cluster("a")]})
    assert set(snapshot.types) == {*urls.ADS_ORDER, urls.VIRTUAL_HOST}
    assert snapshot.type(urls.LISTENER).resources == {}
    assert snapshot.resource_count() == 1


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="no xDS type"):
        build_snapshot({"type.googleapis.com/envoy.config.cluster.v3.Nope": []})
    with pytest.raises(ValueError, match="cannot be served"):
        build_snapshot({urls.ENDPOINT: [cluster("a")]})
    with pytest.raises(ValueError, match="named 'a'"):
        build_snapshot({urls.CLUSTER: [cluster("a"), cluster_pb2.Cluster(name="a")]})


def test_endpoint_resources_are_named_by_cluster_name() -> None:
    snapshot = build_snapshot({urls.ENDPOINT: [endpoints("svc", 1)]})
    assert list(snapshot.type(urls.ENDPOINT).resources) == ["svc"]

"""/status "synced": a node holds everything its group is served, not only what it subscribed so far.

Envoy subscribes one type after another (endpoints after clusters, route tables after listeners, on
Delta virtual hosts after route tables), so a node that acked its clusters and endpoints is still
half configured."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controlplane import resources as urls
from controlplane.server.stream import StreamState
from controlplane.snapshot import Snapshot, build_snapshot
from pavilion.v1 import tenant_pb2
from tests.controlplane.ads_client import AdsClient
from tests.controlplane.delta_client import DeltaClient
from tests.controlplane.xds_fixtures import ToyConfig, listener, route_table, toy_translate
from tests.controlplane.xds_plane import Plane, running_plane

ENVOY_TYPES = (urls.CLUSTER, urls.ENDPOINT, urls.LISTENER, urls.ROUTE)
# What a scripted Envoy asks for, type by type, in Envoy's order: (type URL, names).
FIRST: tuple[tuple[str, tuple[str, ...]], ...] = ((urls.CLUSTER, ()), (urls.ENDPOINT, ("accounts", "billing")))
THEN: tuple[tuple[str, tuple[str, ...]], ...] = ((urls.LISTENER, ()), (urls.ROUTE, ("public",)))
CONFIG = ToyConfig(services={"accounts": 9001, "billing": 9002})


def edge_snapshot(config: ToyConfig = CONFIG) -> Snapshot:
    return build_snapshot(toy_translate(config, "eu-west"))


def acked(kind: str, snapshot: Snapshot, type_urls: tuple[str, ...]) -> StreamState:
    """A stream that subscribed `type_urls` and acked each at the version `snapshot` serves."""
    stream = StreamState(peer="test", kind=kind)
    for type_url in type_urls:
        state = stream.type(type_url)
        state.subscribed = True
        state.acked_version = state.sent_version = snapshot.type(type_url).version
    return stream


@pytest.mark.parametrize("kind", ["sotw", "delta"])
def test_clusters_and_endpoints_acked_with_listeners_and_routes_never_subscribed_is_not_synced(
        kind: str) -> None:
    snapshot = edge_snapshot()
    stream = acked(kind, snapshot, (urls.CLUSTER, urls.ENDPOINT))
    assert not stream.synced(snapshot)
    expected = [urls.LISTENER, urls.ROUTE, *([urls.VIRTUAL_HOST] if kind == "delta" else [])]
    assert stream.pending(snapshot) == expected
    assert stream.status(snapshot)["pending"] == [url.rsplit(".", 1)[-1] for url in expected]
    assert stream.status(snapshot)["synced"] is False


def test_sotw_holding_every_envoy_type_is_synced_without_virtual_hosts() -> None:
    snapshot = edge_snapshot()
    assert snapshot.type(urls.VIRTUAL_HOST).resources  # served, but to Delta streams only
    stream = acked("sotw", snapshot, ENVOY_TYPES)
    assert stream.synced(snapshot) and stream.pending(snapshot) == []
    assert stream.status(snapshot)["synced"] is True


def test_delta_is_synced_only_once_it_acked_the_virtual_hosts() -> None:
    snapshot = edge_snapshot()
    stream = acked("delta", snapshot, ENVOY_TYPES)
    assert stream.pending(snapshot) == [urls.VIRTUAL_HOST]
    hosts = stream.type(urls.VIRTUAL_HOST)
    hosts.subscribed = True
    assert not stream.synced(snapshot)  # subscribed, nothing acked yet
    hosts.acked_version = snapshot.type(urls.VIRTUAL_HOST).version
    assert stream.synced(snapshot)


def test_a_subscribed_type_behind_the_served_version_is_not_synced() -> None:
    before = edge_snapshot()
    stream = acked("sotw", before, ENVOY_TYPES)
    after = edge_snapshot(ToyConfig(services={"accounts": 9001, "billing": 9555}))  # endpoints changed
    assert stream.pending(after) == [urls.ENDPOINT]
    stream.type(urls.ENDPOINT).acked_version = after.type(urls.ENDPOINT).version
    assert stream.synced(after)


def test_an_empty_type_is_not_required_but_an_empty_subscribed_one_must_be_acked() -> None:
    # No service: no cluster and no endpoints. Envoy still asks for clusters (a wildcard) but never
    # for endpoints, since no cluster names any.
    snapshot = build_snapshot({urls.LISTENER: [listener("public", 10080, "public")],
                               urls.ROUTE: [route_table("public", [])]})
    assert not snapshot.type(urls.CLUSTER).resources and not snapshot.type(urls.ENDPOINT).resources
    stream = acked("delta", snapshot, (urls.LISTENER, urls.ROUTE, urls.VIRTUAL_HOST))
    assert stream.synced(snapshot)
    clusters = stream.type(urls.CLUSTER)
    clusters.subscribed = True
    assert stream.pending(snapshot) == [urls.CLUSTER]  # asked for: its (empty) version must be acked
    clusters.acked_version = snapshot.type(urls.CLUSTER).version
    assert stream.synced(snapshot)


def test_a_pavilion_node_needs_only_its_own_type() -> None:
    snapshot = build_snapshot({**{type_url: [] for type_url in urls.ADS_ORDER},
                               urls.TENANT_POLICY: [tenant_pb2.TenantPolicy(id="acme")]})
    stream = StreamState(peer="test", kind="sotw")
    assert stream.pending(snapshot) == [urls.TENANT_POLICY]
    stream = acked("sotw", snapshot, (urls.TENANT_POLICY,))
    assert stream.synced(snapshot)


def test_without_a_snapshot_for_its_group_a_node_is_not_synced() -> None:
    stream = acked("sotw", edge_snapshot(), ENVOY_TYPES)
    assert not stream.synced(None)
    assert stream.status(None)["synced"] is False


# Through the servers: the versions each protocol really records as acked.

@pytest.fixture
async def plane() -> AsyncIterator[Plane]:
    async with running_plane() as running:
        yield running


def node(plane: Plane) -> dict[str, object]:
    nodes = plane.board.render()["nodes"]
    assert len(nodes) == 1
    return dict(nodes[0])


async def test_sotw_through_the_server_is_synced_once_every_envoy_type_is_acked(plane: Plane) -> None:
    client = AdsClient(plane.channel)
    for type_url, wanted in FIRST:
        await client.request(type_url, wanted)
        await client.ack(await client.response(), wanted)
    await client.silence(0.2)
    assert node(plane)["synced"] is False and plane.board.render()["synced"] is False
    assert node(plane)["pending"] == ["Listener", "RouteConfiguration"]
    for type_url, wanted in THEN:
        await client.request(type_url, wanted)
        await client.ack(await client.response(), wanted)
    await client.silence(0.2)
    assert node(plane)["synced"] is True and node(plane)["pending"] == []
    assert plane.board.render()["synced"] is True
    await client.close()


async def test_delta_through_the_server_is_synced_once_it_acked_the_virtual_hosts_and_after_a_change(
        plane: Plane) -> None:
    client = DeltaClient(plane.channel)
    for type_url, wanted in (*FIRST, *THEN):
        await client.request(type_url, wanted)
        await client.ack(await client.response())
    await client.silence(0.2)
    assert node(plane)["synced"] is False and node(plane)["pending"] == ["VirtualHost"]
    await client.request(urls.VIRTUAL_HOST)  # as Envoy 1.40 asks: no names
    await client.ack(await client.response())
    await client.silence(0.2)
    assert node(plane)["synced"] is True and plane.board.render()["synced"] is True

    # A new route: only the virtual host changes, and only it is sent; its ACK brings the node back in sync.
    await plane.cache.install(ToyConfig(services={"accounts": 9001, "billing": 9002},
                                        paths={"billing": "/v2/billing"}), "v2")
    vhds = await client.response()
    assert vhds.type_url == urls.VIRTUAL_HOST
    assert node(plane)["synced"] is False and node(plane)["pending"] == ["VirtualHost"]
    await client.ack(vhds)
    await client.silence(0.2)
    assert node(plane)["synced"] is True
    await client.close()

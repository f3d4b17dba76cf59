from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from envoy.config.endpoint.v3 import endpoint_pb2

from controlplane import resources as urls
from controlplane.cache import SnapshotCache
from controlplane.server.ads import SERVICE, AdsServer
from controlplane.status import StatusBoard
from pavilion.grpc_server import GrpcServer
from pavilion.log import configure_logging
from tests.controlplane.ads_client import AdsClient
from tests.controlplane.xds_fixtures import ToyConfig, toy_translate


@pytest.fixture(autouse=True)
def _log_to_a_stream_that_stays_open() -> None:
    # Other tests run `pavilion.cli.main`, which points structlog at pytest's captured stderr; that file is
    # closed once they end, and a logger first used afterwards would write to it.
    configure_logging("warning", "console", io.StringIO())

CONFIG = ToyConfig(services={"accounts": 9001, "billing": 9002}, offset={"us-east": 100})
IDENTIFIER = "pavilion-test"
HOLD = 1.0  # seconds routes wait for a CDS ACK that does not come


@dataclass
class Plane:
    cache: SnapshotCache
    board: StatusBoard
    channel: grpc.aio.Channel

    def client(self, **kwargs: str) -> AdsClient:
        return AdsClient(self.channel, **kwargs)


@pytest.fixture
async def plane() -> AsyncIterator[Plane]:
    cache = SnapshotCache(toy_translate)
    board = StatusBoard(cache, identifier=IDENTIFIER)
    ads = AdsServer(cache, board, identifier=IDENTIFIER, hold_seconds=HOLD)
    server = GrpcServer("127.0.0.1", 0, register=ads.register, service_names=[SERVICE])
    port = await server.start()
    await cache.install(CONFIG, "v1")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Plane(cache, board, channel)
    finally:
        await channel.close()
        await server.stop(0)


def names(response: object) -> list[str]:
    out = []
    for item in response.resources:  # type: ignore[attr-defined]
        if item.type_url == urls.ENDPOINT:
            out.append(endpoint_pb2.ClusterLoadAssignment.FromString(item.value).cluster_name)
        else:
            from envoy.config.cluster.v3 import cluster_pb2
            from envoy.config.listener.v3 import listener_pb2
            from envoy.config.route.v3 import route_pb2
            cls = {urls.CLUSTER: cluster_pb2.Cluster, urls.LISTENER: listener_pb2.Listener,
                   urls.ROUTE: route_pb2.RouteConfiguration}[item.type_url]
            out.append(cls.FromString(item.value).name)
    return out


async def test_wildcard_cds_gets_full_state_and_an_ack_gets_no_answer(plane: Plane) -> None:
    client = plane.client()
    await client.request(urls.CLUSTER)
    response = await client.response()
    assert response.type_url == urls.CLUSTER
    assert names(response) == ["accounts", "billing"]
    assert response.control_plane.identifier == IDENTIFIER
    assert response.version_info == plane.cache.current(("eu-west", "edge")).type(urls.CLUSTER).version  # type: ignore[arg-type, union-attr]
    await client.ack(response)
    await client.silence()
    node = plane.board.render()["nodes"][0]
    assert node["node_id"] == "envoy-1" and node["region"] == "eu-west" and node["role"] == "edge"
    assert node["types"]["Cluster"]["acked_version"] == response.version_info
    assert node["synced"] is False  # endpoints, listeners and routes are served too, not yet subscribed
    await client.close()


async def test_eds_sends_only_named_resources_and_a_new_name_even_unchanged(plane: Plane) -> None:
    client = plane.client()
    await client.request(urls.ENDPOINT, ("accounts",))
    first = await client.response()
    assert names(first) == ["accounts"]
    await client.ack(first, ("accounts", "billing"))
    second = await client.response()
    assert second.version_info == first.version_info
    assert names(second) == ["accounts", "billing"]
    assert second.nonce != first.nonce
    await client.ack(second, ("accounts", "billing"))
    await client.silence()
    await client.close()


async def test_empty_eds_request_is_not_a_wildcard(plane: Plane) -> None:
    client = plane.client()
    await client.request(urls.ENDPOINT)
    response = await client.response()
    assert names(response) == []
    await client.close()


async def test_groups_get_their_own_region_endpoints(plane: Plane) -> None:
    eu, us = plane.client(node_id="eu"), plane.client(node_id="us", region="us-east")
    await eu.request(urls.ENDPOINT, ("accounts",))
    await us.request(urls.ENDPOINT, ("accounts",))
    eu_port = endpoint_pb2.ClusterLoadAssignment.FromString((await eu.response()).resources[0].value)
    us_port = endpoint_pb2.ClusterLoadAssignment.FromString((await us.response()).resources[0].value)
    assert eu_port.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value == 9001
    assert us_port.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value == 9101
    assert {str(group) for group in plane.cache.groups()} == {"eu-west/edge", "us-east/edge"}
    await eu.close()
    await us.close()


async def test_stale_nonce_is_ignored_and_nack_is_never_answered_with_the_same_version(plane: Plane) -> None:
    client = plane.client()
    await client.request(urls.CLUSTER)
    first = await client.response()
    await client.ack(first)
    # An ACK the server reads after it sent v2 carries a stale nonce and is rightly ignored: let it land first.
    await acked(plane, "Cluster", first.version_info)
    await plane.cache.install(ToyConfig(services={"accounts": 9001}), "v2")
    second = await client.response()
    assert names(second) == ["accounts"]
    # an old nonce is stale, even when it claims an error
    await client.request(urls.CLUSTER, version=first.version_info, nonce=first.nonce, error="old news")
    await client.silence()
    await client.request(urls.CLUSTER, version=first.version_info, nonce=second.nonce, error="cluster bad: boom")
    await client.silence(0.5)
    node = plane.board.render()["nodes"][0]
    assert node["types"]["Cluster"]["last_nack"]["error"] == "cluster bad: boom"
    assert node["types"]["Cluster"]["last_nack"]["version"] == second.version_info
    assert node["types"]["Cluster"]["acked_version"] == first.version_info
    # a fix is a new version, and it is sent
    await plane.cache.install(ToyConfig(services={"accounts": 9001, "zeta": 1}), "v3")
    third = await client.response()
    assert names(third) == ["accounts", "zeta"]
    assert third.version_info not in (first.version_info, second.version_info)
    await client.close()


async def test_first_request_with_foreign_version_and_nonce_is_served(plane: Plane) -> None:
    client = plane.client()
    await client.request(urls.CLUSTER, version="other-replica-version", nonce="other-replica-nonce")
    response = await client.response()
    assert names(response) == ["accounts", "billing"]
    await client.close()


async def test_a_request_without_type_url_or_first_node_is_refused(plane: Plane) -> None:
    client = plane.client()
    await client.request("")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.response()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    nameless = plane.client()
    await nameless.request(urls.CLUSTER, with_node=False)
    with pytest.raises(grpc.aio.AioRpcError) as no_node:
        await nameless.response()
    assert "node" in (no_node.value.details() or "")


async def test_change_pushes_clusters_first_and_the_rest_after_their_ack(plane: Plane) -> None:
    client = plane.client()
    acked = {}
    await client.request(urls.CLUSTER)
    acked[urls.CLUSTER] = await client.response()
    await client.ack(acked[urls.CLUSTER])
    await client.request(urls.ENDPOINT, ("accounts", "billing"))
    acked[urls.ENDPOINT] = await client.response()
    await client.ack(acked[urls.ENDPOINT], ("accounts", "billing"))
    await client.request(urls.LISTENER)
    acked[urls.LISTENER] = await client.response()
    await client.ack(acked[urls.LISTENER])
    await client.request(urls.ROUTE, ("public",))
    acked[urls.ROUTE] = await client.response()
    await client.ack(acked[urls.ROUTE], ("public",))
    await client.silence()

    # new service: clusters, endpoints and routes change; the listener does not
    await plane.cache.install(ToyConfig(services={"accounts": 9001, "billing": 9002, "carts": 9003},
                                        timeout_ms=2000), "v2")
    cds = await client.response()
    assert cds.type_url == urls.CLUSTER
    assert names(cds) == ["accounts", "billing", "carts"]
    # changed clusters get their endpoints again right away: Envoy warms them only on fresh endpoints
    eds = await client.response()
    assert eds.type_url == urls.ENDPOINT
    await client.silence(0.4)  # routes wait until this stream took the clusters
    await client.ack(eds, ("accounts", "billing", "carts"))
    newly_named = await client.response()
    assert names(newly_named) == ["accounts", "billing", "carts"]
    await client.ack(newly_named, ("accounts", "billing", "carts"))
    await client.silence(0.2)
    await client.ack(cds)
    rds = await client.response()
    assert rds.type_url == urls.ROUTE  # the listener did not change, so it is not sent
    await client.ack(rds, ("public",))
    await client.silence()
    assert plane.board.render()["synced"] is True
    await client.close()


async def acked(plane: Plane, type_name: str, version: str, deadline: float = 10.0) -> None:
    """Wait until the board shows `version` of `type_name` ACKed by the only node."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    while loop.time() < give_up:
        nodes = plane.board.render()["nodes"]
        if nodes and nodes[0]["types"].get(type_name, {}).get("acked_version") == version:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{type_name} {version} was not ACKed within {deadline} s: {plane.board.render()}")


async def subscribed_and_acked(client: AdsClient) -> None:
    for type_url, wanted in ((urls.CLUSTER, ()), (urls.ENDPOINT, ("accounts", "billing")),
                             (urls.LISTENER, ()), (urls.ROUTE, ("public",))):
        await client.request(type_url, wanted)
        await client.ack(await client.response(), wanted)
    await client.silence(0.2)


async def test_a_removed_cluster_lingers_until_the_routes_stop_naming_it(plane: Plane) -> None:
    client = plane.client()
    await subscribed_and_acked(client)
    await plane.cache.install(ToyConfig(services={"accounts": 9001, "carts": 9003}), "v2")
    target = plane.cache.current(("eu-west", "edge")).type(urls.CLUSTER).version  # type: ignore[arg-type, union-attr]
    cds = await client.response()
    assert names(cds) == ["accounts", "billing", "carts"]  # billing is still routed to by the proxy
    assert cds.version_info != target
    eds = await client.response()
    await client.ack(eds, ("accounts", "billing", "carts"))
    await client.ack(await client.response(), ("accounts", "billing", "carts"))  # carts' endpoints
    await client.ack(cds)
    rds = await client.response()
    assert rds.type_url == urls.ROUTE
    await client.silence(0.2)  # billing stays until the routes are acked
    await client.ack(rds, ("public",))
    final = await client.response()
    assert final.type_url == urls.CLUSTER
    assert names(final) == ["accounts", "carts"]
    assert final.version_info == target
    await client.ack(final)
    await client.silence(0.2)
    assert plane.board.render()["synced"] is True
    await client.close()


async def test_a_removed_cluster_no_route_named_goes_at_once(plane: Plane) -> None:
    client = plane.client()
    for type_url in (urls.CLUSTER, urls.LISTENER):  # no routes subscribed: nothing can name the cluster
        await client.request(type_url)
        await client.ack(await client.response())
    await plane.cache.install(ToyConfig(services={"accounts": 9001}), "v2")
    cds = await client.response()
    assert names(cds) == ["accounts"]
    await client.close()


async def test_routes_go_anyway_when_the_clusters_are_never_acked(plane: Plane) -> None:
    client = plane.client()
    await subscribed_and_acked(client)
    await plane.cache.install(ToyConfig(services={"accounts": 9001, "billing": 9002, "carts": 9003}), "v2")
    cds = await client.response()
    assert cds.type_url == urls.CLUSTER
    eds = await client.response()
    assert eds.type_url == urls.ENDPOINT
    await client.silence(HOLD * 0.6)
    rds = await client.response(HOLD * 2)
    assert rds.type_url == urls.ROUTE
    await client.silence(0.3)  # and nothing spins after the hold expired
    await client.close()

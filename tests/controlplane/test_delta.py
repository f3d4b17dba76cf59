"""Delta ADS driven by a scripted client: per-resource versions, subscriptions, removals, reconnects,
ACK/NACK and the make-before-break order."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controlplane import resources as urls
from controlplane.cache import Group
from tests.controlplane.delta_client import DeltaClient, names, versions
from tests.controlplane.xds_fixtures import ToyConfig
from tests.controlplane.xds_plane import IDENTIFIER, Plane, running_plane

EU = Group("eu-west", "edge")


@pytest.fixture
async def plane() -> AsyncIterator[Plane]:
    async with running_plane() as running:
        yield running


def hashes(plane: Plane, type_url: str) -> dict[str, str]:
    snapshot = plane.cache.current(EU)
    assert snapshot is not None
    return snapshot.type(type_url).hashes()


async def synced(client: DeltaClient) -> dict[str, dict[str, str]]:
    """Subscribe to everything as Envoy does (legacy wildcard for CDS/LDS/VHDS, names for EDS/RDS) and
    ack it all."""
    held: dict[str, dict[str, str]] = {}
    for type_url, wanted in ((urls.CLUSTER, ()), (urls.ENDPOINT, ("accounts", "billing")),
                             (urls.LISTENER, ()), (urls.ROUTE, ("public",)), (urls.VIRTUAL_HOST, ())):
        await client.request(type_url, wanted)
        response = await client.response()
        assert response.type_url == type_url
        held[type_url] = versions(response)
        await client.ack(response)
    await client.silence(0.2)
    return held


async def test_legacy_wildcard_cds_gets_every_cluster_versioned_by_hash_and_an_ack_is_not_answered(
        plane: Plane) -> None:
    client = DeltaClient(plane.channel)
    await client.request(urls.CLUSTER)
    response = await client.response()
    assert names(response) == ["accounts", "billing"]
    assert versions(response) == hashes(plane, urls.CLUSTER)
    assert response.system_version_info == plane.cache.current(EU).type(urls.CLUSTER).version  # type: ignore[union-attr]
    assert response.control_plane.identifier == IDENTIFIER
    assert list(response.removed_resources) == []
    await client.ack(response)
    await client.silence()
    node = plane.board.render()["nodes"][0]
    assert node["kind"] == "delta" and node["region"] == "eu-west"
    assert node["types"]["Cluster"]["acked_version"] == response.system_version_info
    assert node["synced"] is False  # endpoints, listeners and routes are served too, not yet subscribed
    await client.close()


async def test_star_is_a_wildcard_and_an_empty_eds_request_is_not(plane: Plane) -> None:
    client = DeltaClient(plane.channel)
    await client.request(urls.ENDPOINT)
    await client.silence()  # nothing subscribed
    await client.request(urls.ENDPOINT, ("*",))
    response = await client.response()
    assert names(response) == ["accounts", "billing"]
    await client.close()


async def test_subscribe_unsubscribe_resubscribe_and_unknown_names(plane: Plane) -> None:
    client = DeltaClient(plane.channel)
    await client.request(urls.ENDPOINT, ("accounts",))
    first = await client.response()
    assert names(first) == ["accounts"]
    await client.ack(first)
    await client.request(urls.ENDPOINT, ("billing", "nosuch"))
    second = await client.response()
    assert names(second) == ["billing"]  # accounts is not sent again
    assert list(second.removed_resources) == ["nosuch"]  # asked for, does not exist: said once
    await client.ack(second)
    await client.silence()
    await client.request(urls.ENDPOINT, unsubscribe=("accounts",))
    await client.silence()  # an unsubscription is not answered
    await client.request(urls.ENDPOINT, ("accounts",))
    again = await client.response()
    assert names(again) == ["accounts"]  # newly subscribed again: sent though unchanged
    assert not again.removed_resources
    await client.close()


async def test_a_change_sends_only_the_resources_that_changed(plane: Plane) -> None:
    client = DeltaClient(plane.channel)
    before = await synced(client)
    await plane.cache.install(ToyConfig(services={"accounts": 9001, "billing": 9555}), "v2")
    eds = await client.response()
    assert eds.type_url == urls.ENDPOINT
    assert names(eds) == ["billing"] and not eds.removed_resources  # accounts unchanged: not sent
    assert versions(eds)["billing"] != before[urls.ENDPOINT]["billing"]
    await client.ack(eds)
    await client.silence()  # clusters, listener and routes are unchanged: nothing else goes
    assert plane.board.render()["synced"] is True
    await client.close()


async def test_reconnect_with_initial_versions_gets_only_what_differs(plane: Plane) -> None:
    first = DeltaClient(plane.channel)
    held = await synced(first)
    await first.close()
    again = DeltaClient(plane.channel, node_id="envoy-1")
    await again.request(urls.CLUSTER, initial=held[urls.CLUSTER])
    await again.silence()  # holds exactly what we would send
    stale = dict(held[urls.ENDPOINT], billing="0123456789abcdef", gone="0123456789abcdef")
    await again.request(urls.ENDPOINT, ("accounts", "billing", "gone"), initial=stale)
    response = await again.response()
    assert names(response) == ["billing"]
    assert list(response.removed_resources) == ["gone"]
    await again.close()


async def test_a_nacked_resource_is_never_resent_and_a_fix_is(plane: Plane) -> None:
    client = DeltaClient(plane.channel)
    await synced(client)
    await plane.cache.install(ToyConfig(services={"accounts": 9001, "billing": 9555}), "v2")
    rejected = await client.response()
    assert names(rejected) == ["billing"]
    await client.request(urls.ENDPOINT, nonce="not-the-latest", error="old news")  # not a NACK of this response
    await client.nack(rejected, "endpoint bad: boom")
    await client.silence(0.5)
    node = plane.board.render()["nodes"][0]
    assert node["types"]["ClusterLoadAssignment"]["last_nack"]["error"] == "endpoint bad: boom"
    assert node["types"]["ClusterLoadAssignment"]["last_nack"]["version"] == rejected.system_version_info
    await plane.cache.install(ToyConfig(services={"accounts": 9001, "billing": 9556}), "v3")
    fixed = await client.response()
    assert names(fixed) == ["billing"]
    assert versions(fixed)["billing"] != versions(rejected)["billing"]
    await client.close()


async def test_first_request_with_an_unknown_nonce_is_served(plane: Plane) -> None:
    client = DeltaClient(plane.channel)
    await client.request(urls.CLUSTER, nonce="other-replica-nonce")
    assert names(await client.response()) == ["accounts", "billing"]
    await client.close()


async def test_new_clusters_go_first_and_removed_ones_only_after_the_routes(plane: Plane) -> None:
    client = DeltaClient(plane.channel)
    await synced(client)
    await plane.cache.install(ToyConfig(services={"accounts": 9001, "carts": 9003}), "v2")
    cds = await client.response()
    assert cds.type_url == urls.CLUSTER
    assert names(cds) == ["carts"] and not cds.removed_resources  # billing may still be routed to
    await client.silence(0.3)  # routes wait for the clusters' ACK
    await client.ack(cds)
    vhds = await client.response()  # the route table's shell did not change: only its virtual host goes
    assert vhds.type_url == urls.VIRTUAL_HOST and names(vhds) == ["public/all"]
    await client.silence(0.2)  # billing stays until the routes are acked
    await client.ack(vhds)
    final = await client.response()
    assert final.type_url == urls.CLUSTER
    assert list(final.removed_resources) == ["billing"] and not final.resources
    await client.ack(final)
    endpoints = await client.response()  # its endpoints go after the cluster, never before
    assert endpoints.type_url == urls.ENDPOINT and list(endpoints.removed_resources) == ["billing"]
    await client.ack(endpoints)
    await client.silence(0.2)
    assert plane.board.render()["synced"] is True
    await client.close()


async def test_a_nack_of_an_earlier_response_still_in_flight_counts(plane: Plane) -> None:
    client = DeltaClient(plane.channel)
    await synced(client)
    await plane.cache.install(ToyConfig(services={"accounts": 9001, "billing": 9555}), "v2")
    earlier = await client.response()
    await plane.cache.install(ToyConfig(services={"accounts": 9444, "billing": 9555}), "v3")
    later = await client.response()
    assert names(earlier) == ["billing"] and names(later) == ["accounts"]
    await client.nack(earlier, "billing refused")
    await client.ack(later)
    await client.silence()
    endpoints = plane.board.render()["nodes"][0]["types"]["ClusterLoadAssignment"]
    assert endpoints["last_nack"] == {**endpoints["last_nack"], "error": "billing refused",
                                      "version": earlier.system_version_info}
    assert endpoints["acked_version"] == later.system_version_info
    await client.close()

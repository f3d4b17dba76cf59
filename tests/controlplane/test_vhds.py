"""Route tables over VHDS on Delta streams: a shell per table, each virtual host its own resource, so
an edit sends the virtual hosts it changed; SotW streams keep whole tables."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from envoy.config.core.v3 import config_source_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2

from controlplane import resources as urls
from controlplane.snapshot import build_snapshot
from controlplane.vhds import namespace, split_table
from tests.controlplane.ads_client import AdsClient
from tests.controlplane.delta_client import DeltaClient, names, versions
from tests.controlplane.vhds_plane import CONFIG, EU, HOSTS, SERVICES
from tests.controlplane.xds_fixtures import ToyConfig, route_table
from tests.controlplane.xds_plane import Plane, running_plane


@pytest.fixture
async def plane() -> AsyncIterator[Plane]:
    async with running_plane(config=CONFIG) as running:
        yield running


def test_a_table_splits_into_a_shell_over_ads_and_virtual_hosts_named_by_it() -> None:
    table = route_table("public", ["accounts", "billing"], own_hosts=True)
    table.request_headers_to_remove.append("x-internal")
    shell, hosts = split_table(table)
    assert shell.name == "public" and not shell.virtual_hosts
    assert list(shell.request_headers_to_remove) == ["x-internal"]  # the table's own fields stay
    assert shell.vhds.config_source.HasField("ads")
    assert shell.vhds.config_source.resource_api_version == config_source_pb2.ApiVersion.V3
    assert [host.name for host in hosts] == ["public/accounts.test", "public/billing.test"]
    assert [namespace(host.name) for host in hosts] == ["public", "public"]
    assert [list(host.domains) for host in hosts] == [["accounts.test"], ["billing.test"]]
    assert hosts[0].routes[0] == table.virtual_hosts[0].routes[0]


def test_a_snapshot_serves_the_shells_under_the_tables_version() -> None:
    snapshot = build_snapshot({urls.ROUTE: [route_table("public", ["accounts", "billing"], own_hosts=True)]})
    routes = snapshot.type(urls.ROUTE)
    assert routes.delta is not None and routes.delta.version == routes.version
    assert route_pb2.RouteConfiguration.FromString(routes.resources["public"].serialized).virtual_hosts
    assert not route_pb2.RouteConfiguration.FromString(routes.delta.resources["public"].serialized).virtual_hosts
    assert snapshot.type(urls.VIRTUAL_HOST).namespaces == {"public": ["public/accounts.test", "public/billing.test"]}
    with pytest.raises(ValueError, match="derived from the route tables"):
        build_snapshot({urls.VIRTUAL_HOST: []})


async def subscribed(client: DeltaClient) -> None:
    """As Envoy 1.40 on Delta ADS: clusters, endpoints, listeners, the listener's table, then the virtual
    hosts with no names (a legacy wildcard: Envoy sorts them into its tables by namespace)."""
    for type_url, wanted in ((urls.CLUSTER, ()), (urls.ENDPOINT, tuple(SERVICES)), (urls.LISTENER, ()),
                             (urls.ROUTE, ("public",)), (urls.VIRTUAL_HOST, ())):
        await client.request(type_url, wanted)
        await client.ack(await client.response())
    await client.silence(0.2)


@pytest.mark.parametrize("subscribe", [(), ("public",)], ids=["wildcard", "by-table"])
async def test_delta_gets_a_shell_then_every_virtual_host_of_the_table(plane: Plane,
                                                                       subscribe: tuple[str, ...]) -> None:
    client = DeltaClient(plane.channel)
    await client.request(urls.ROUTE, ("public",))
    rds = await client.response()
    shell = route_pb2.RouteConfiguration.FromString(rds.resources[0].resource.value)
    assert names(rds) == ["public"] and not shell.virtual_hosts and shell.vhds.config_source.HasField("ads")
    await client.ack(rds)
    await client.silence(0.1)
    assert "VirtualHost" not in plane.board.render()["nodes"][0]["types"]  # nothing shown before it is asked
    # Envoy 1.40 asks with no names; a name is taken as the table's (a namespace) or a virtual host's.
    await client.request(urls.VIRTUAL_HOST, subscribe)
    vhds = await client.response()
    assert names(vhds) == HOSTS
    hosts = [route_components_pb2.VirtualHost.FromString(r.resource.value) for r in vhds.resources]
    assert [h.name for h in hosts] == HOSTS and list(hosts[0].domains) == ["accounts.test"]
    assert versions(vhds) == plane.cache.current(EU).type(urls.VIRTUAL_HOST).hashes()  # type: ignore[union-attr]
    await client.ack(vhds)
    await client.silence()
    assert plane.board.render()["nodes"][0]["types"]["VirtualHost"]["acked_version"] == vhds.system_version_info
    await client.close()


async def test_an_edit_of_one_route_sends_its_virtual_host_alone(plane: Plane) -> None:
    client = DeltaClient(plane.channel)
    await subscribed(client)
    await plane.cache.install(ToyConfig(services=SERVICES, own_hosts=True, paths={"billing": "/v2/billing"}), "v2")
    vhds = await client.response()
    assert vhds.type_url == urls.VIRTUAL_HOST  # no cluster, endpoint, listener or table went out
    assert names(vhds) == ["public/billing.test"] and not vhds.removed_resources
    assert route_components_pb2.VirtualHost.FromString(vhds.resources[0].resource.value).routes[0].match.prefix \
        == "/v2/billing"
    await client.ack(vhds)
    await client.silence()
    assert plane.board.render()["synced"] is True
    await client.close()


async def test_a_removed_host_is_named_and_its_cluster_goes_only_after(plane: Plane) -> None:
    client = DeltaClient(plane.channel)
    await subscribed(client)
    await plane.cache.install(ToyConfig(services={"accounts": 9001, "carts": 9003}, own_hosts=True), "v2")
    vhds = await client.response()  # nothing to add to the clusters: the virtual hosts go first
    assert vhds.type_url == urls.VIRTUAL_HOST
    assert list(vhds.removed_resources) == ["public/billing.test"] and not vhds.resources
    await client.silence(0.2)  # billing's cluster stays until the proxy took the virtual hosts
    await client.ack(vhds)
    cds = await client.response()
    assert cds.type_url == urls.CLUSTER and list(cds.removed_resources) == ["billing"]
    await client.close()


async def test_virtual_hosts_wait_for_their_table_and_a_new_table_gets_all_of_its(plane: Plane) -> None:
    client = DeltaClient(plane.channel)
    await client.request(urls.VIRTUAL_HOST)  # before any table: Envoy would drop them
    await client.silence(0.2)
    await client.request(urls.ROUTE, ("public",))
    rds = await client.response()
    await client.silence(0.2)  # not before the proxy took the table
    await client.ack(rds)
    vhds = await client.response()
    assert names(vhds) == HOSTS
    await client.ack(vhds)
    # The proxy drops the table, then wants it again: its virtual hosts come again, all of them.
    await client.request(urls.ROUTE, unsubscribe=("public",))
    gone = await client.response()  # the table's virtual hosts go with it
    assert gone.type_url == urls.VIRTUAL_HOST and sorted(gone.removed_resources) == HOSTS
    await client.ack(gone)
    await client.request(urls.ROUTE, ("public",))
    await client.ack(await client.response())
    assert names(await client.response()) == HOSTS
    await client.close()


async def test_a_new_host_waits_for_its_cluster(plane: Plane) -> None:
    client = DeltaClient(plane.channel)
    await subscribed(client)
    await plane.cache.install(ToyConfig(services={**SERVICES, "dogs": 9004}, own_hosts=True), "v2")
    cds = await client.response()
    assert cds.type_url == urls.CLUSTER and names(cds) == ["dogs"]
    await client.silence(0.3)  # the virtual host naming dogs waits for the clusters' ACK
    await client.ack(cds)
    vhds = await client.response()
    assert vhds.type_url == urls.VIRTUAL_HOST and names(vhds) == ["public/dogs.test"]
    await client.close()


async def test_a_table_with_no_virtual_hosts_is_answered_so_envoy_stops_waiting() -> None:
    # Envoy holds the listener's warming until an update of the table's namespace arrives.
    async with running_plane(config=ToyConfig(own_hosts=True)) as plane:
        client = DeltaClient(plane.channel)
        await client.request(urls.ROUTE, ("public",))
        await client.ack(await client.response())
        await client.request(urls.VIRTUAL_HOST)
        empty = await client.response()
        assert not empty.resources and list(empty.removed_resources) == ["public/"]
        await client.ack(empty)
        await client.silence()  # named once
        await client.close()


async def test_an_unknown_name_is_named_removed_once(plane: Plane) -> None:
    client = DeltaClient(plane.channel)
    await client.request(urls.VIRTUAL_HOST, ("internal", "public/billing.test"))
    response = await client.response()
    assert names(response) == ["public/billing.test"] and list(response.removed_resources) == ["internal"]
    await client.ack(response)
    await client.silence()
    await client.close()


async def test_a_reconnect_holding_the_virtual_hosts_gets_only_what_changed(plane: Plane) -> None:
    first = DeltaClient(plane.channel)
    await first.request(urls.ROUTE, ("public",))
    tables = await first.response()
    await first.ack(tables)
    await first.request(urls.VIRTUAL_HOST)
    held = versions(await first.response())
    await first.close()
    await plane.cache.install(ToyConfig(services=SERVICES, own_hosts=True, paths={"carts": "/basket"}), "v2")
    again = DeltaClient(plane.channel, node_id="envoy-1")
    await again.request(urls.ROUTE, ("public",), initial=versions(tables))  # the table itself did not change
    await again.request(urls.VIRTUAL_HOST, initial=held)
    response = await again.response()
    assert names(response) == ["public/carts.test"] and not response.removed_resources
    await again.close()


async def test_unsubscribing_a_table_forgets_its_virtual_hosts(plane: Plane) -> None:
    client = DeltaClient(plane.channel)
    await client.request(urls.VIRTUAL_HOST, ("public",))
    await client.ack(await client.response())
    await client.request(urls.VIRTUAL_HOST, unsubscribe=("public",))
    await client.silence(0.2)  # (and lets the server read the unsubscription before the change)
    await plane.cache.install(ToyConfig(services=SERVICES, own_hosts=True, paths={"carts": "/basket"}), "v2")
    await client.silence()  # neither the change nor a removal of what the proxy forgot
    await client.close()


async def test_sotw_keeps_whole_tables(plane: Plane) -> None:
    client = AdsClient(plane.channel)
    await client.request(urls.ROUTE, ("public",))
    rds = await client.response()
    table = route_pb2.RouteConfiguration.FromString(rds.resources[0].value)
    assert [host.name for host in table.virtual_hosts] == ["accounts.test", "billing.test", "carts.test"]
    assert not table.HasField("vhds")
    await client.close()

"""Delta streams in step share what they hold: the diff between two snapshots is computed once for every
stream holding exactly the older one, and a stream that leaves the step (a NACK, a reconnect with its
own versions, a subscription by name, an unsubscription, clusters kept for routes behind) still gets
exactly its own resources without changing what the others share."""

from __future__ import annotations

import gc
import weakref
from collections.abc import AsyncIterator

import pytest

import controlplane.snapshot as snapshots
from controlplane import resources as urls
from controlplane.server.stream import StreamState, TypeState
from controlplane.snapshot import EMPTY, Resource, TypeDiff, TypeSnapshot, build_type
from tests.controlplane.delta_client import DeltaClient, names, versions
from tests.controlplane.vhds_plane import CONFIG, EU, HOSTS, SERVICES
from tests.controlplane.xds_fixtures import ToyConfig, cluster
from tests.controlplane.xds_plane import Plane, running_plane


@pytest.fixture
async def plane() -> AsyncIterator[Plane]:
    async with running_plane(config=CONFIG) as running:
        yield running


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The names sent by every TypeDiff computed from here on, one entry per computation."""
    computed: list[tuple[str, ...]] = []

    def counting(send: tuple[Resource, ...], gone: tuple[str, ...]) -> TypeDiff:
        computed.append(tuple(resource.name for resource in send))
        return TypeDiff(send, gone)

    monkeypatch.setattr(snapshots, "TypeDiff", counting)
    return computed


def clusters(*names: str) -> TypeSnapshot:
    return build_type(urls.CLUSTER, [cluster(name, timeout_ms=1000 + len(name)) for name in names])


def test_a_diff_is_computed_once_per_pair_and_keeps_no_older_snapshot_alive(built: list[tuple[str, ...]]) -> None:
    older = clusters("accounts", "billing")
    newer = build_type(urls.CLUSTER, [cluster("accounts", timeout_ms=5), cluster("carts")])
    diff = newer.diff_from(older)
    assert [r.name for r in diff.send] == ["accounts", "carts"] and diff.gone == ("billing",)
    assert diff.delta_fields == b"".join(r.delta_field for r in diff.send)
    assert newer.diff_from(older) is diff and len(built) == 1  # the second stream reuses it
    assert [r.name for r in newer.diff_from(EMPTY).send] == ["accounts", "carts"] and len(built) == 2
    assert newer.diff_from(newer).send == () and newer.diff_from(newer).gone == ()
    gone = weakref.ref(older)
    del older, diff
    gc.collect()
    assert gone() is None  # the newer snapshot remembers its diffs, not the snapshots they came from
    lookalike = clusters("accounts", "billing")  # may even take the dead one's id: still computed afresh
    assert newer.diff_from(lookalike).gone == ("billing",)


def stream_of(plane: Plane, node_id: str) -> StreamState:
    (state,) = [s for s in plane.board.streams.values() if s.node_id == node_id]
    return state


def vhds(plane: Plane, node_id: str) -> TypeState:
    return stream_of(plane, node_id).types[urls.VIRTUAL_HOST]


async def subscribed(client: DeltaClient, hosts: tuple[str, ...] = ()) -> None:
    """As Envoy 1.40 on Delta ADS, virtual hosts with no names (a wildcard) unless `hosts` are given."""
    for type_url, wanted in ((urls.CLUSTER, ()), (urls.ENDPOINT, tuple(SERVICES)), (urls.LISTENER, ()),
                             (urls.ROUTE, ("public",)), (urls.VIRTUAL_HOST, hosts)):
        await client.request(type_url, wanted)
        await client.ack(await client.response())
    await client.silence(0.2)


async def two_in_step(plane: Plane) -> tuple[DeltaClient, DeltaClient]:
    """Two Envoys, envoy-1 and envoy-2, each subscribed to everything and holding all of it."""
    first, second = DeltaClient(plane.channel, node_id="envoy-1"), DeltaClient(plane.channel, node_id="envoy-2")
    await subscribed(first)
    await subscribed(second)
    return first, second


def served(plane: Plane, type_url: str) -> TypeSnapshot:
    snapshot = plane.cache.current(EU)
    assert snapshot is not None
    snap = snapshot.type(type_url)
    return snap.delta or snap


async def test_streams_in_step_share_what_they_hold_and_one_diff(plane: Plane, built: list[tuple[str, ...]]) -> None:
    first, second = await two_in_step(plane)
    one, two = vhds(plane, "envoy-1"), vhds(plane, "envoy-2")
    assert one.in_step is two.in_step is served(plane, urls.VIRTUAL_HOST)
    assert one.held is two.held and one.sent_resources is two.sent_resources  # one map for every stream
    built.clear()
    await plane.cache.install(ToyConfig(services=SERVICES, own_hosts=True, paths={"billing": "/v2"}), "v2")
    for client in (first, second):
        response = await client.response()
        assert response.type_url == urls.VIRTUAL_HOST and names(response) == ["public/billing.test"]
        assert not response.removed_resources
        await client.ack(response)
        await client.silence(0.2)
    assert built.count(("public/billing.test",)) == 1  # computed for the first stream, reused by the second
    now = served(plane, urls.VIRTUAL_HOST)
    assert one.in_step is two.in_step is now and one.held is now.hash_view and dict(one.held) == now.hashes()
    assert one.acked_resources is now.resources  # what route status counts, shared too
    # Types the change left alone follow the new snapshot: no stream keeps an older one alive.
    assert stream_of(plane, "envoy-1").types[urls.CLUSTER].in_step is served(plane, urls.CLUSTER)
    assert plane.board.render()["synced"] is True
    await first.close()
    await second.close()


async def test_a_nacked_change_is_not_resent_and_the_stream_stays_in_step(plane: Plane) -> None:
    first, second = await two_in_step(plane)
    await plane.cache.install(ToyConfig(services=SERVICES, own_hosts=True, paths={"billing": "/v2"}), "v2")
    refused = await first.response()
    await first.nack(refused, "virtual host public/billing.test: boom")
    await second.ack(await second.response())
    await first.silence(0.2)
    assert vhds(plane, "envoy-1").nack is not None and vhds(plane, "envoy-2").nack is None
    status = {node["node_id"]: node["types"]["VirtualHost"] for node in plane.board.render()["nodes"]}
    assert status["envoy-1"]["last_nack"]["version"] == refused.system_version_info
    assert status["envoy-1"]["acked_version"] != status["envoy-2"]["acked_version"] == refused.system_version_info
    await plane.cache.install(ToyConfig(services=SERVICES, own_hosts=True,
                                        paths={"billing": "/v2", "carts": "/basket"}), "v3")
    for client in (first, second):
        response = await client.response()
        assert names(response) == ["public/carts.test"]  # billing's refused version is not sent again
        await client.ack(response)
    await first.silence(0.2)
    assert vhds(plane, "envoy-1").held is vhds(plane, "envoy-2").held  # still in step with each other
    await first.close()
    await second.close()


async def test_a_reconnect_with_stale_versions_gets_its_own_resources_then_joins(plane: Plane) -> None:
    steady = DeltaClient(plane.channel, node_id="envoy-1")
    await subscribed(steady)
    current = served(plane, urls.VIRTUAL_HOST).hashes()
    stale = dict(current, **{"public/billing.test": "0123456789abcdef", "public/gone.test": "0123456789abcdef"})
    again = DeltaClient(plane.channel, node_id="envoy-2")
    await again.request(urls.ROUTE, ("public",), initial=served(plane, urls.ROUTE).hashes())
    await again.request(urls.VIRTUAL_HOST, initial=stale)
    response = await again.response()
    assert names(response) == ["public/billing.test"] and list(response.removed_resources) == ["public/gone.test"]
    assert versions(response) == {"public/billing.test": current["public/billing.test"]}
    await again.ack(response)
    await again.silence(0.2)
    assert vhds(plane, "envoy-2").held is vhds(plane, "envoy-1").held  # holds what is served: in step now
    await steady.close()
    await again.close()


async def test_a_reconnect_holding_everything_joins_the_streams_in_step(plane: Plane) -> None:
    steady = DeltaClient(plane.channel, node_id="envoy-1")
    await subscribed(steady)
    again = DeltaClient(plane.channel, node_id="envoy-2")
    await again.request(urls.ROUTE, ("public",), initial=served(plane, urls.ROUTE).hashes())
    await again.request(urls.VIRTUAL_HOST, initial=served(plane, urls.VIRTUAL_HOST).hashes())
    await again.silence(0.2)  # nothing differs: nothing is sent
    assert vhds(plane, "envoy-2").in_step is served(plane, urls.VIRTUAL_HOST)
    await plane.cache.install(ToyConfig(services=SERVICES, own_hosts=True, paths={"accounts": "/acc"}), "v2")
    for client in (steady, again):
        assert names(await client.response()) == ["public/accounts.test"]
    await steady.close()
    await again.close()


async def test_a_subscription_by_name_gets_only_its_names_beside_streams_in_step(plane: Plane) -> None:
    steady, named = DeltaClient(plane.channel, node_id="envoy-1"), DeltaClient(plane.channel, node_id="envoy-2")
    await subscribed(steady)
    await named.request(urls.VIRTUAL_HOST, ("public/billing.test",))
    first = await named.response()
    assert names(first) == ["public/billing.test"]
    await named.ack(first)
    await plane.cache.install(ToyConfig(services=SERVICES, own_hosts=True, paths={"carts": "/basket"}), "v2")
    assert names(await steady.response()) == ["public/carts.test"]
    await named.silence(0.3)  # carts is not among its names
    assert dict(vhds(plane, "envoy-2").held) == {"public/billing.test": versions(first)["public/billing.test"]}
    await plane.cache.install(ToyConfig(services=SERVICES, own_hosts=True,
                                        paths={"carts": "/basket", "billing": "/bill"}), "v3")
    assert names(await named.response()) == ["public/billing.test"]
    await steady.close()
    await named.close()


def test_changing_what_a_stream_holds_takes_it_out_of_step_on_a_copy() -> None:
    shared = clusters("accounts", "billing")
    one, two = TypeState(urls.CLUSTER), TypeState(urls.CLUSTER)
    for state in (one, two):
        state.in_step, state.held, state.sent_resources = shared, shared.hash_view, shared.resources
    own = two.own_held()
    own.pop("billing")
    assert two.in_step is None and two.held is own and list(own) == ["accounts"]
    assert one.in_step is shared and list(one.held) == list(shared.hash_view) == ["accounts", "billing"]
    assert two.own_held() is own  # copied once


async def test_one_stream_leaving_the_step_leaves_the_shared_maps_alone(plane: Plane) -> None:
    first, second = await two_in_step(plane)
    shared = served(plane, urls.VIRTUAL_HOST)
    await second.request(urls.VIRTUAL_HOST, unsubscribe=("public/carts.test",))  # the proxy forgets carts
    back = await second.response()  # the wildcard still covers it: it goes again
    assert names(back) == ["public/carts.test"]
    assert vhds(plane, "envoy-1").held is shared.hash_view and list(shared.hash_view) == HOSTS
    assert dict(shared.hash_view) == shared.hashes()
    await second.ack(back)
    await plane.cache.install(ToyConfig(services=SERVICES, own_hosts=True, paths={"accounts": "/acc"}), "v2")
    for client in (first, second):
        response = await client.response()
        assert names(response) == ["public/accounts.test"] and not response.removed_resources
        await client.ack(response)
    await second.silence(0.2)
    assert vhds(plane, "envoy-2").held is vhds(plane, "envoy-1").held is served(plane, urls.VIRTUAL_HOST).hash_view
    await first.close()
    await second.close()


async def test_a_removed_cluster_kept_for_routes_behind_is_held_apart_then_rejoins(plane: Plane) -> None:
    first, second = await two_in_step(plane)
    await plane.cache.install(ToyConfig(services={"accounts": 9001, "carts": 9003}, own_hosts=True), "v2")
    removal = await first.response()  # the virtual host goes first; its cluster stays until it is acked
    assert removal.type_url == urls.VIRTUAL_HOST and list(removal.removed_resources) == ["public/billing.test"]
    await first.silence(0.2)
    cds = stream_of(plane, "envoy-1").types[urls.CLUSTER]
    assert "billing" in cds.held  # still on the proxy
    assert "billing" not in served(plane, urls.CLUSTER).hash_view  # the shared map is the new snapshot's
    await first.ack(removal)
    final = await first.response()
    assert final.type_url == urls.CLUSTER and list(final.removed_resources) == ["billing"] and not final.resources
    await first.ack(final)
    endpoints = await first.response()
    assert endpoints.type_url == urls.ENDPOINT and list(endpoints.removed_resources) == ["billing"]
    await first.ack(endpoints)
    await first.silence(0.2)
    assert cds.in_step is served(plane, urls.CLUSTER) and cds.held is served(plane, urls.CLUSTER).hash_view
    # The other stream, still behind, was not changed by the first one's progress.
    assert "billing" in stream_of(plane, "envoy-2").types[urls.CLUSTER].held
    await first.close()
    await second.close()

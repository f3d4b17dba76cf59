"""xDS protocol rules not covered by test_sotw.py / test_delta.py, for both variants."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controlplane import resources as urls
from tests.controlplane.ads_client import AdsClient
from tests.controlplane.delta_client import DeltaClient
from tests.controlplane.delta_client import names as delta_names
from tests.controlplane.test_sotw import names
from tests.controlplane.xds_fixtures import ToyConfig
from tests.controlplane.xds_plane import Plane, running_plane


@pytest.fixture
async def plane() -> AsyncIterator[Plane]:
    async with running_plane() as running:
        yield running


async def test_nonces_are_per_stream(plane: Plane) -> None:
    one, two = AdsClient(plane.channel, node_id="one"), AdsClient(plane.channel, node_id="two")
    await one.request(urls.CLUSTER)
    await two.request(urls.CLUSTER)
    first, second = await one.response(), await two.response()
    assert first.nonce != second.nonce
    await one.ack(first)
    await plane.cache.install(ToyConfig(services={"accounts": 9001}), "v2")
    newer = await one.response()
    # stream one answers with stream two's nonce: not the nonce it was sent, so it is stale and ignored
    await one.request(urls.CLUSTER, version=first.version_info, nonce=second.nonce, error="not mine")
    await one.silence()
    node = next(n for n in plane.board.render()["nodes"] if n["node_id"] == "one")
    assert "last_nack" not in node["types"]["Cluster"]
    await one.ack(newer)
    await one.silence()
    await one.close()
    await two.close()


async def test_sotw_once_names_were_given_an_empty_list_means_none(plane: Plane) -> None:
    client = AdsClient(plane.channel)
    await client.request(urls.CLUSTER, ("accounts",))
    response = await client.response()
    assert names(response) == ["accounts"]
    await client.ack(response, ())  # no names after explicit ones: unsubscribed from all, not a wildcard
    await client.silence()
    await plane.cache.install(ToyConfig(services={"accounts": 9002, "billing": 9003}, timeout_ms=5), "v2")
    nothing = await client.response()
    assert names(nothing) == []
    await client.close()


async def test_sotw_no_duplicate_names_in_one_response(plane: Plane) -> None:
    client = AdsClient(plane.channel)
    await client.request(urls.ENDPOINT, ("billing", "accounts", "billing", "accounts"))
    assert names(await client.response()) == ["accounts", "billing"]
    await client.close()


async def test_delta_no_duplicate_names_in_one_response(plane: Plane) -> None:
    client = DeltaClient(plane.channel)
    await client.request(urls.ENDPOINT, ("billing", "accounts", "billing", "*", "accounts"))
    response = await client.response()
    assert delta_names(response) == ["accounts", "billing"]
    await client.close()


async def test_delta_wildcard_can_be_unsubscribed(plane: Plane) -> None:
    client = DeltaClient(plane.channel)
    await client.request(urls.CLUSTER, ("*",))
    await client.ack(await client.response())
    await client.request(urls.CLUSTER, unsubscribe=("*",))
    dropped = await client.response()  # what it held only through the wildcard is named as removed
    assert sorted(dropped.removed_resources) == ["accounts", "billing"] and not dropped.resources
    await client.ack(dropped)
    await plane.cache.install(ToyConfig(services={"accounts": 9001, "billing": 9002, "carts": 9003}), "v2")
    await client.silence()  # not subscribed to anything any more: a new cluster is not sent
    await client.close()

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2

from controlplane import resources as urls
from controlplane.cache import Group, SnapshotCache, config_version, group_of
from controlplane.config.model import Config, Listener
from pavilion.errors import Location
from pavilion.log import configure_logging
from tests.controlplane.xds_fixtures import ToyConfig, toy_translate


@pytest.fixture(autouse=True)
def _log_to_a_stream_that_stays_open() -> None:
    # Other tests run `pavilion.cli.main`, which points structlog at pytest's captured stderr; that file is
    # closed once they end, and a logger first used afterwards would write to it.
    configure_logging("warning", "console", io.StringIO())

CONFIG = ToyConfig(services={"accounts": 9001}, offset={"us-east": 100})


def node(region: str = "", role: str = "", metadata_region: str = "") -> base_pb2.Node:
    message = base_pb2.Node(id="n")
    message.locality.region = region
    if role:
        message.metadata.fields["role"].string_value = role
    if metadata_region:
        message.metadata.fields["region"].string_value = metadata_region
    return message


def test_group_comes_from_locality_then_metadata_and_role_defaults_to_edge() -> None:
    assert group_of(node("eu-west")) == Group("eu-west", "edge")
    assert group_of(node(metadata_region="us-east", role="sidecar")) == Group("us-east", "sidecar")
    assert group_of(node("eu-west", metadata_region="us-east")) == Group("eu-west", "edge")
    assert group_of(node()) == Group("", "edge")


async def test_groups_are_built_lazily_and_all_rebuilt_on_install() -> None:
    calls: list[tuple[str, str]] = []

    def counting(config: Any, region: str, role: str) -> Any:
        calls.append((region, role))
        return toy_translate(config, region, role)

    cache = SnapshotCache(counting)
    assert not cache.loaded
    await cache.install(CONFIG, "v1")
    assert calls == [] and cache.generation == 1
    eu = await cache.snapshot(Group("eu-west", "edge"))
    assert await cache.snapshot(Group("eu-west", "edge")) is eu
    await cache.snapshot(Group("us-east", "edge"))
    assert calls == [("eu-west", "edge"), ("us-east", "edge")]
    calls.clear()
    await cache.install(ToyConfig(services={"accounts": 9005}, offset={"us-east": 100}), "v2")
    assert sorted(calls) == [("eu-west", "edge"), ("us-east", "edge")]
    assert cache.current(Group("eu-west", "edge")).version != eu.version  # type: ignore[union-attr]
    assert cache.config_version == "v2"


async def test_waiters_wake_on_install_and_a_failed_install_changes_nothing() -> None:
    cache = SnapshotCache(toy_translate)
    waiter = asyncio.create_task(cache.snapshot(Group("eu-west", "edge")))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # no config yet
    newer = asyncio.create_task(cache.wait_newer(0))
    await cache.install(CONFIG, "v1")
    assert await asyncio.wait_for(newer, 1) == 1
    first = await asyncio.wait_for(waiter, 1)

    def broken(_config: Any, _region: str, _role: str) -> Any:
        return {urls.ENDPOINT: [toy_translate(CONFIG, "eu-west")[urls.CLUSTER][0]]}

    cache._translate = broken
    with pytest.raises(ValueError):
        await cache.install(ToyConfig(services={"x": 1}), "v2")
    assert cache.config_version == "v1" and cache.generation == 1
    assert cache.current(Group("eu-west", "edge")) is first


def test_config_version_is_content_only() -> None:
    here = Config(regions=("eu-west",), listeners=(Listener("public", "127.0.0.1", 10080, Location("a.yaml", 3)),),
                  services=(), routes=())
    moved = Config(regions=("eu-west",), listeners=(Listener("public", "127.0.0.1", 10080, Location("b.yaml", 9)),),
                   services=(), routes=())
    other = Config(regions=("eu-west",), listeners=(Listener("public", "127.0.0.1", 10081),), services=(), routes=())
    assert config_version(here) == config_version(moved)
    assert config_version(here) != config_version(other)


async def test_regions_share_region_independent_types_and_match_a_full_translation() -> None:
    from controlplane.snapshot import build_snapshot
    from controlplane.translate import translate, translate_regional
    from tests.controlplane.translate.sample import sample_config

    config = sample_config()
    shared = SnapshotCache(translate, regional=translate_regional)
    await shared.install(config, "v1")
    groups = [Group("eu-west", "edge"), Group("us-east", "edge"), Group("us-east", "internal")]
    built = {group: await shared.snapshot(group) for group in groups}
    await shared.install(config, "v2")  # and the rebuild of every group at once shares the same way
    for snapshots in (built, shared.groups()):
        for group, snapshot in snapshots.items():
            alone = build_snapshot(translate(config, group.region, group.role))
            assert snapshot.version == alone.version
            assert {url: t.response_fields for url, t in snapshot.types.items()} == \
                {url: t.response_fields for url, t in alone.types.items()}
        eu, us = snapshots[Group("eu-west", "edge")], snapshots[Group("us-east", "edge")]
        assert eu.type(urls.ROUTE) is us.type(urls.ROUTE)  # one object for both regions
        assert eu.type(urls.ENDPOINT) is not us.type(urls.ENDPOINT)

"""Staged rollout in the snapshot cache and its driver: which group is served which config, and when the
next stage is released. tests/integration/test_rollout_envoy.py does it with real Envoys."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import Any

import pytest

from controlplane.cache import Group, SnapshotCache
from controlplane.config.model import Config, Rollout
from controlplane.rollout import RolloutDriver, _as_far
from controlplane.rollout_stages import Rollout as UnderWay
from controlplane.rollout_stages import Stages
from controlplane.snapshot import Snapshot, build_snapshot
from controlplane.status_cli import rollout_line
from controlplane.translate import translate, translate_regional
from pavilion.log import configure_logging
from tests.controlplane.translate.sample import sample_config

EU, US, AP = Group("eu-west", "edge"), Group("us-east", "edge"), Group("ap-south", "edge")
STAGES = (("eu-west",), ("us-east",))  # ap-south is named by no stage: it comes last


@pytest.fixture(autouse=True)
def _log_to_a_stream_that_stays_open() -> None:
    configure_logging("warning", "console", io.StringIO())


def edition(timeout: float, stages: tuple[tuple[str, ...], ...] | None = STAGES, bake: float = 0.0) -> Config:
    """The sample config with its first route's timeout as the mark of the edition."""
    config = sample_config()
    first = replace(config.routes[0], timeout=timeout)
    return replace(config, routes=(first, *config.routes[1:]),
                   rollout=Rollout(stages, bake) if stages is not None else None)


def of(config: Config, group: Group) -> str:
    """The version of `config`'s snapshot for `group`, built on its own."""
    return build_snapshot(translate(config, group.region, group.role)).version


async def started(first: Config) -> SnapshotCache:
    cache = SnapshotCache(translate, regional=translate_regional)
    await cache.install(first, "v1")
    for group in (EU, US, AP):
        await cache.snapshot(group)
    return cache


def served(cache: SnapshotCache, group: Group) -> str:
    snapshot = cache.current(group)
    assert snapshot is not None
    return snapshot.version


async def test_a_first_config_goes_everywhere_and_an_edit_to_the_first_stage_only() -> None:
    one, two = edition(1.0), edition(2.0)
    cache = await started(one)
    assert cache.rollout is None and all(served(cache, g) == of(one, g) for g in (EU, US, AP))
    await cache.install(two, "v2")
    assert served(cache, EU) == of(two, EU)
    assert served(cache, US) == of(one, US) and served(cache, AP) == of(one, AP)
    rollout = cache.rollout
    assert rollout is not None and rollout.version == "v2" and rollout.released == 0
    assert cache.config is two and cache.config_version == "v2"  # what status and plan compare with
    # What a proxy of us-east acks is v1: the fallback must not take it for an ACK of v2's routes.
    assert cache.serves_newest(EU) and not cache.serves_newest(US) and not cache.serves_newest(AP)

    generation = cache.generation
    await cache.release(1)
    assert served(cache, US) == of(two, US) and served(cache, AP) == of(one, AP)
    assert cache.generation == generation + 1  # streams wake for the release
    await cache.release(2)  # the stage of the regions no stage names: the rollout is over
    assert served(cache, AP) == of(two, AP) and cache.rollout is None
    await cache.release(3)  # nothing under way: nothing to do
    assert cache.generation == generation + 2


async def test_a_group_first_seen_mid_rollout_gets_what_its_region_runs() -> None:
    one, two = edition(1.0), edition(2.0)
    cache = await started(one)
    await cache.install(two, "v2")
    sidecar_eu, sidecar_us = Group("eu-west", "sidecar"), Group("us-east", "sidecar")
    assert (await cache.snapshot(sidecar_eu)).version == of(two, sidecar_eu)
    assert (await cache.snapshot(sidecar_us)).version == of(one, sidecar_us)
    await cache.release(1)
    assert served(cache, sidecar_us) == of(two, sidecar_us)  # released with its region


async def test_a_newer_edit_starts_over_and_regions_not_released_keep_what_they_had() -> None:
    one, two, three = edition(1.0), edition(2.0), edition(3.0)
    cache = await started(one)
    await cache.install(two, "v2")
    await cache.release(1)
    await cache.install(three, "v3")
    assert served(cache, EU) == of(three, EU)
    assert served(cache, US) == of(two, US)  # released v2 before v3 came
    assert served(cache, AP) == of(one, AP)
    rollout = cache.rollout
    assert rollout is not None and (rollout.version, rollout.released) == ("v3", 0)
    new_ap, new_us = Group("ap-south", "internal"), Group("us-east", "internal")
    assert (await cache.snapshot(new_ap)).version == of(one, new_ap)  # what every region had before v2
    assert (await cache.snapshot(new_us)).version == of(two, new_us)  # what its region runs: v2


async def test_dropping_rollout_releases_every_region_at_once() -> None:
    one, two = edition(1.0), edition(2.0)
    cache = await started(one)
    await cache.install(two, "v2")
    three = edition(3.0, stages=None)
    await cache.install(three, "v3")
    assert cache.rollout is None and all(served(cache, g) == of(three, g) for g in (EU, US, AP))


@dataclass
class FakeStream:
    node_id: str
    group: Group
    holds: bool = True  # whether it acked everything it is served

    def synced(self, snapshot: Snapshot | None) -> bool:
        return snapshot is not None and self.holds


@dataclass
class FakeBoard:
    streams: dict[int, Any]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_next_stage_waits_for_every_proxy_released_to_hold_the_config_then_for_the_bake() -> None:
    one, two = edition(1.0), edition(2.0, bake=60.0)
    cache = await started(one)
    eu = FakeStream("edge-eu-1", EU, holds=False)
    board = FakeBoard({1: eu, 2: FakeStream("edge-us-1", US, holds=False)})
    clock = Clock()
    driver = RolloutDriver(cache, board, monotonic=clock, wall=lambda: 1_800_000_000.0)  # type: ignore[arg-type]
    await cache.install(two, "v2")
    await driver.step()
    status = driver.status()
    assert status is not None and status["waiting_for"] == ["edge-eu-1"]  # us-east is not released: not waited for
    assert [stage["released"] for stage in status["stages"]] == [True, False, False]
    assert status["stages"][2]["regions"] == ["*"] and status["next_release_at"] is None
    assert rollout_line(status) == ("rollout of version v2: released to eu-west; next us-east once edge-eu-1 holds "
                                    "it, then every other region")

    clock.now += 3600  # however long it waits, a proxy not holding the config holds the rollout
    await driver.step()
    assert served(cache, US) == of(one, US)

    eu.holds = True
    await driver.step()
    clock.now += 59
    await driver.step()
    assert served(cache, US) == of(one, US)
    status = driver.status()
    assert status is not None and status["next_release_at"] == "2027-01-15T08:00:01.000Z"
    clock.now += 1
    await driver.step()
    assert served(cache, US) == of(two, US)

    eu.holds = False  # a NACK in a released stage restarts the bake once it is resolved
    clock.now += 60
    await driver.step()
    assert served(cache, AP) == of(one, AP)
    eu.holds = True
    board.streams[2].holds = True
    await driver.step()
    clock.now += 60
    await driver.step()
    assert served(cache, AP) == of(two, AP) and cache.rollout is None and driver.status() is None


def test_a_peer_is_as_far_when_it_serves_the_version_with_as_many_stages_released_and_no_proxy_lagging() -> None:
    mine = UnderWay(Stages(STAGES, 60.0), "v2", released=1)

    def peer(version: str, released: int | None, waiting: tuple[str, ...] = ()) -> dict[str, Any]:
        if released is None:
            return {"version": version, "rollout": None}
        stages = [{"regions": ["r"], "released": index <= released} for index in range(3)]
        return {"version": version, "rollout": {"stages": stages, "waiting_for": list(waiting)}}

    assert _as_far(peer("v2", 1), mine) and _as_far(peer("v2", 2), mine)
    assert _as_far(peer("v2", None), mine)  # done with v2
    assert not _as_far(peer("v2", 0), mine)  # still baking the stage before
    assert not _as_far(peer("v2", 1, ("edge-eu-7",)), mine)  # a proxy of its own lags
    assert not _as_far(peer("v1", None), mine)  # has not read the edit yet


async def test_hold_keeps_the_rollout_at_its_first_stage_until_an_edit_lets_it_go() -> None:
    one = edition(1.0)
    held = replace(edition(2.0), rollout=Rollout(STAGES, 60.0, hold=True))
    cache = await started(one)
    board = FakeBoard({1: FakeStream("edge-eu-1", EU), 2: FakeStream("edge-us-1", US)})
    clock = Clock()
    driver = RolloutDriver(cache, board, monotonic=clock)  # type: ignore[arg-type]
    await cache.install(held, "v2")
    for _ in range(3):  # the canary region holds it and acked long ago: still nothing more
        clock.now += 3600
        await driver.step()
    assert served(cache, EU) == of(held, EU) and served(cache, US) == of(one, US)
    status = driver.status()
    assert status is not None and status["hold"] and status["next_release_at"] is None
    assert rollout_line(status).startswith("rollout of version v2: released to eu-west; next us-east once the "
                                           "route YAML's rollout.hold is false")
    let_go = replace(held, rollout=Rollout(STAGES, 60.0))
    await cache.install(let_go, "v3")
    await driver.step()
    clock.now += 60
    await driver.step()
    assert served(cache, US) == of(let_go, US)

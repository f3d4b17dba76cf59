from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from controlplane.cache import Group, SnapshotCache
from controlplane.status import StatusBoard
from controlplane.watch import Reloader, watch_config
from pavilion.errors import ConfigError, ConfigErrors, Location
from pavilion.log import configure_logging
from tests.controlplane.xds_fixtures import ToyConfig, toy_translate


@pytest.fixture(autouse=True)
def _log_to_a_stream_that_stays_open() -> None:
    # Other tests run `pavilion.cli.main`, which points structlog at pytest's captured stderr; that file is
    # closed once they end, and a logger first used afterwards would write to it.
    configure_logging("warning", "console", io.StringIO())


class Loader:
    def __init__(self) -> None:
        self.result: Any = ToyConfig(services={"a": 1})

    def __call__(self, _path: str) -> Any:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


async def test_rejected_change_keeps_the_last_good_config_and_is_reported() -> None:
    cache = SnapshotCache(toy_translate)
    board = StatusBoard(cache, identifier="t")
    loader = Loader()
    reloader = Reloader("routes", cache, board, loader=loader)
    assert await reloader.reload()
    good = cache.config_version
    assert board.render()["applied"]["version"] == good
    loader.result = ConfigErrors([ConfigError("unknown service 'nope'", location=Location("r.yaml", 4, 14),
                                              path="routes[0].service")])
    assert not await reloader.reload()
    status = board.render()
    assert status["version"] == good
    assert status["last_rejected"]["errors"] == ["r.yaml:4:14: routes[0].service: unknown service 'nope'"]
    loader.result = ToyConfig(services={"a": 1})
    assert await reloader.reload()
    assert board.render()["reloads"] == {"applied": 1, "unchanged": 1, "rejected": 1, "failed": 0}


async def test_watch_calls_back_after_an_edit_but_not_for_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("x: 1\n")
    stop = asyncio.Event()
    seen = asyncio.Queue[int]()

    async def on_change() -> None:
        await seen.put(1)

    task = asyncio.create_task(watch_config(str(tmp_path), on_change, stop))
    await asyncio.sleep(0.3)  # let the watcher start
    (tmp_path / ".a.yaml.swp").write_text("junk")
    (tmp_path / "notes.txt").write_text("junk")
    await asyncio.sleep(0.3)
    assert seen.empty()
    (tmp_path / "a.yaml").write_text("x: 2\n")
    await asyncio.wait_for(seen.get(), 3)
    stop.set()
    await asyncio.wait_for(task, 3)


async def test_a_translation_failure_is_recorded_and_the_old_config_kept() -> None:
    def exploding(config: Any, region: str, role: str) -> Any:
        if config.services.get("boom"):
            raise KeyError("boom")
        return toy_translate(config, region, role)

    cache = SnapshotCache(exploding)
    board = StatusBoard(cache, identifier="t")
    loader = Loader()
    reloader = Reloader("routes", cache, board, loader=loader)
    assert await reloader.reload()
    await cache.snapshot(Group("eu-west", "edge"))
    good = cache.config_version
    loader.result = ToyConfig(services={"a": 1, "boom": 2})
    assert not await reloader.reload()
    assert cache.config_version == good
    status = board.render()
    assert status["last_rejected"]["result"] == "failed"
    assert "KeyError" in status["last_rejected"]["errors"][0]

from __future__ import annotations

import asyncio
from pathlib import Path

from pavilion.service import ServiceSettings, config_changes, run_service


async def test_config_changes_yield_on_new_content_only(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("a: 1\n")
    stop = asyncio.Event()
    seen: list[str] = []

    async def watch() -> None:
        async for _ in config_changes(path, stop):
            seen.append(path.read_text())

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.3)
    path.write_text("a: 1\n")  # same content: nothing to reload
    await asyncio.sleep(0.6)
    assert seen == []
    path.write_text("a: 2\n")
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert seen == ["a: 2\n"]


def test_run_service_wants_exactly_one_config_source() -> None:
    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("must not serve")

    assert run_service(ServiceSettings(), never, role="x", check_config=lambda _p: None) == 2
    both = ServiceSettings(config="a.yaml", xds="127.0.0.1:1")
    assert run_service(both, never, role="x", check_config=lambda _p: None) == 2

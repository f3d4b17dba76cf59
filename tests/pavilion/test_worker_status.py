"""The parent's /status with --workers: the live workers' published statuses, and one config version
only when they all run it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from pavilion import worker_status
from pavilion.config_status import ConfigStatus


def test_only_live_workers_are_listed_and_a_split_version_is_no_version(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f"status-{os.getpid()}.json").write_text(json.dumps({"config_version": "a", "ready": True}))
    (tmp_path / f"status-{int(dead.stdout)}.json").write_text(json.dumps({"config_version": "b", "ready": True}))
    (tmp_path / "pavilion_x.db").write_text("metrics, not a status")
    shown = worker_status.read(str(tmp_path))
    assert shown == {"config_version": "a", "ready": True,
                     "workers": [{"pid": os.getpid(), "config_version": "a", "ready": True}]}
    (tmp_path / f"status-{os.getppid()}.json").write_text(json.dumps({"config_version": "b", "ready": False}))
    assert worker_status.read(str(tmp_path))["config_version"] is None


async def test_a_worker_publishes_its_status_until_stopped_then_removes_it(tmp_path: Path) -> None:
    status = ConfigStatus("file")
    status.applied("v1")
    stop = asyncio.Event()
    publisher = asyncio.create_task(worker_status.publish(str(tmp_path), stop))
    path = tmp_path / f"status-{os.getpid()}.json"
    for _ in range(100):
        if path.exists():
            break
        await asyncio.sleep(0.02)
    assert json.loads(path.read_text())["config_version"] == "v1"
    stop.set()
    await publisher
    assert not path.exists()

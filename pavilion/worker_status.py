"""/status with `--workers N`: each worker writes its status to the workers' shared directory once a
second, and the parent's /status lists those of the live workers.

The directory is the one pavilion.workers makes for the workers' metrics (PROMETHEUS_MULTIPROC_DIR);
prometheus-client reads only the `*.db` files there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from pavilion.config_status import ConfigStatus

INTERVAL = 1.0  # seconds between two writes of a worker's status


async def publish(directory: str, stop: asyncio.Event) -> None:
    """Write this process's status to `directory` every INTERVAL until `stop`; the file goes with it."""
    path = Path(directory) / f"status-{os.getpid()}.json"
    try:
        while not stop.is_set():
            status = ConfigStatus.current()
            if status is not None:
                await asyncio.to_thread(_write, path, json.dumps(status.render()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), INTERVAL)
    finally:
        path.unlink(missing_ok=True)


def _write(path: Path, text: str) -> None:
    # Written aside and renamed: the parent never reads half a file.
    partial = path.with_suffix(".tmp")
    partial.write_text(text)
    partial.replace(path)


def read(directory: str) -> dict[str, Any]:
    """The live workers' statuses, and the config version when they all run the same one."""
    workers = []
    for path in sorted(Path(directory).glob("status-*.json")):
        pid = int(path.stem.removeprefix("status-"))
        if not _alive(pid):
            continue
        with contextlib.suppress(OSError, ValueError):
            workers.append({"pid": pid, **json.loads(path.read_text())})
    versions = {worker.get("config_version") for worker in workers}
    return {"config_version": versions.pop() if len(versions) == 1 else None,
            "ready": any(worker.get("ready") for worker in workers), "workers": workers}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def routes(directory: str) -> list[web.RouteDef]:
    """The parent's /status."""

    async def handle(_request: web.Request) -> web.Response:
        shown = await asyncio.to_thread(read, directory)
        return web.json_response(shown, dumps=lambda value: json.dumps(value, indent=2) + "\n")

    return [web.get("/status", handle)]

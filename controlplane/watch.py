"""Hot reload: watch the route YAML directory, and load, validate, translate and install each change.

A change that fails (ConfigErrors) is rejected whole: the last good config keeps serving, and the
errors go to the log (one `FILE:LINE:COL: field: message` line each) and to /status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from watchfiles import Change, awatch

from controlplane.cache import SnapshotCache, config_version
from controlplane.config.listener_tls import stamps_now
from controlplane.config.model import FileStamp
from controlplane.status import StatusBoard
from pavilion.config_files import SUFFIXES
from pavilion.errors import ConfigErrors
from pavilion.log import get_logger

log = get_logger(__name__)

Loader = Callable[[str], Any]

def is_config_file(change: Change, path: str) -> bool:
    """YAML files and folders that are not hidden (editors' swap and backup files are). A folder
    counts: a ConfigMap key projected to `teams/a.yaml` appears as the symlink `teams`, created
    last in kubelet's update, after every YAML file event of it."""
    name = Path(path).name
    return not name.startswith(".") and (path.endswith(SUFFIXES) or os.path.isdir(path))


class Reloader:
    """Loads the config at `path` and installs it in the cache when its content changed."""

    def __init__(self, path: str, cache: SnapshotCache, board: StatusBoard, *, loader: Loader,
                 served: Callable[[Any], Any] = lambda config: config,
                 files: Callable[[Any], Sequence[FileStamp]] = lambda outcome: ()) -> None:
        self.path = path
        self.cache = cache
        self.board = board
        self.loaded: Any = None  # the last config read from disk that passed validation
        self._load = loader
        self._served = served  # loaded config -> the config to serve (routes Envoy refused fall back)
        self._files = files  # a load's outcome (config or errors) -> the other files it read (certificates)
        self.read_files: tuple[FileStamp, ...] = ()  # those of the last load, stamped as they were read
        self._lock = asyncio.Lock()

    async def poll_files(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Reload when a file the last load read, besides the YAML, changes (a rotated certificate).

        Polled rather than watched: cert-manager swaps a Secret volume's files through a `..data`
        symlink, possibly outside the watched folder; stat of the resolved path sees every swap. The
        files are those of the last load, good or rejected: a rejected certificate is not read again
        until it changes, and a missing one is read once it appears.
        """
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            read = self.read_files
            if stop.is_set() or not read:
                continue
            now = await asyncio.to_thread(stamps_now, [path for path, _ in read])
            changed = sorted({Path(path).name for (path, stamp), (_, before) in zip(now, read, strict=True)
                              if stamp != before})
            if changed and read is self.read_files:  # else a reload just read them again
                log.info("config_files_changed", files=changed)
                await self.reload()

    async def reload(self) -> bool:
        """True when the config on disk is now the one served (changed or not)."""
        async with self._lock:
            started = time.perf_counter()
            try:
                self.loaded = await asyncio.to_thread(self._load, self.path)
                self.read_files = tuple(self._files(self.loaded))
            except ConfigErrors as exc:
                self.read_files = tuple(self._files(exc))
                self._reject([str(error) for error in exc.errors], "rejected")
                return False
            return await self._install(started)

    async def reapply(self) -> bool:
        """Serve the last loaded config again through `served` (after a route was refused by Envoy)."""
        async with self._lock:
            if self.loaded is None:
                return False
            return await self._install(time.perf_counter())

    async def _install(self, started: float) -> bool:
        config, version = await asyncio.to_thread(self._served_with_version)
        if version == self.cache.config_version:
            self.board.record_applied(version, time.perf_counter() - started, changed=False)
            log.info("config_unchanged", version=version)
            return True
        try:
            snapshots = await self.cache.install(config, version)
        except Exception as exc:  # the reload boundary: whatever fails, the last good config keeps serving
            log.exception("config_translation_failed", path=self.path)
            self._reject([f"{self.path}: translation failed: {type(exc).__name__}: {exc}"], "failed")
            return False
        seconds = time.perf_counter() - started
        self.board.record_applied(version, seconds, changed=True)
        log.info("config_applied", version=version, seconds=round(seconds, 4),
                 groups={str(group): snapshot.version for group, snapshot in snapshots.items()})
        return True

    def _served_with_version(self) -> tuple[Any, str]:
        config = self._served(self.loaded)
        return config, config_version(config)

    def _reject(self, errors: list[str], result: str) -> None:
        self.board.record_rejected(errors, result=result)
        for line in errors:
            log.error("config_error", error=line)
        log.error("config_rejected", path=self.path, problems=len(errors), serving=self.cache.config_version or None)


async def watch_config(path: str, on_change: Callable[[], Awaitable[object]], stop: asyncio.Event, *,
                       quiet_ms: int = 30, max_batch_ms: int = 300) -> None:
    """Call `on_change` after each burst of edits under `path`, `quiet_ms` after the burst ended."""
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # it logs every batch at info; we log our own line
    async for changes in awatch(path, watch_filter=is_config_file, stop_event=stop, step=quiet_ms,
                                debounce=max_batch_ms, recursive=True):
        log.info("config_changed", files=sorted({Path(p).name for _, p in changes}))
        await on_change()

"""Which config a service runs on, for /status and the `pavilion_config_info` metric.

The control plane, ext_authz and ratelimit each report the version they use: one route YAML content
gives one version string on all three (services fed over xDS receive the control plane's version as
the responses' `version_info`; a service reading its own file reports a hash of what it loaded).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from pavilion.metrics import NAMESPACE, Gauge
from pavilion.workers import shared_directory

__all__ = ["CONFIG_INFO", "CONFIG_REFUSED", "ConfigStatus", "set_config_info"]

# livemax: with --workers, a version is shown while one live worker uses it.
CONFIG_INFO = Gauge("config_info", "The config version in use (value 1).", ["version"], namespace=NAMESPACE,
                    multiprocess_mode="livemax")
# livemax: with --workers, 1 while one live worker kept its last good config after a refused update.
CONFIG_REFUSED = Gauge("config_refused", "1 while the last config update was refused and the last good config is "
                       "served, 0 once an update is applied", namespace=NAMESPACE, multiprocess_mode="livemax")


def set_config_info(version: str, previous: str | None) -> None:
    """Move the info metric from `previous` to `version`."""
    if previous and previous != version:
        if shared_directory():
            CONFIG_INFO.labels(previous).set(0)  # another worker's file may still hold it: zero, not remove
        else:
            CONFIG_INFO.remove(previous)
    CONFIG_INFO.labels(version).set(1)


class ConfigStatus:
    """The version in use, where it came from (file or xds), and the last refused update.

    A process runs one service, so the last status made is the process's (`current`): a worker
    publishes it for its parent's /status (pavilion.worker_status)."""

    _current: ConfigStatus | None = None

    def __init__(self, source: str, *, details: Callable[[], Mapping[str, Any]] | None = None) -> None:
        ConfigStatus._current = self
        self.source = source
        self.version: str | None = None
        self.applied_at: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._details = details
        CONFIG_REFUSED.set(0)

    def applied(self, version: str) -> None:
        set_config_info(version, self.version)
        self.version, self.applied_at = version, time.time()
        self.last_error = self.last_error_at = None
        CONFIG_REFUSED.set(0)

    def refused(self, error: str) -> None:
        self.last_error, self.last_error_at = error, time.time()
        CONFIG_REFUSED.set(1)

    def render(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "config_version": self.version, "source": self.source, "ready": self.version is not None,
            "applied_at": _iso(self.applied_at), "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
        }
        if self._details is not None:
            status.update(self._details())
        return status

    @classmethod
    def current(cls) -> ConfigStatus | None:
        return cls._current

    async def handle(self, _request: web.Request) -> web.Response:
        return web.json_response(self.render(), dumps=lambda value: json.dumps(value, indent=2) + "\n")

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/status", self.handle)]


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))

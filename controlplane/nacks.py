"""Who is at fault when Envoy refuses a version, and what is served instead.

A NACK of route tables is attributed by `envoy_check.rejected_routes` (it halves the routes and
runs `envoy --mode validate` until each refused route is found alone), in a worker thread: it runs
Envoy several times and must not stall the streams. A refused listener (an address that cannot be
bound only fails at runtime, so validation cannot find it) is attributed by the listener names in
Envoy's LDS message. Each refused entry then falls back to its last accepted form
(controlplane.fallback) and the rest of the config is served under a new version.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

from controlplane import resources as urls
from controlplane.cache import SnapshotCache
from controlplane.config.listener_tls import http3_twin
from controlplane.config.model import Config
from controlplane.envoy_check import EnvoyNotFound, rejected_routes
from controlplane.fallback import RouteFallback
from controlplane.server.stream import StreamState, TypeState, iso_time
from controlplane.watch import Reloader
from pavilion.log import get_logger

log = get_logger(__name__)

RouteCheck = Callable[[Config, str], dict[str, list[str]]]
_ROUTES = (urls.ROUTE, urls.VIRTUAL_HOST)


def _holds_routes(stream: StreamState, type_url: str) -> bool:
    """Whether this type carries the stream's routes: whole tables in SotW, virtual hosts in Delta (VHDS),
    where a table is only a shell and its ACK says nothing of the routes."""
    return type_url == (urls.VIRTUAL_HOST if stream.kind == "delta" else urls.ROUTE)


def _rejected_routes(config: Config, region: str) -> dict[str, list[str]]:
    return rejected_routes(config, region)


class NackAttributor:
    def __init__(self, cache: SnapshotCache, reloader: Reloader, fallback: RouteFallback, *,
                 check: RouteCheck = _rejected_routes) -> None:
        self.cache = cache
        self.reloader = reloader
        self.fallback = fallback
        self.check = check
        self.unattributed: dict[str, dict[str, Any]] = {}  # short type -> the last refusal no entry explains
        self._seen: set[tuple[str, str, str]] = set()  # (type URL, refused version, region)
        self._tasks: set[asyncio.Task[None]] = set()

    def on_ack(self, stream: StreamState, type_state: TypeState) -> None:
        snapshot = self.cache.current(stream.group) if stream.group else None
        if snapshot is None or type_state.acked_version != snapshot.type(type_state.type_url).version:
            return
        if stream.group is not None and not self.cache.serves_newest(stream.group):
            return  # a region a staged rollout has not reached acked the config before: not `cache.config`
        if _holds_routes(stream, type_state.type_url) and isinstance(self.cache.config, Config):
            self.fallback.record_accepted(self.cache.config)
        elif type_state.type_url == urls.LISTENER and isinstance(self.cache.config, Config):
            self.fallback.record_accepted_listeners(self.cache.config)

    def on_nack(self, stream: StreamState, type_state: TypeState) -> None:
        nack = type_state.nack
        if nack is None or stream.group is None or type_state.type_url not in (*_ROUTES, urls.LISTENER):
            return
        if not self.cache.serves_newest(stream.group):
            return  # it refused what it had before a staged rollout: nothing of `cache.config` to attribute
        key = (type_state.type_url, nack.version, stream.group.region)
        if key in self._seen:
            return  # another proxy of the region refused the same version: one attribution is enough
        self._seen.add(key)
        attribute = self._attribute_listeners if type_state.type_url == urls.LISTENER else self._attribute_routes
        task = asyncio.create_task(attribute(nack.error, stream.group.region, nack.version))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attribute_listeners(self, error: str, region: str, version: str) -> None:
        config = self.cache.config
        if not isinstance(config, Config):
            return
        # A listener's HTTP/3 twin (`<name>-h3`) is its own entry's too.
        named = [item for item in config.listeners
                 if any(re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", error)
                        for name in (item.name, http3_twin(item.name)))]
        if not named:
            self._unexplained(urls.LISTENER, error, region, version)
            return
        for item in named:
            self.fallback.refuse_listener(item, [error], region)
            log.warning("xds_nack_attributed", type="Listener", listener=item.name, source=str(item.source),
                        region=region, error=error,
                        fallback="last accepted form" if item.name in self.fallback.listeners.accepted else "left out")
        await self.reloader.reapply()

    async def _attribute_routes(self, error: str, region: str, version: str) -> None:
        config = self.cache.config
        if not isinstance(config, Config):
            return
        try:
            refused = await asyncio.to_thread(self.check, config, region)
        except EnvoyNotFound as exc:
            log.error("xds_nack_unattributed", type="RouteConfiguration", reason=str(exc))
            refused = {}
        if not refused:
            self._unexplained(urls.ROUTE, error, region, version)
            return
        by_name = {route.name: route for route in config.routes}
        for name, lines in refused.items():
            self.fallback.refuse(by_name[name], lines, region)
            log.warning("xds_nack_attributed", type="RouteConfiguration", route=name,
                        source=str(by_name[name].source), region=region, error=" ".join(lines),
                        fallback="last accepted form" if name in self.fallback.accepted else "left out")
        await self.reloader.reapply()

    def _unexplained(self, type_url: str, error: str, region: str, version: str) -> None:
        self.unattributed[urls.short_type(type_url)] = {"error": error, "region": region, "version": version,
                                                          "at": iso_time(time.time())}

    async def drain(self) -> None:
        """Wait for attributions in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

"""Status per route, the question a team asks after an edit: did every Envoy take my route?

For each route of the loaded config: Accepted (it passed validation), ResolvedRefs (every service
it names exists), and Programmed per region: how many of the region's proxies acked a route table
holding the route's current form (the Envoy `Route` message, compared by hash, so an unrelated edit
to the same table does not count against it). A route Envoy refused, or left out with its refused
listener, carries Envoy's error and what is served instead (controlplane.fallback); refused
listeners are listed apart, the same way.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from aiohttp import web
from envoy.config.route.v3 import route_pb2

from controlplane import resources as urls
from controlplane.config.model import Config
from controlplane.fallback import RouteFallback
from controlplane.nacks import NackAttributor
from controlplane.snapshot import Resource, content_hash
from controlplane.status import StatusBoard, json_dumps
from controlplane.watch import Reloader

_ROUTE_IN_ERROR = re.compile(r"\broutes\[([^\]]+)\]")
_FORMS_KEPT = 256
_forms: dict[str, dict[str, str]] = {}  # RouteConfiguration hash -> {route name: hash of its form}


def route_forms(resource: Resource | None) -> dict[str, str]:
    """Route name -> hash of its Envoy Route message inside one RouteConfiguration (memoized)."""
    if resource is None:
        return {}
    known = _forms.get(resource.hash)
    if known is None:
        table = route_pb2.RouteConfiguration.FromString(resource.serialized)
        known = {route.name: content_hash(route.SerializeToString(deterministic=True))
                 for host in table.virtual_hosts for route in host.routes}
        if len(_forms) >= _FORMS_KEPT:
            _forms.pop(next(iter(_forms)))
        _forms[resource.hash] = known
    return known


class RouteStatus:
    def __init__(self, board: StatusBoard, reloader: Reloader, fallback: RouteFallback,
                 nacks: NackAttributor) -> None:
        self.board = board
        self.reloader = reloader
        self.fallback = fallback
        self.nacks = nacks

    def programmed(self) -> dict[str, dict[str, list[int]]]:
        """Route name -> region -> [proxies that acked its current form, proxies subscribed to its table].

        Proxies are counted by the route table they acked (few distinct ones), not one by one, so this
        stays cheap with thousands of proxies and routes."""
        counts: dict[str, dict[str, list[int]]] = {}
        served = self.board.cache.config
        if not isinstance(served, Config):
            return counts
        for group, snapshot in self.board.cache.groups().items():
            tables = snapshot.type(urls.ROUTE).resources
            streams = [s.types[urls.ROUTE] for s in self.board.streams.values()
                       if s.group == group and urls.ROUTE in s.types and s.types[urls.ROUTE].subscribed]
            held: dict[str, Counter[str]] = {}  # listener -> hash of the acked table -> proxies
            acked_tables: dict[str, Resource] = {}
            for item in served.listeners:
                held[item.name] = Counter()
                for state in streams:
                    table = state.acked_resources.get(item.name)
                    if table is not None:
                        held[item.name][table.hash] += 1
                        acked_tables[table.hash] = table
            for route in served.routes:
                want = route_forms(tables.get(route.listener)).get(route.name)
                acked = sum(number for digest, number in held.get(route.listener, Counter()).items()
                            if want is not None and route_forms(acked_tables[digest]).get(route.name) == want)
                entry = counts.setdefault(route.name, {}).setdefault(group.region, [0, 0])
                entry[0] += acked
                entry[1] += len(streams)
        return counts

    def render(self) -> dict[str, Any]:
        loaded = self.reloader.loaded
        routes: list[dict[str, Any]] = []
        if isinstance(loaded, Config):
            services = {service.name for service in loaded.services}
            programmed = self.programmed()
            for route in loaded.routes:
                missing = sorted({b.service for b in route.backends} - services)
                regions = programmed.get(route.name, {})
                refusal = self.fallback.route_status(route)
                entry: dict[str, Any] = {
                    "name": route.name, "listener": route.listener, "source": str(route.source),
                    "accepted": True,
                    "resolved_refs": not missing,
                    "programmed": (refusal is None and bool(regions)
                                   and all(n == m and m > 0 for n, m in regions.values())),
                    "proxies": {region: {"acked": n, "of": m} for region, (n, m) in sorted(regions.items())},
                }
                if missing:
                    entry["missing_services"] = missing
                if refusal is not None:
                    entry["rejected"] = refusal
                routes.append(entry)
        self._mark_refused_edit(routes)
        return {
            "version": self.board.cache.config_version or None,
            "last_rejected": self.board.rejected,
            "routes": routes,
            "refused_listeners": self.fallback.listener_status(),
            "unattributed_nacks": self.nacks.unattributed,
        }

    def _mark_refused_edit(self, routes: list[dict[str, Any]]) -> None:
        """Routes named in the errors of an edit refused after the last applied one: Accepted is false
        (for the edit; the form served before it may still be programmed), with the errors."""
        rejected = self.board.rejected
        if rejected is None or self.board.last_result not in ("rejected", "failed"):
            return
        errors: dict[str, list[str]] = {}
        for line in rejected["errors"]:
            for name in set(_ROUTE_IN_ERROR.findall(line)):
                errors.setdefault(name, []).append(line)
        shown = {entry["name"]: entry for entry in routes}
        for name, lines in errors.items():
            entry = shown.get(name)
            if entry is None:  # a new route that never passed the checks
                entry = {"name": name, "listener": None, "source": lines[0].split(": ", 1)[0],
                         "resolved_refs": False, "programmed": False, "proxies": {}}
                routes.append(entry)
            entry["accepted"] = False
            entry["errors"] = lines

    async def handle_routes(self, _request: web.Request) -> web.Response:
        return web.json_response(self.render(), dumps=json_dumps)

    async def handle_proxies(self, _request: web.Request) -> web.Response:
        return web.json_response({"proxies": self.board.render()["nodes"]}, dumps=json_dumps)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/status/routes", self.handle_routes), web.get("/status/proxies", self.handle_proxies)]

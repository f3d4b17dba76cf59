"""Status per route, the question a team asks after an edit: did every Envoy take my route?

For each route of the loaded config: Accepted (it passed validation), ResolvedRefs (every service
it names exists), and Programmed per region: how many of the region's proxies acked a route table
holding the route's current form (the Envoy `Route` message, compared by hash, so an unrelated edit
to the same table does not count against it; a Delta proxy holds its tables as virtual hosts, VHDS,
and what it acked of a table is its acked virtual hosts). A route Envoy refused, or left out with
its refused listener, carries Envoy's error and what is served instead (controlplane.fallback);
refused listeners are listed apart, the same way.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from aiohttp import web
from envoy.config.route.v3 import route_components_pb2, route_pb2

from controlplane import resources as urls
from controlplane.config.model import Config
from controlplane.fallback import RouteFallback
from controlplane.nacks import NackAttributor
from controlplane.server.stream import StreamState
from controlplane.snapshot import Resource, content_hash
from controlplane.status import StatusBoard, json_dumps
from controlplane.vhds import namespace
from controlplane.watch import Reloader

_ROUTE_IN_ERROR = re.compile(r"\broutes\[([^\]]+)\]")
_FORMS_KEPT = 256
# A tuple of resource hashes (one route table, or a table's virtual hosts) -> {route name: hash of its form}
_forms: dict[tuple[str, ...], dict[str, str]] = {}
# id(acked resources of a Delta stream) -> (those resources, their virtual hosts by table): recomputed only
# when the stream acks again (each ACK stores a new dict).
_grouped: dict[int, tuple[object, dict[str, tuple[Resource, ...]]]] = {}


def route_forms(holding: tuple[Resource, ...]) -> dict[str, str]:
    """Route name -> hash of its Envoy Route message, in one route table or in virtual hosts (memoized)."""
    key = tuple(resource.hash for resource in holding)
    known = _forms.get(key)
    if known is None:
        known = {}
        for resource in holding:
            if resource.type_url == urls.VIRTUAL_HOST:
                hosts = [route_components_pb2.VirtualHost.FromString(resource.serialized)]
            else:
                hosts = list(route_pb2.RouteConfiguration.FromString(resource.serialized).virtual_hosts)
            known.update((route.name, content_hash(route.SerializeToString(deterministic=True)))
                         for host in hosts for route in host.routes)
        if len(_forms) >= _FORMS_KEPT:
            _forms.pop(next(iter(_forms)))
        _forms[key] = known
    return known


def acked_routes(stream: StreamState) -> dict[str, tuple[Resource, ...]]:
    """Route table name -> what the proxy acked of it: the table (SotW), or its virtual hosts (Delta, VHDS)."""
    if stream.kind != "delta":
        state = stream.types.get(urls.ROUTE)
        return {name: (resource,) for name, resource in state.acked_resources.items()} if state else {}
    state = stream.types.get(urls.VIRTUAL_HOST)
    if state is None:
        return {}
    memo = _grouped.get(id(state.acked_resources))
    if memo is not None and memo[0] is state.acked_resources:
        return memo[1]
    grouped: dict[str, list[Resource]] = {}
    for name, resource in sorted(state.acked_resources.items()):
        grouped.setdefault(namespace(name), []).append(resource)
    result = {table: tuple(hosts) for table, hosts in grouped.items()}
    if len(_grouped) >= 4 * _FORMS_KEPT:
        _grouped.clear()
    _grouped[id(state.acked_resources)] = (state.acked_resources, result)
    return result


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
            streams = [acked_routes(s) for s in self.board.streams.values()
                       if s.group == group and urls.ROUTE in s.types and s.types[urls.ROUTE].subscribed]
            held: dict[str, Counter[tuple[str, ...]]] = {}  # listener -> hashes of what was acked -> proxies
            acked_tables: dict[tuple[str, ...], tuple[Resource, ...]] = {}
            for item in served.listeners:
                held[item.name] = Counter()
                for by_table in streams:
                    holding = by_table.get(item.name)
                    if holding:
                        key = tuple(resource.hash for resource in holding)
                        held[item.name][key] += 1
                        acked_tables[key] = holding
            for route in served.routes:
                table = tables.get(route.listener)
                want = route_forms((table,)).get(route.name) if table is not None else None
                acked = sum(number for key, number in held.get(route.listener, Counter()).items()
                            if want is not None and route_forms(acked_tables[key]).get(route.name) == want)
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

"""Does a route's `local_rate_limit` mean what it says? Envoy keeps a route's bucket in the route's per-filter
config, and a route that sits in several virtual hosts of its listener (its `hosts` cover domains other
routes name: `hosts: ["*"]` beside a route for `api.example.com`) is one Envoy route per virtual host,
each with its own bucket. `{requests: 50}` then admits up to 50 per virtual host. `pavilion validate`
and `pavilion plan` say so at the route's FILE:LINE:COL; the config is still served."""

from __future__ import annotations

from controlplane.config.model import Config
from controlplane.translate._routes import virtual_host_routes

__all__ = ["local_limit_warnings"]


def local_limit_warnings(config: Config) -> list[str]:
    lines: list[str] = []
    for listener in config.listeners:
        routes = [r for r in config.routes if r.listener == listener.name]
        if not any(r.local_rate_limit is not None for r in routes):
            continue
        hosts: dict[str, list[str]] = {}  # route name → the virtual hosts (first domain each) it is in
        for domains, members in virtual_host_routes(routes):
            for member in members:
                hosts.setdefault(member.name, []).append(domains[0])
        for route in routes:
            limit, found = route.local_rate_limit, hosts.get(route.name, [])
            if limit is None or len(found) < 2:
                continue
            where = limit.source if limit.source.line else route.source
            lines.append(
                f"{where}: warning: route {route.name}'s local_rate_limit is one bucket per virtual host, and the "
                f"route is in {len(found)} of listener {listener.name} ({', '.join(found)}): up to "
                f"{len(found) * limit.requests} requests per {limit.unit} in all, not {limit.requests}; give it "
                "`hosts` that no other route's hosts overlap, or limit the whole listener")
    return lines

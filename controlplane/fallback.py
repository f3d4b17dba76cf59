"""Routes Envoy refused: each falls back to its last accepted form while the rest of the config moves on.

A NACK names no YAML entry. Once the entries at fault are known (controlplane.nacks bisects with
`envoy --mode validate`), each is held here with the form Envoy refused. `apply` turns the loaded
config into the one served: a held route is replaced by the last form a proxy acked, or left out
when it never had one. When its team edits the route (its form differs from the refused one), the
hold ends and the new form is tried. The served config differs from the refused one, so it gets a
new version: the refused version is never sent again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from controlplane.config.model import Config, Route
from controlplane.server.stream import iso_time


@dataclass(frozen=True)
class Refusal:
    route: Route  # the form Envoy refused
    errors: tuple[str, ...]
    region: str
    at: float  # wall-clock seconds

    def status(self, fallback: Route | None) -> dict[str, Any]:
        return {"errors": list(self.errors), "region": self.region, "at": iso_time(self.at),
                "source": str(self.route.source),
                "serving": "last accepted form" if fallback is not None else "left out (never accepted)"}


class RouteFallback:
    def __init__(self) -> None:
        self.accepted: dict[str, Route] = {}  # route name -> last form a proxy acked
        self.refused: dict[str, Refusal] = {}

    def refuse(self, route: Route, errors: list[str], region: str) -> None:
        self.refused[route.name] = Refusal(route, tuple(errors), region, time.time())
        if self.accepted.get(route.name) == route:
            # Acked in another region, refused here: serving it again would change nothing. Leave it out.
            del self.accepted[route.name]

    def record_accepted(self, served: Config) -> None:
        """A proxy acked the route tables of `served`: every route in it is accepted in that form."""
        for route in served.routes:
            refusal = self.refused.get(route.name)
            if refusal is None or refusal.route != route:
                self.accepted[route.name] = route

    def apply(self, loaded: Any) -> Any:
        """The config to serve for `loaded`; anything that is not a Config (tests' toys) passes through."""
        if not isinstance(loaded, Config) or not self.refused:
            return loaded
        present = {route.name: route for route in loaded.routes}
        for name in [name for name, refusal in self.refused.items() if present.get(name) != refusal.route]:
            del self.refused[name]  # edited or deleted since: try the new form
        if not self.refused:
            return loaded
        routes = []
        for route in loaded.routes:
            if route.name not in self.refused:
                routes.append(route)
            elif route.name in self.accepted:
                routes.append(self.accepted[route.name])
        return replace(loaded, routes=tuple(routes))

    def status(self, name: str) -> dict[str, Any] | None:
        refusal = self.refused.get(name)
        return refusal.status(self.accepted.get(name)) if refusal is not None else None

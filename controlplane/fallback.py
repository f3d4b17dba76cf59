"""Route and listener entries Envoy refused: each falls back to its last accepted form while the rest
of the config moves on.

A NACK names no YAML entry for routes; once the entries at fault are known (controlplane.nacks
bisects route tables with `envoy --mode validate`, and reads listener names in Envoy's LDS error),
each is held here with the form Envoy refused. `apply` turns the loaded config into the one served:
a held entry is replaced by the last form a proxy acked, or left out when it never had one. A
listener left out takes the routes that name it along (they cannot be served without it, and the
config stays valid). When its team edits the entry (its form differs from the refused one), the
hold ends and the new form is tried. The served config differs from the refused one, so it gets a
new version: the refused version is never sent again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from controlplane.config.model import Config, Listener, Route
from controlplane.server.stream import iso_time

E = TypeVar("E", Route, Listener)


@dataclass(frozen=True)
class Refusal(Generic[E]):
    entry: E  # the form Envoy refused
    errors: tuple[str, ...]
    region: str
    at: float  # wall-clock seconds

    def status(self, fallback: E | None) -> dict[str, Any]:
        return {"errors": list(self.errors), "region": self.region, "at": iso_time(self.at),
                "source": str(self.entry.source),
                "serving": "last accepted form" if fallback is not None else "left out (never accepted)"}


class Holds(Generic[E]):
    """One kind of entry (routes or listeners): the last accepted form and the refused form, by name."""

    def __init__(self) -> None:
        self.accepted: dict[str, E] = {}  # name -> last form a proxy acked
        self.refused: dict[str, Refusal[E]] = {}
        # The entries last recorded, while no refusal changed since: every proxy's ACK of one config
        # records the same entries, and walking 10,000 routes per ACK was a third of the event loop's
        # time when a fleet took a change (bench.xds_scale). Recording them again would change nothing.
        self._recorded: Sequence[E] | None = None

    def refuse(self, entry: E, errors: list[str], region: str) -> None:
        self.refused[entry.name] = Refusal(entry, tuple(errors), region, time.time())
        self._recorded = None
        if self.accepted.get(entry.name) == entry:
            # Acked in another region, refused here: serving it again would change nothing. Leave it out.
            del self.accepted[entry.name]

    def record_accepted(self, entries: Sequence[E]) -> None:
        if entries is self._recorded:
            return
        for entry in entries:
            refusal = self.refused.get(entry.name)
            if refusal is None or refusal.entry != entry:
                self.accepted[entry.name] = entry
        self._recorded = entries

    def forget_edited(self, entries: Sequence[E]) -> None:
        """End the hold of every entry edited or deleted since it was refused: its new form is tried."""
        present = {entry.name: entry for entry in entries}
        for name in [name for name, refusal in self.refused.items() if present.get(name) != refusal.entry]:
            del self.refused[name]
            self._recorded = None

    def served(self, entries: Sequence[E]) -> tuple[E, ...]:
        kept = []
        for entry in entries:
            if entry.name not in self.refused:
                kept.append(entry)
            elif entry.name in self.accepted:
                kept.append(self.accepted[entry.name])
        return tuple(kept)

    def status(self, name: str) -> dict[str, Any] | None:
        refusal = self.refused.get(name)
        return refusal.status(self.accepted.get(name)) if refusal is not None else None


class RouteFallback:
    """The fallback of route and listener entries (the name is historical: routes came first)."""

    def __init__(self) -> None:
        self.routes: Holds[Route] = Holds()
        self.listeners: Holds[Listener] = Holds()

    @property
    def accepted(self) -> dict[str, Route]:
        return self.routes.accepted

    @property
    def refused(self) -> dict[str, Refusal[Route]]:
        return self.routes.refused

    def refuse(self, route: Route, errors: list[str], region: str) -> None:
        self.routes.refuse(route, errors, region)

    def refuse_listener(self, listener: Listener, errors: list[str], region: str) -> None:
        self.listeners.refuse(listener, errors, region)

    def record_accepted(self, served: Config) -> None:
        """A proxy acked the route tables of `served`: every route in it is accepted in that form."""
        self.routes.record_accepted(served.routes)

    def record_accepted_listeners(self, served: Config) -> None:
        """A proxy acked the listeners of `served`: every listener in it is accepted in that form."""
        self.listeners.record_accepted(served.listeners)

    def apply(self, loaded: Any) -> Any:
        """The config to serve for `loaded`; anything that is not a Config (tests' toys) passes through."""
        if not isinstance(loaded, Config) or not (self.routes.refused or self.listeners.refused):
            return loaded
        self.routes.forget_edited(loaded.routes)
        self.listeners.forget_edited(loaded.listeners)
        if not (self.routes.refused or self.listeners.refused):
            return loaded
        listeners = self.listeners.served(loaded.listeners)
        names = {item.name for item in listeners}
        # A route whose listener is left out cannot be served: it goes too (the config stays valid).
        routes = tuple(route for route in self.routes.served(loaded.routes) if route.listener in names)
        return replace(loaded, listeners=listeners, routes=routes)

    def status(self, name: str) -> dict[str, Any] | None:
        return self.routes.status(name)

    def route_status(self, route: Route) -> dict[str, Any] | None:
        """The refusal of `route`, or of its listener when that listener is left out (and the route with it)."""
        own = self.routes.status(route.name)
        if own is not None:
            return own
        listener = self.listeners.status(route.listener)
        if listener is None or route.listener in self.listeners.accepted:
            return None
        return {**listener, "serving": f"left out (its listener {route.listener} was refused, never accepted)"}

    def listener_status(self) -> dict[str, dict[str, Any]]:
        return {name: status for name in sorted(self.listeners.refused)
                if (status := self.listeners.status(name)) is not None}

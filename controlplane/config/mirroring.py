"""A route's `mirrors` (shadow traffic): percents as Envoy counts them (per million), and the rules that
look at the rest of the route (what it sends to, whether it answers by itself or is a websocket)."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from controlplane.config import model
from controlplane.config.policy import Problem
from controlplane.config.shape import Fields, Got
from pavilion.errors import ConfigError, Location
from pavilion.yaml_nodes import Scalar, describe

# Builder.refer: whether the name in a field is defined, reporting it (with a suggestion) when not.
Refer = Callable[[Fields, str, dict[str, Location], str], bool]

__all__ = ["PERCENT_SCHEMA", "PER_MILLION", "percent_reader", "read_mirrors", "read_percent"]

# Envoy's finest FractionalPercent denominator: a percent with up to 4 decimals is exact in it.
PER_MILLION = 1_000_000
_DECIMALS = 4
PERCENT_SCHEMA = {"type": "number", "minimum": 0, "maximum": 100,
                  "description": "a percent from 0 to 100, at most 4 decimals, like 100 or 0.5"}


def percent_reader(counted: str) -> Callable[[Any, str, list[Any]], int | None]:
    """A reader of `percent:` nodes (0-100, an integer or a decimal like 0.5) giving parts per million, or
    None after appending the problem to `errors`; `counted` names what Envoy counts per million."""

    def read(node: Any, path: str, errors: list[Any]) -> int | None:
        value = node.value if isinstance(node, Scalar) else None
        if not isinstance(value, int | float) or isinstance(value, bool):
            errors.append(ConfigError(f"expected a percent from 0 to 100 (like 100 or 0.5), got {describe(node)}",
                                      location=node.loc, path=path))
            return None
        written = node.written or repr(value)
        exact = Decimal(repr(value)) if math.isfinite(value) else Decimal(-1)
        if not 0 <= exact <= 100:
            errors.append(ConfigError(f"must be a percent from 0 to 100, got {written}", location=node.loc, path=path))
            return None
        parts = exact * PER_MILLION / 100
        if parts != parts.to_integral_value():
            errors.append(ConfigError(f"{written} has more than {_DECIMALS} decimals; Envoy counts {counted} "
                                      "per million", location=node.loc, path=path))
            return None
        return int(parts)

    return read


read_percent = percent_reader("mirrored requests")


def read_mirrors(f: Fields, backends: tuple[model.Backend, ...] | None, answer: str | None,
                 services: dict[str, Location], refer: Refer,
                 problem: Problem) -> tuple[bool, tuple[model.Mirror, ...]]:
    """(ok, the route's mirrors): each a defined service, named once, none of the route's own backends,
    on a route that calls a service and is not a websocket. `refer` reports an unknown name, as for the
    route's own `service` (build.Builder.refer)."""
    if "mirrors" not in f:
        return "mirrors" not in f.given, ()
    where, path = f.at("mirrors"), f.path_of("mirrors")
    if answer is not None:
        problem(f"mirrors copy requests sent to a service; a {answer} route calls none", where, path)
        return False, ()
    if f.get("websocket") is True:
        problem("a websocket cannot be mirrored: the mirror would get the upgrade request alone and hold a "
                "connection open, never the messages; mirror a route without `websocket`", where, path)
        return False, ()
    own = {b.service for b in backends or ()}
    ok = True
    seen: dict[str, Location] = {}
    mirrors: list[model.Mirror] = []
    for got in f.get("mirrors", []):
        entry: Fields = got.value
        if "service" not in entry:
            ok = False
            continue
        name = entry.get("service")
        at, at_path = entry.at("service"), entry.path_of("service")
        if name in seen:
            problem(f"service {name!r} is mirrored twice (first at {seen[name]})", at, at_path)
            ok = False
        elif not refer(entry, "service", services, "service"):
            ok = False
        elif name in own:
            problem(f"service {name!r} is the route's own: every mirrored request would reach it twice", at, at_path)
            ok = False
        seen.setdefault(name, at)
        if entry.complete:
            mirrors.append(model.Mirror(name, entry.get("percent", PER_MILLION)))
    ok = ok and _all_complete(f.get("mirrors", []))
    return ok, tuple(mirrors) if ok else ()


def _all_complete(items: list[Got]) -> bool:
    return all(isinstance(got.value, Fields) and got.value.complete for got in items)

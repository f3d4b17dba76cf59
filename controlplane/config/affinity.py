"""A route's `hash_on` (session affinity) and the rules that tie it to its services' `load_balancing`.

A hash only picks the host under Envoy's ring_hash and maglev balancers; any other balancer ignores it
without a word, so a route that asks for affinity from such a service is refused instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from controlplane.config import model
from controlplane.config.policy import Problem
from controlplane.config.rules import HASH_BALANCING
from controlplane.config.shape import Fields, Got

__all__ = ["read_hash_on"]

def read_hash_on(f: Fields, backends: tuple[model.Backend, ...] | None, answer: str | None,
                 services: Mapping[str, Fields], problem: Problem) -> tuple[bool, tuple[model.HashKey, ...]]:
    """(ok, keys) of route `f`; not ok after a problem was reported. `answer` names the route's
    redirect or direct_response, if it has one; `services` holds every service entry by name."""
    if "hash_on" not in f.given:
        return True, ()
    if answer is not None:
        problem(f"hash_on applies to a route that calls a service, not to a {answer}", f.at("hash_on"),
                f.path_of("hash_on"))
        return False, ()
    ok = True
    for backend in backends or ():
        entry = services.get(backend.service)
        balancing = entry.get("load_balancing", "round_robin") if entry is not None else None
        if balancing is not None and balancing not in HASH_BALANCING:
            problem(f"hash_on needs service {backend.service!r} to balance by hash (`load_balancing: ring_hash` or "
                    f"`maglev`); it uses {balancing}, which ignores the hash, so requests would not stick to a "
                    "host", f.at("hash_on"), f.path_of("hash_on"))
            ok = False
    keys: list[model.HashKey] = []
    for got in f.get("hash_on", []):
        key = _hash_key(got, problem)
        ok = key is not None and ok
        if key is not None:
            keys.append(key)
    return ok, tuple(keys)


def _hash_key(got: Got, problem: Problem) -> model.HashKey | None:
    entry: Fields = got.value
    if not entry.complete:
        return None
    if "header" in entry:
        return model.HashKey("header", entry.get("header"))
    if "query" in entry:
        return model.HashKey("query", entry.get("query"))
    if "source_ip" in entry:
        return model.HashKey("source_ip")
    cookie: Fields = entry.get("cookie")
    if "path" in cookie and "ttl" not in cookie:
        problem("path applies to the cookie Envoy sets, which needs `ttl`", cookie.at("path"), cookie.path_of("path"))
        return None
    return model.HashKey("cookie", cookie.get("name"), cookie.get("ttl"), cookie.get("path"))

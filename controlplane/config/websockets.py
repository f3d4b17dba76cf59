"""A route's `websocket`: the rules that look at the rest of the route (whether it answers by itself,
its retries) and at the services it sends to."""

from __future__ import annotations

from controlplane.config import model
from controlplane.config.policy import Problem
from controlplane.config.shape import Fields

__all__ = ["read_websocket"]


def read_websocket(f: Fields, answer: str | None, backends: tuple[model.Backend, ...] | None,
                   service_fields: dict[str, Fields], problem: Problem) -> tuple[bool, bool]:
    """(ok, whether the route lets clients upgrade to a websocket): on a route that calls HTTP/1.1
    services, without retries (an upgraded connection cannot be replayed)."""
    if f.get("websocket") is not True:
        return "websocket" in f or "websocket" not in f.given, False
    where, path = f.at("websocket"), f.path_of("websocket")
    if answer is not None:
        problem(f"a {answer} route answers by itself; a websocket needs a service to upgrade to", where, path)
        return False, False
    ok = True
    if "retries" in f.given:
        problem("retries do not apply to a websocket: an upgraded connection cannot be replayed; "
                "leave retries out (or keep plain requests on a route of their own)", f.at("retries"),
                f.path_of("retries"))
        ok = False
    for backend in backends or ():
        service = service_fields.get(backend.service)
        protocol = service.get("protocol", "http1") if service is not None else "http1"
        if protocol != "http1":
            problem(f"service {backend.service!r} speaks {protocol}; a websocket is upgraded from HTTP/1.1, "
                    "so its service needs `protocol: http1`", where, path)
            ok = False
    return ok, ok

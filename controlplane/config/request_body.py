"""A route's `max_request_body`: the largest request body Envoy passes to the route's services.

Envoy's buffer filter holds the whole body before the request goes upstream and answers 413 past the
limit, so it fits bodies that end: not a websocket's (an upgrade never ends its request) nor a gRPC
stream's. A size is a whole number with a unit: `B`, `kB`/`MB` (1000) or `KiB`/`MiB` (1024).
"""

from __future__ import annotations

import re

from controlplane.config import model
from controlplane.config.policy import Problem
from controlplane.config.shape import Fields

__all__ = ["A_SIZE", "MAX_BODY_BYTES", "SIZE_PATTERN", "byte_size", "read_max_request_body"]

MAX_BODY_BYTES = 64 * 1024 * 1024  # what one request may make one Envoy hold in memory
SIZE_PATTERN = r"^\s*\d+\s*(B|kB|KiB|MB|MiB)\s*$"
A_SIZE = "a size with a unit (B, kB, KiB, MB, MiB), like 64KiB or 1MB"
_UNITS = {"B": 1, "kB": 1000, "KiB": 1024, "MB": 1000 ** 2, "MiB": 1024 ** 2}


def byte_size(text: str) -> int:
    """`512B`, `64KiB`, `1MB`: a body size from 1 byte to 64 MiB."""
    match = re.fullmatch(SIZE_PATTERN, text)
    if match is None:
        raise ValueError(f"{text!r} is not {A_SIZE}")
    size = int(re.sub(r"\D", "", text)) * _UNITS[match.group(1)]
    if not 1 <= size <= MAX_BODY_BYTES:
        raise ValueError(f"{text!r} is {'no bytes' if size < 1 else 'more than 64 MiB'}; "
                         "give a size from 1 byte to 64MiB")
    return size


def read_max_request_body(f: Fields, backends: tuple[model.Backend, ...] | None,
                          service_fields: dict[str, Fields], problem: Problem) -> tuple[bool, int | None]:
    """(ok, the route's body limit in bytes or None): not on a websocket route, nor to a gRPC service."""
    limit: int | None = f.get("max_request_body")
    if limit is None:
        return "max_request_body" in f or "max_request_body" not in f.given, None
    where, path = f.at("max_request_body"), f.path_of("max_request_body")
    ok = True
    if f.get("websocket") is True:
        problem("a websocket's upgrade request never ends, so Envoy would hold it for good; leave "
                "max_request_body out of a websocket route", where, path)
        ok = False
    for backend in backends or ():
        service = service_fields.get(backend.service)
        if service is not None and service.get("protocol", "http1") == "grpc":
            problem(f"service {backend.service!r} speaks gRPC, whose streams Envoy would hold until they end; "
                    "limit gRPC messages in the service instead", where, path)
            ok = False
    return ok, limit if ok else None

"""The top-level `access_log:` and `tracing:` (and their rules) of the merged directory.

Access logs are on unless a file says `access_log: off`: at the edge, a request nobody can find
afterwards is an incident nobody can explain (Envoy Gateway logs JSON to stdout by default too;
Istio leaves it to the mesh config). What goes in a line is fixed by the translation
(controlplane/translate/_access_log.py) and never holds a header value or the query.
"""

from __future__ import annotations

import re

from controlplane.config import model
from controlplane.config.build import Builder
from controlplane.config.sections import given_once
from controlplane.config.shape import Fields
from pavilion.errors import ConfigError

__all__ = ["ACCESS_LOG_FORMATS", "check_tracing", "log_path", "read_access_log", "read_tracing",
           "sampling_percent", "service_name"]

ACCESS_LOG_FORMATS = ("json", "text")


def log_path(text: str) -> str:
    """An absolute path Envoy can open for appending."""
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not an absolute path (Envoy runs elsewhere than this YAML)")
    if any(ord(c) < 32 for c in text) or text.endswith("/"):
        raise ValueError(f"{text!r} is not a file path")
    return text


def sampling_percent(text: str) -> float:
    """`1%`, `0.5%`, `100%`: a percent of requests, 0 to 100."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not a percent like 1% or 0.5%")
    value = float(match.group(1))
    if value > 100:
        raise ValueError(f"{text!r} is more than 100%")
    return value


def service_name(text: str) -> str:
    if not text.strip() or any(ord(c) < 32 for c in text):
        raise ValueError(f"{text!r} is empty or holds a control character")
    return text


def read_tracing(roots: list[Fields], errors: list[ConfigError]) -> model.Tracing | None:
    """`tracing:` if one file gives it whole, else None."""
    f: Fields | None = given_once(roots, "tracing", errors)
    if f is None or not f.complete:
        return None
    return model.Tracing(f.get("service"), f.get("sampling", 1.0), f.get("service_name", "pavilion-edge"))


def check_tracing(roots: list[Fields], services: list[Fields], builder: Builder) -> None:
    """`tracing.service` names a defined service that speaks gRPC (OTLP over gRPC)."""
    f: Fields | None = next((root.get("tracing") for root in roots if "tracing" in root.given), None)
    if not isinstance(f, Fields) or "service" not in f:
        return
    if not builder.refer(f, "service", builder.names.services, "service"):
        return
    name = f.get("service")
    protocol = next((s.get("protocol", "http1") for s in services if s.get("name") == name), "http1")
    if protocol != "grpc":
        builder.problem(f"service {name!r} has protocol {protocol}; an OTLP collector is asked over gRPC: "
                        "give it `protocol: grpc`", f.at("service"), f.path_of("service"))


def read_access_log(roots: list[Fields], errors: list[ConfigError]) -> model.AccessLog | None:
    """The access log settings: the default when no file gives `access_log:`, None for `off`."""
    # Either's scalar form (`off`) arrives as a plain string; the mapping form as Fields.
    found: Fields | str | None = given_once(roots, "access_log", errors)
    if found is None:
        return model.AccessLog()
    if isinstance(found, str):
        return None
    if not found.complete:
        return model.AccessLog()
    return model.AccessLog(found.get("format", "json"), found.get("path"), found.get("subject", False))


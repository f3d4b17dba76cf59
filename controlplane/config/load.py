"""Load the route YAML: a directory of files (or one file) merged into one `Config`.

`parse_sources` is pure (texts in, Config or ConfigErrors out); `read_sources` does the file I/O;
`load_config` is both. Every problem of every file is reported in one ConfigErrors, sorted by place.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from controlplane.config.build import Builder, Names
from controlplane.config.delegation import check_delegations
from controlplane.config.error_responses import read_error_responses
from controlplane.config.listener_tls import LoadErrors
from controlplane.config.model import Config, Match, Route
from controlplane.config.observability import check_tracing, read_access_log, read_tracing
from controlplane.config.rollout import read_rollout
from controlplane.config.sections import check_services, read_sections
from controlplane.config.shape import Fields, Got, Shape
from controlplane.config.spec import ROOT
from pavilion.config_files import Source, read_sources
from pavilion.errors import ConfigError, Location
from pavilion.yaml_nodes import parse_documents

__all__ = ["load_config", "parse_sources"]

T = TypeVar("T")


def load_config(path: str | Path) -> Config:
    """The merged config of `path` (a directory, searched recursively, or one file); ConfigErrors if bad."""
    return parse_sources(read_sources(path))


def parse_sources(sources: Sequence[Source]) -> Config:
    """Merge the sources, in the order given, into one Config; ConfigErrors lists every problem."""
    with _gc_paused():
        return _merge(sources)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Loading makes hundreds of thousands of small acyclic objects that all survive, and the cyclic
    collector would rescan them again and again: 10,000 routes load in ~1 s instead of ~4 s."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _merge(sources: Sequence[Source]) -> Config:
    roots: list[Fields] = []
    errors: list[ConfigError] = []
    for source in sources:
        file_roots, file_errors = _read_file(source.text, source.name)
        roots += file_roots
        errors += file_errors
    names = Names()
    for region in _entries(roots, "regions"):
        names.regions.setdefault(region.value, region.loc)
    listeners = _unique(_entries(roots, "listeners"), "listener", names.listeners, errors)
    names.listener_fields = {f.get("name"): f for f in listeners}
    services = _unique(_entries(roots, "services"), "service", names.services, errors)
    names.service_fields = {f.get("name"): f for f in services}
    routes = _unique(_entries(roots, "routes"), "route", {}, errors)
    sections = read_sections(roots, errors)
    names.policy = sections.policy
    builder = Builder(names, errors)
    check_services(sections, services, builder)
    check_tracing(roots, services, builder)
    config = Config(
        regions=tuple(names.regions),
        listeners=_built(builder.listener(f) for f in listeners),
        services=_built(builder.service(f) for f in services),
        routes=_built(builder.route(f) for f in routes),
        tenants=sections.model_tenants(),
        extauthz=sections.model_extauthz(),
        ratelimit=sections.model_ratelimit(),
        access_log=read_access_log(roots, errors),
        tracing=read_tracing(roots, errors),
        rollout=read_rollout(roots, builder, errors),
        error_responses=read_error_responses(roots, errors),
    )
    _check_ports(listeners, errors)
    _check_shadowed(config.routes, errors)
    check_delegations(roots, config, errors)
    if errors:
        raise LoadErrors(sorted(errors, key=_place), tuple(builder.files))
    return config


FileResult = tuple[tuple[Fields, ...], tuple[ConfigError, ...]]

# The last result per file name. The pure-Python YAML parser costs about a millisecond per route and
# a reload usually changes one file of many; keeping one entry per name bounds the memory by the
# directory's size. Nothing downstream mutates what is kept.
_LAST_READ: dict[str, tuple[str, FileResult]] = {}


def _read_file(text: str, name: str) -> FileResult:
    """One file's checked documents and its own problems (those visible without the other files)."""
    kept = _LAST_READ.get(name)
    if kept is not None and kept[0] == text:
        return kept[1]
    result = _check_file(text, name)
    _LAST_READ[name] = (text, result)
    return result


def _check_file(text: str, name: str) -> FileResult:
    shape = Shape()
    try:
        documents = parse_documents(text, name)
    except ConfigError as exc:
        return (), (exc,)
    roots = tuple(got.value for got in (shape.read(document, ROOT, "") for document in documents) if got is not None)
    return roots, tuple(shape.errors)


def _entries(roots: list[Fields], key: str) -> list[Got]:
    return [got for root in roots for got in root.get(key, [])]


def _unique(items: list[Got], what: str, first: dict[str, Location], errors: list[ConfigError]) -> list[Fields]:
    """Entries in order, dropping any whose name was defined before (reported with both places)."""
    kept: list[Fields] = []
    for got in items:
        f: Fields = got.value
        name = f.get("name")
        if name is not None and name in first:
            errors.append(ConfigError(f"{what} {name!r} is already defined at {first[name]}",
                                      location=f.at("name"), path=f.path_of("name")))
            continue
        if name is not None:
            first[name] = f.at("name")
        kept.append(f)
    return kept


def _built(items: Iterable[T | None]) -> tuple[T, ...]:
    return tuple(item for item in items if item is not None)


def _check_ports(listeners: list[Fields], errors: list[ConfigError]) -> None:
    """Two listeners cannot bind the same port on overlapping addresses; Envoy would fail to bind."""
    wildcard = ("0.0.0.0", "::")
    bound = [f for f in listeners if f.complete]
    for index, item in enumerate(bound):
        address, port = item.get("address"), item.get("port")
        for earlier in bound[:index]:
            other = earlier.get("address")
            overlap = address == other or address in wildcard or other in wildcard
            if port == earlier.get("port") and overlap:
                errors.append(ConfigError(
                    f"port {port} on {address} is already taken by listener {earlier.get('name')!r} "
                    f"at {earlier.at('port')}", location=item.at("port"), path=item.path_of("port")))
                break


def _check_shadowed(routes: tuple[Route, ...], errors: list[ConfigError]) -> None:
    """Two routes with the same listener, hosts and match: Envoy would only ever use one of them."""
    first: dict[tuple[str, frozenset[str], Match], Route] = {}
    for route in routes:
        key = (route.listener, frozenset(route.hosts), route.match)
        if key in first:
            other = first[key]
            errors.append(ConfigError(
                f"route {other.name!r} at {other.source} has the same listener, hosts and match; "
                "Envoy would only ever use one of the two", location=route.source, path=f"routes[{route.name}].match"))
        first.setdefault(key, route)


def _place(error: ConfigError) -> tuple[str, int, int]:
    loc = error.location or Location("")
    return loc.file, loc.line, loc.column

"""`delegations:`: the files a team writes, and the hosts and paths their routes may take.

The most specific route wins whatever file it is in (translate/_routes.py), and every file may add
tenants: without a fence, a team file could take `/v1/accounts/admin` from the accounts team with a
longer prefix, open a route to everyone with `auth: none`, or trust its own token issuer on every route
that admits any tenant. A delegation fences files in, as Contour's HTTPProxy inclusion or the Gateway
API's allowedRoutes do: a delegated file holds only `services` and `routes`, and each route's hosts and
paths lie inside what was handed over. Files no delegation names are the platform's own, unfenced:
guard them with the repository's review rules (CODEOWNERS).
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
from dataclasses import dataclass
from fnmatch import fnmatchcase

from controlplane.config.hosts import covers
from controlplane.config.model import Config, FileStamp, Route, Service
from controlplane.config.networks import IPNetwork
from controlplane.config.rules import REGEX_SPECIAL
from controlplane.config.shape import Fields, Got
from pavilion.errors import ConfigError, Location

__all__ = ["DELEGATED_KEYS", "check_delegations", "file_pattern", "regex_under"]

# What a team's file may hold; the rest (listeners, tenants, extauthz...) is the platform's.
DELEGATED_KEYS = ("services", "routes")


def file_pattern(text: str) -> str:
    """A folder (ending in '/') or a glob, relative to the declaring file's folder; `*` does not cross '/'."""
    if not text or text.startswith("/") or "\\" in text:
        raise ValueError(f"{text!r} must be a path relative to this file's folder, with '/' between folders")
    if ".." in text.split("/") or "." in text.split("/")[:-1]:
        raise ValueError(f"{text!r}: '.' and '..' are not allowed; name the folders")
    return text


@dataclass(frozen=True)
class Delegation:
    base: str  # folder of the file that declares it
    files: tuple[str, ...]
    hosts: tuple[str, ...]
    paths: tuple[str, ...]
    public: bool
    loc: Location
    services: tuple[str, ...] = ()  # services of other files its routes may send to
    audiences: tuple[str, ...] = ()  # identity assertion audiences its routes may ask for
    networks: tuple[IPNetwork, ...] = ()  # where its services' endpoints may be; empty: anywhere
    listeners: tuple[str, ...] = ()  # the listeners its routes may serve on; empty: any

    def names(self, file: str) -> bool:
        relative = posixpath.relpath(file, self.base)
        if relative.startswith("../"):
            return False
        return any(_pattern_names(pattern, relative) for pattern in self.files)


def _pattern_names(pattern: str, relative: str) -> bool:
    if pattern.endswith("/"):
        return relative.startswith(pattern)
    want, have = pattern.split("/"), relative.split("/")
    return len(want) == len(have) and all(fnmatchcase(h, w) for w, h in zip(want, have, strict=True))


def regex_under(regex: str, prefix: str) -> bool:
    """Whether every path `regex` matches in full starts with `prefix`: the regex spells `prefix` first,
    character for character, and has no `|` outside a group. Conservative: an escape, class or construct
    this reading is not sure of answers False, and the author writes the regex more plainly."""
    position = 1 if regex.startswith("^") else 0
    for char in prefix:
        if position < len(regex) and regex[position] == "\\" and position + 1 < len(regex) \
                and regex[position + 1] == char and not char.isalnum():
            position += 2
        elif position < len(regex) and regex[position] == char and char not in REGEX_SPECIAL:
            position += 1
        else:
            return False
    # A quantifier right after the prefix would make its last character optional or repeated.
    if regex[position:position + 1] in ("?", "*", "+", "{"):
        return False
    return _no_top_level_alternation(regex[position:])


def _no_top_level_alternation(tail: str) -> bool:
    depth, index = 0, 0
    while index < len(tail):
        char = tail[index]
        if char == "\\":
            if tail[index + 1:index + 2] in ("Q", "E", ""):
                return False  # \Q...\E quotes a run that may hold ')' or '|'
            index += 2
            continue
        if char == "[":
            end = _class_end(tail, index)
            if end < 0:
                return False
            index = end + 1
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                return False
        elif char == "|" and depth == 0:
            return False
        index += 1
    return depth == 0


def _class_end(text: str, start: int) -> int:
    """Index of the `]` closing the class opened at `start`; -1 when unsure (POSIX classes, unclosed)."""
    index = start + 1
    if text[index:index + 1] == "^":
        index += 1
    if text[index:index + 1] == "]":
        index += 1  # a ']' first in a class is literal
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "[":
            return -1  # `[[:alpha:]]` and friends: RE2 reads them differently from a plain '['
        if char == "]":
            return index
        index += 1
    return -1


def read_delegations(roots: list[Fields]) -> list[Delegation]:
    found = []
    for root in roots:
        for got in root.get("delegations", []):
            f: Fields = got.value
            if f.complete:
                keys = ("files", "hosts", "paths", "services", "audiences", "networks", "listeners")
                files, hosts, paths, services, audiences, networks, listeners = (
                    tuple(g.value for g in f.get(key, [])) for key in keys)
                found.append(Delegation(posixpath.dirname(root.loc.file), files, hosts, paths,
                                        f.get("public", False), f.loc, services, audiences, networks, listeners))
    return found


def check_delegations(roots: list[Fields], config: Config, errors: list[ConfigError]) -> None:
    """Append an error for everything a delegated file holds outside its delegation."""
    delegations = read_delegations(roots)
    if not delegations:
        return
    owner: dict[str, Delegation] = {}
    for root in roots:
        file = root.loc.file
        claiming = [d for d in delegations if d.names(file)]
        if len(claiming) > 1:
            errors.append(ConfigError(f"this file is delegated twice: at {claiming[0].loc} and at {claiming[1].loc}",
                                      location=root.loc))
            continue
        if not claiming:
            continue
        owner[file] = claiming[0]
        for key, got in root.got.items():
            if key not in DELEGATED_KEYS:
                errors.append(_outside(got, key, claiming[0], f"a delegated file holds only "
                                       f"{' and '.join(DELEGATED_KEYS)}; `{key}` is the platform's"))
    service_owner = {service.name: owner.get(service.source.file) for service in config.services}
    written = {got.value.get("name"): got.value for root in roots for got in root.get("routes", [])}
    for route in config.routes:
        delegation = owner.get(route.source.file)
        if delegation is not None:
            problems = _route_problems(route, delegation,
                                       _foreign([b.service for b in route.backends], delegation, service_owner),
                                       _foreign([m.service for m in route.mirrors], delegation, service_owner))
            for path, message in problems:
                errors.append(ConfigError(f"{message} (delegation at {delegation.loc})",
                                          location=_place(written.get(route.name), path) or route.source,
                                          path=f"routes[{route.name}].{path}"))
    for service in config.services:
        delegation = owner.get(service.source.file)
        if delegation is not None and service.tls is not None:
            errors += _tls_problems(service, service.tls.files, delegation)
        if delegation is not None and delegation.networks:
            errors += _endpoint_problems(service, delegation)


def _endpoint_problems(service: Service, delegation: Delegation) -> list[ConfigError]:
    """Endpoints inside the delegation's `networks`: a team's service must not reach the platform's own
    (Redis, the control plane's admin port) under the team's path."""
    networks = ", ".join(str(n) for n in delegation.networks)
    return [ConfigError(f"endpoint {endpoint.host}:{endpoint.port} is outside the delegated networks {networks} "
                        f"(delegation at {delegation.loc})", location=service.source,
                        path=f"services[{service.name}].endpoints")
            for endpoint in service.endpoints
            if not any(ipaddress.ip_address(endpoint.host) in network for network in delegation.networks)]


def _tls_problems(service: Service, files: tuple[FileStamp, ...], delegation: Delegation) -> list[ConfigError]:
    """A team's TLS files lie in its own folder: else its service could show Envoy the platform's client
    certificate (the gateway's identity) to any host it names."""
    folder = os.path.realpath(posixpath.dirname(service.source.file))
    where = f"services[{service.name}].tls"
    return [ConfigError(f"{path!r} lies outside this file's folder; a delegated file's TLS files are its own "
                        f"(delegation at {delegation.loc})", location=service.source, path=where)
            for path, _stamp in files
            if not os.path.realpath(path).startswith(folder + os.sep)]


def _outside(got: Got, path: str, delegation: Delegation, message: str) -> ConfigError:
    return ConfigError(f"{message} (delegation at {delegation.loc})", location=got.loc, path=path)


def _foreign(names: list[str], team: Delegation, service_owner: dict[str, Delegation | None]) -> list[str]:
    """The services of `names` that are neither defined in the team's files nor lent to it."""
    return [name for name in names if service_owner.get(name) is not team and name not in team.services]


def _place(fields: Fields | None, path: str) -> Location | None:
    """Where the route wrote the field at the dotted `path` (as deep as it goes), for the error to point at."""
    place = None
    for name in path.split("."):
        if not isinstance(fields, Fields) or name not in fields:
            break
        place, fields = fields.at(name), fields.get(name)
    return place


def _route_problems(route: Route, delegation: Delegation, foreign: list[str],
                    foreign_mirrors: list[str]) -> list[tuple[str, str]]:
    """(field path, problem) of `route`. `foreign`, `foreign_mirrors`: the services it sends to, or mirrors to,
    that are neither the delegation's nor lent to it."""
    problems: list[tuple[str, str]] = []
    for host in route.hosts:
        if not any(covers(granted, host) for granted in delegation.hosts):
            hint = "; give the route `hosts`" if host == "*" else ""
            problems.append(("hosts", f"{host!r} is outside the delegated hosts {', '.join(delegation.hosts)}{hint}"))
    if delegation.listeners and route.listener not in delegation.listeners:
        problems.append(("listener", f"{route.listener!r} is not among the delegated listeners "
                                     f"{', '.join(delegation.listeners)}"))
    match, paths = route.match, ", ".join(delegation.paths)
    literal = match.prefix if match.prefix is not None else match.path
    if literal is not None and not any(literal.startswith(p) for p in delegation.paths):
        field = "match.prefix" if match.prefix is not None else "match.path"
        problems.append((field, f"{literal!r} is outside the delegated paths {paths}"))
    if match.regex is not None and not any(regex_under(match.regex, p) for p in delegation.paths):
        problems.append(("match.regex", f"cannot tell that every path it matches starts with one of {paths}; "
                                        "begin it with one of them literally and keep any `|` inside a group"))
    if route.auth is not None and route.auth.public and not delegation.public:
        problems.append(("auth", "`none` (public) is not delegated; the delegation would need `public: true`"))
    # Another team's service under this team's path and `auth` would skip that team's own requirements.
    field = "backends" if len(route.backends) > 1 else "service"
    for service in foreign:
        problems.append((field, f"{service!r} is another team's or the platform's service; a delegated route "
                                "sends to its own files' services or those in the delegation's `services`"))
    # A copy of the team's requests (tokens and identity headers included) is sent like any other.
    for service in foreign_mirrors:
        problems.append(("mirrors", f"{service!r} is another team's or the platform's service; a delegated route "
                                    "mirrors to its own files' services or those in the delegation's `services`"))
    audience = route.auth.identity_audience if route.auth is not None else None
    if audience is not None and audience not in delegation.audiences:
        # The team's upstream gets the assertion: for another audience, it could replay it there.
        problems.append(("auth.identity.audience", f"{audience!r} is not in the delegation's `audiences`"))
    return problems

"""Checked fields to model objects, with the rules that look at more than one value: references
to listeners, services and regions, weights, backoff order, rewrite with regex (and, through
route_answers, CORS, redirects and direct responses)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from controlplane.config import model
from controlplane.config.affinity import read_hash_on
from controlplane.config.client_address import read_client_address
from controlplane.config.compression import read_listener_compression, read_route_compression
from controlplane.config.faults import read_fault
from controlplane.config.listener_tls import http3_twin, read_listener_tls
from controlplane.config.local_limits import read_listener_local_rate_limit, read_local_rate_limit
from controlplane.config.match_conditions import read_match
from controlplane.config.mirroring import read_mirrors
from controlplane.config.model import FileStamp
from controlplane.config.networks import read_allow_networks, within_listener
from controlplane.config.policy import Policy, route_auth, route_rate_limits
from controlplane.config.request_body import read_max_request_body
from controlplane.config.route_answers import (
    ANSWERS,
    FORWARD_ONLY,
    https_port,
    read_cors,
    read_direct_response,
    read_redirect,
)
from controlplane.config.service_tls import read_service_tls
from controlplane.config.shape import Fields, Got
from controlplane.config.websockets import read_websocket
from pavilion.durations import format_duration
from pavilion.errors import ConfigError, Location
from pavilion.yaml_nodes import suggest

T = TypeVar("T")


@dataclass
class Names:
    """What entries may refer to: defined names and where each was first defined."""

    regions: dict[str, Location] = field(default_factory=dict)
    listeners: dict[str, Location] = field(default_factory=dict)
    services: dict[str, Location] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)
    # Every listener entry by name, for `redirect_to_https` and the routes that may not use those listeners.
    listener_fields: dict[str, Fields] = field(default_factory=dict)
    # Every service entry by name, for the `load_balancing` a route's `hash_on` needs.
    service_fields: dict[str, Fields] = field(default_factory=dict)

    def redirecting(self, name: str) -> bool:
        item = self.listener_fields.get(name)
        return item is not None and "redirect_to_https" in item.given


class Builder:
    def __init__(self, names: Names, errors: list[ConfigError]) -> None:
        self.names = names
        self.errors = errors
        self.files: list[FileStamp] = []  # files besides the YAML read while building, good or bad

    def problem(self, message: str, loc: Location, path: str) -> None:
        self.errors.append(ConfigError(message, location=loc, path=path))

    def listener(self, f: Fields) -> model.Listener | None:
        tls_fields: Fields | None = f.get("tls")
        # Read here, not while checking the file's shape: that result is kept while the YAML text is
        # unchanged, and a rotated certificate must be read again.
        tls = (read_listener_tls(tls_fields, self.problem, self.files, regions=self.names.regions)
               if tls_fields is not None and tls_fields.complete else None)
        redirect_ok, port = https_port(f, self.names.listener_fields, self.problem)
        local_ok, local = read_listener_local_rate_limit(f, self.problem)
        compression_ok, compression = read_listener_compression(f, self.problem)
        client_ok, client_address = read_client_address(f, self.problem)
        networks_ok, networks = self._listener_networks(f)
        if not f.complete or (tls_fields is not None and tls is None) or not redirect_ok or not local_ok:
            return None
        if not compression_ok or not client_ok or not networks_ok:
            return None
        twin = http3_twin(f.get("name"))
        if tls is not None and tls_fields is not None and tls.http3 and twin in self.names.listener_fields:
            # The HTTP/3 twin's Envoy name (_http3): two Envoy listeners of one name would replace each other.
            self.problem(f"http3 names its UDP listener {twin}, which is another listener's name; "
                         "rename that listener", tls_fields.at("http3"), tls_fields.path_of("http3"))
            return None
        return model.Listener(f.get("name"), f.get("address"), f.get("port"), source=f.loc, tls=tls, https_port=port,
                              local_rate_limit=local, compression=compression, client_address=client_address,
                              allow_networks=networks)

    def service(self, f: Fields) -> model.Service | None:
        endpoints = tuple(e for e in (self.endpoint(g.value) for g in f.get("endpoints", [])) if e is not None)
        seen: dict[tuple[str, int], Location] = {}
        for got in f.get("endpoints", []):
            e: Fields = got.value
            if "address" in e:
                address = e.get("address")
                if address in seen:
                    self.problem(f"endpoint {_hostport(address)} is listed twice (first at {seen[address]})",
                                 e.at("address"), e.path_of("address"))
                seen.setdefault(address, e.at("address"))
        tls_fields: Fields | None = f.get("tls")
        # Read at each build, like a listener's files: a rotated CA or client certificate must be read again.
        tls = (read_service_tls(tls_fields, self.problem, self.files)
               if tls_fields is not None and tls_fields.complete else None)
        if not f.complete or (tls_fields is not None and tls is None):
            return None
        return model.Service(
            name=f.get("name"),
            endpoints=endpoints,
            health_check=_optional(f, "health_check", _health_check),
            circuit_breaker=_optional(f, "circuit_breaker", _circuit_breaker),
            outlier_detection=_optional(f, "outlier_detection", _outlier_detection),
            connect_timeout=f.get("connect_timeout", 1.0),
            protocol=f.get("protocol", "http1"),
            source=f.loc,
            tls=tls,
            load_balancing=f.get("load_balancing", "round_robin"),
        )

    def endpoint(self, e: Fields) -> model.Endpoint | None:
        if "region" in e:
            self.refer(e, "region", self.names.regions, "region", " (add it to `regions`)")
        if not e.complete:
            return None
        host, port = e.get("address")
        return model.Endpoint(host, port, e.get("region"), e.get("weight", 1))

    def route(self, f: Fields) -> model.Route | None:
        listener = self._route_listener(f)
        answers = [name for name in ANSWERS if name in f.given]
        backends = self._backends(f) if not answers else ()
        retries = _optional(f, "retries", self._retries)
        match = f.get("match")
        rewrite: Fields | None = f.get("rewrite")
        if rewrite is not None and isinstance(match, Fields) and "regex" in match:
            self.problem("a prefix rewrite needs a prefix or path match, not a regex", rewrite.loc, rewrite.path)
        for name in FORWARD_ONLY if answers else ():
            if name in f.given:
                self.problem(f"{name} applies to a route that calls a service, not to a {answers[0]}", f.at(name),
                             f.path_of(name))
        auth_ok, auth = route_auth(f, self.names.policy, self.problem)
        if auth is not None and auth.client_certificates and listener is not None:
            auth_ok = self._verifies_clients(listener, f.get("auth")) and auth_ok
        if answers and "auth" not in f.given:
            auth = model.RouteAuth(public=True)  # Envoy answers by itself: no token unless `auth` asks for one
        # On an answering route `rate_limits` is refused above; checking its `per` too would only add noise.
        rate_limits = route_rate_limits(f, auth, self.names.policy, self.problem) if not answers else ()
        cors = _optional(f, "cors", lambda c: read_cors(c, self.problem))
        redirect = _optional(f, "redirect", lambda r: read_redirect(
            r, match if isinstance(match, Fields) else None, self.problem))
        direct = _optional(f, "direct_response", read_direct_response)
        local = _optional(f, "local_rate_limit", lambda r: read_local_rate_limit(r, self.problem))
        answer = answers[0] if answers else None
        hash_ok, hash_on = read_hash_on(f, backends, answer, self.names.service_fields, self.problem)
        mirrors_ok, mirrors = read_mirrors(f, backends, answer, self.names.services, self.refer, self.problem)
        websocket_ok, websocket = read_websocket(f, answer, backends, self.names.service_fields, self.problem)
        if ("cors" in f.given and cors is None) or (answers and redirect is None and direct is None):
            return None
        if not f.complete or listener is None or backends is None or not auth_ok or rate_limits is None:
            return None
        if "local_rate_limit" in f.given and local is None:
            return None
        if not hash_ok or not mirrors_ok or not websocket_ok:
            return None
        compression_ok, compression = read_route_compression(f)
        body_ok, max_request_body = read_max_request_body(f, backends, self.names.service_fields, self.problem)
        fault_ok, fault = read_fault(f, answer, backends, self.names.service_fields, self.problem)
        if not compression_ok or not body_ok or not fault_ok:
            return None
        networks_ok, networks = read_allow_networks(f, self.problem)
        if not networks_ok or not within_listener(f, networks, listener, self._networks_of(listener), self.problem):
            return None
        request, response = f.get("request_headers"), f.get("response_headers")
        return model.Route(
            name=f.get("name"),
            listener=listener,
            match=read_match(match),
            backends=backends,
            hosts=tuple(g.value for g in f.get("hosts", [])) or ("*",),
            rewrite_prefix=rewrite.get("prefix") if rewrite is not None else None,
            timeout=f.get("timeout"),
            retries=retries,
            request_headers=_header_rules(request) if request is not None else model.HeaderRules(),
            response_headers=_header_rules(response) if response is not None else model.HeaderRules(),
            auth=auth,
            rate_limits=rate_limits,
            source=f.loc,
            cors=cors,
            redirect=redirect,
            direct_response=direct,
            local_rate_limit=local,
            hash_on=hash_on,
            mirrors=mirrors,
            websocket=websocket,
            compression=compression,
            max_request_body=max_request_body,
            allow_networks=networks,
            fault=fault,
        )

    def _listener_networks(self, f: Fields) -> tuple[bool, tuple[model.IPNetwork, ...]]:
        if "allow_networks" in f.given and "redirect_to_https" in f.given:
            self.problem("a redirect_to_https listener answers every request itself (a 301, no filter runs): put "
                         "allow_networks on the https listener", f.at("allow_networks"), f.path_of("allow_networks"))
            return False, ()
        return read_allow_networks(f, self.problem)

    def _networks_of(self, listener: str) -> tuple[model.IPNetwork, ...]:
        """The networks the listener entry `listener` lists (each read), to check a route's against."""
        item = self.names.listener_fields.get(listener)
        return tuple(g.value for g in item.get("allow_networks", [])) if item is not None else ()

    def _verifies_clients(self, listener: str, auth: Fields) -> bool:
        """Whether `listener` verifies client certificates, as a route's `client_certificates` need: without
        `client_ca` Envoy never holds a verified certificate, and the route would refuse every caller."""
        item = self.names.listener_fields.get(listener)
        tls: Fields | None = item.get("tls") if item is not None else None
        if tls is not None and "client_ca" in tls.given:
            return True
        problem = "has no `tls`" if tls is None else "has no `tls.client_ca`"
        self.problem(f"client_certificates need a listener that verifies client certificates; listener {listener!r} "
                     f"{problem}, so Envoy never holds a verified one (add `client_ca` to its `tls`)",
                     auth.at("client_certificates"), auth.path_of("client_certificates"))
        return False

    def _route_listener(self, f: Fields) -> str | None:
        if "listener" in f:
            if not self.refer(f, "listener", self.names.listeners, "listener"):
                return None
            if self.names.redirecting(f.get("listener")):
                self.problem(f"listener {f.get('listener')!r} redirects every request to https "
                             "(redirect_to_https): name the https listener", f.at("listener"), f.path_of("listener"))
                return None
            return str(f.get("listener"))
        # A listener that only redirects to https takes no routes: with one other, that one is meant.
        listeners = [name for name in self.names.listeners if not self.names.redirecting(name)]
        if len(listeners) == 1:
            return listeners[0]
        if "listener" in f.given:
            return None  # written but wrong: already reported
        if not listeners:
            self.problem("no listener is defined; add one under `listeners`", f.loc, f.path_of("listener"))
        else:
            self.problem(f"there are {len(listeners)} listeners ({', '.join(listeners)}); say which one",
                         f.loc, f.path_of("listener"))
        return None

    def _backends(self, f: Fields) -> tuple[model.Backend, ...] | None:
        if "service" in f:
            ok = self.refer(f, "service", self.names.services, "service")
            return (model.Backend(f.get("service"), 100),) if ok else None
        items: list[Got] = f.get("backends", [])
        if not items:
            return None
        result: list[model.Backend] = []
        seen: dict[str, Location] = {}
        for got in items:
            b: Fields = got.value
            if "service" in b:
                name = b.get("service")
                if name in seen:
                    self.problem(f"service {name!r} is listed twice (first at {seen[name]})", b.at("service"),
                                 b.path_of("service"))
                seen.setdefault(name, b.at("service"))
                if self.refer(b, "service", self.names.services, "service") and b.complete:
                    result.append(model.Backend(name, b.get("weight")))
        if len(result) != len(items):
            return None
        total = sum(b.weight for b in result)
        if total != 100:
            self.problem(f"backend weights add up to {total}, not 100", f.at("backends"), f.path_of("backends"))
            return None
        return tuple(result)

    def _retries(self, r: Fields) -> model.Retries | None:
        backoff: Fields | None = r.get("backoff")
        base = backoff.get("base", 0.025) if backoff is not None else 0.025
        most = backoff.get("max", max(0.25, base)) if backoff is not None else 0.25
        if backoff is not None and base > most:
            where = backoff.at("max") if "max" in backoff else backoff.loc
            self.problem(f"backoff max ({format_duration(most)}) is shorter than base ({format_duration(base)})",
                         where, backoff.path_of("max"))
        if not r.complete:
            return None
        on = tuple(g.value for g in r.get("on", [])) or model.Retries.on
        return model.Retries(r.get("attempts"), on, base, most, r.get("per_try_timeout"))

    def refer(self, f: Fields, name: str, defined: dict[str, Location], what: str, hint: str = "") -> bool:
        return self.known(Got(f.get(name), f.at(name), f.path_of(name)), defined, what, hint)

    def known(self, got: Got, defined: dict[str, Location], what: str, hint: str = "") -> bool:
        """Whether `got` names one of `defined`; else reports it, with the nearest name or the known ones."""
        if got.value in defined:
            return True
        known = list(defined)
        listed = f"; known: {', '.join(known)}" if known and len(known) <= 8 else ""
        self.problem(f"unknown {what} {got.value!r}{suggest(got.value, known) or listed}{hint}", got.loc, got.path)
        return False


def _hostport(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _optional(f: Fields, name: str, build: Callable[[Fields], T | None]) -> T | None:
    value = f.get(name)
    return build(value) if isinstance(value, Fields) else None


def _health_check(h: Fields) -> model.HealthCheck | None:
    if not h.complete:
        return None
    return model.HealthCheck(h.get("path"), h.get("interval"), h.get("timeout", 1.0),
                             h.get("healthy_threshold", 1), h.get("unhealthy_threshold", 2))


def _circuit_breaker(c: Fields) -> model.CircuitBreaker:
    return model.CircuitBreaker(**{name: c.get(name) for name in c.kind.names if name in c})


def _outlier_detection(o: Fields) -> model.OutlierDetection:
    return model.OutlierDetection(**{name: o.get(name) for name in o.kind.names if name in o})


def _header_rules(h: Fields) -> model.HeaderRules:
    add = tuple((name, got.value) for name, got in (h.get("add") or {}).items())
    return model.HeaderRules(add, tuple(g.value for g in h.get("remove", [])))

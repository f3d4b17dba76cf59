"""The route YAML as frozen, plain data: what `load` produces and `translate` consumes.

Durations are float seconds. Every entry keeps `source` (file and line of its YAML node) so errors,
NACKs and status can point at what a team wrote; `source` takes no part in equality, so moving an
entry between files changes nothing Envoy sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pavilion.errors import Location

NO_SOURCE = Location("<memory>")


@dataclass(frozen=True)
class Listener:
    name: str
    address: str
    port: int
    source: Location = field(default=NO_SOURCE, compare=False)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    region: str
    weight: int = 1


@dataclass(frozen=True)
class HealthCheck:
    path: str
    interval: float
    timeout: float = 1.0
    healthy_threshold: int = 1
    unhealthy_threshold: int = 2


@dataclass(frozen=True)
class CircuitBreaker:
    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3


@dataclass(frozen=True)
class OutlierDetection:
    consecutive_5xx: int = 5
    interval: float = 10.0
    base_ejection_time: float = 30.0
    # Envoy's default of 10 % ejects nobody in a two-endpoint service; ours lets failover happen.
    max_ejection_percent: int = 100


@dataclass(frozen=True)
class Service:
    name: str
    endpoints: tuple[Endpoint, ...]
    health_check: HealthCheck | None = None
    circuit_breaker: CircuitBreaker | None = None
    outlier_detection: OutlierDetection | None = None
    connect_timeout: float = 1.0
    source: Location = field(default=NO_SOURCE, compare=False)


@dataclass(frozen=True)
class HeaderMatch:
    name: str
    value: str  # exact match


@dataclass(frozen=True)
class Match:
    prefix: str | None = None
    path: str | None = None
    regex: str | None = None
    headers: tuple[HeaderMatch, ...] = ()
    methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class Backend:
    service: str
    weight: int = 100


@dataclass(frozen=True)
class Retries:
    attempts: int
    on: tuple[str, ...] = ("5xx", "reset", "connect-failure")
    backoff_base: float = 0.025
    backoff_max: float = 0.25
    per_try_timeout: float | None = None


@dataclass(frozen=True)
class HeaderRules:
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    name: str
    listener: str
    match: Match
    backends: tuple[Backend, ...]  # `service: x` is one backend of weight 100
    hosts: tuple[str, ...] = ("*",)
    rewrite_prefix: str | None = None
    timeout: float | None = None
    retries: Retries | None = None
    request_headers: HeaderRules = HeaderRules()
    response_headers: HeaderRules = HeaderRules()
    source: Location = field(default=NO_SOURCE, compare=False)


@dataclass(frozen=True)
class Config:
    """The whole merged directory. Tuples keep file order; lookups go through the helpers below."""

    regions: tuple[str, ...]
    listeners: tuple[Listener, ...]
    services: tuple[Service, ...]
    routes: tuple[Route, ...]

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def listener(self, name: str) -> Listener:
        return next(item for item in self.listeners if item.name == name)

"""The route YAML as frozen, plain data: what `load` produces and `translate` consumes.

Durations are float seconds. Every entry keeps `source` (file and line of its YAML node) so errors,
NACKs and status can point at what a team wrote; `source` takes no part in equality, so moving an
entry between files changes nothing Envoy sees.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from extauthz.tenant import Tenant
from pavilion.errors import Location

NO_SOURCE = Location("<memory>")


# A file a config was read from, as stat saw it just before the read: (path, (st_dev, st_ino,
# st_size, st_mtime_ns)), or None for the stat when it could not be read. Rotation compares these.
FileStamp = tuple[str, tuple[int, int, int, int] | None]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network  # a CIDR as controlplane/config/networks.py reads it


@dataclass(frozen=True)
class RegionCertificate:
    """One entry of a listener's `tls.regions`: the certificate Envoy nodes of `region` serve instead."""

    region: str
    certificate_chain: bytes  # PEM, leaf first
    private_key: bytes = field(repr=False)


@dataclass(frozen=True)
class ListenerTls:
    """`tls:` of a listener: the PEM bytes Envoy gets as SDS secrets, read and checked at load time.

    The private key never appears in a repr; versions still hash its bytes, so a new key is a change.
    The default certificate may be absent (b"") when `regions` covers every region (the loader checks).
    """

    certificate_chain: bytes  # PEM, leaf first; b"" when only `regions` give certificates
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None  # PEM bundle client certificates are verified against
    require_client_certificate: bool = False
    files: tuple[FileStamp, ...] = field(default=(), compare=False)  # where the bytes came from
    regions: tuple[RegionCertificate, ...] = ()  # per-region certificates, in `regions` order of the file
    # XFCC elements Envoy sets on requests to upstreams (uri, dns, subject, hash, cert, chain); () sanitizes only.
    forward_client_certificate: tuple[str, ...] = ()
    http3: bool = False  # also a QUIC listener on the same port (UDP)

    def certificate_for(self, region: str) -> tuple[bytes, bytes]:
        """(chain, key) a node of `region` serves: its region's entry, else the default. A node whose region
        is in no entry and which has no default (its region is not one of `regions`: a bootstrap mistake)
        gets the first entry's, so its listener still comes up."""
        for entry in self.regions:
            if entry.region == region:
                return entry.certificate_chain, entry.private_key
        if self.certificate_chain or not self.regions:
            return self.certificate_chain, self.private_key
        return self.regions[0].certificate_chain, self.regions[0].private_key


@dataclass(frozen=True)
class UpstreamTls:
    """`tls:` of a service: how Envoy verifies the hosts' certificates, and the client certificate it
    shows them (mTLS). PEM bytes, read and checked at load time; the key never appears in a repr."""

    ca: bytes  # PEM bundle the hosts' certificates are verified against
    server_name: str = ""  # SNI sent; "" sends none
    subject_alt_names: tuple[str, ...] = ()  # SANs accepted instead of server_name: DNS, *.DNS, or IP
    certificate_chain: bytes | None = None  # client certificate, leaf first (mTLS)
    private_key: bytes | None = field(default=None, repr=False)
    files: tuple[FileStamp, ...] = field(default=(), compare=False)  # where the bytes came from

    @property
    def accepted_names(self) -> tuple[str, ...]:
        """The names a host's certificate must carry one of (as a SAN)."""
        return self.subject_alt_names or (self.server_name,)


@dataclass(frozen=True)
class LocalRateLimit:
    """`local_rate_limit:` of a listener or route: a token bucket kept by each Envoy itself (Envoy's
    local_ratelimit filter), checked before ext_authz and the ratelimit service see the request."""

    requests: int  # tokens added per unit, continuously
    unit: str  # second | minute | hour
    burst: int  # the bucket's size: requests admitted at once after a quiet spell; >= requests
    per_client_ip: bool = False  # one bucket per TCP peer address (an LRU of max_client_ips), else one in all
    max_client_ips: int = 10_000
    shadow_mode: bool = False  # counted in Envoy's stats, never refused
    source: Location = field(default=NO_SOURCE, compare=False)


@dataclass(frozen=True)
class Compression:
    """`compression:` of a listener: Envoy compresses responses for clients that accept it (Envoy's
    compressor filter, one per algorithm), unless the route says `compression: off`."""

    algorithms: tuple[str, ...] = ("br", "gzip")  # Content-Encoding tokens, the server's preference first
    # Below about a packet a response saves no round trip compressed, only CPU is spent (docs: Compression).
    min_bytes: int = 1024
    content_types: tuple[str, ...] = (
        "application/json", "application/problem+json", "application/jwk-set+json", "application/javascript",
        "application/xml", "application/xhtml+xml", "image/svg+xml", "text/html", "text/plain", "text/css",
        "text/csv", "text/javascript", "text/xml",
    )
    source: Location = field(default=NO_SOURCE, compare=False)


@dataclass(frozen=True)
class ClientAddress:
    """`client_address:` of a listener: where Envoy finds the client behind a load balancer. The PROXY
    protocol header (an L4 balancer's) sets the connection's peer; X-Forwarded-For entries added by
    trusted proxies (`trusted_hops` from the right, or past `trusted_cidrs`) set the request's client."""

    proxy_protocol: str | None = None  # required | optional; None: no PROXY header is read
    trusted_hops: int = 0  # XFF entries from the right that trusted proxies appended; 0: none
    trusted_cidrs: tuple[str, ...] = ()  # networks of trusted proxies (normalised CIDRs); not with trusted_hops
    source: Location = field(default=NO_SOURCE, compare=False)


@dataclass(frozen=True)
class Listener:
    name: str
    address: str
    port: int
    source: Location = field(default=NO_SOURCE, compare=False)
    tls: ListenerTls | None = None  # None: plaintext HTTP
    # `redirect_to_https`: every request is answered 301 to https on this port (of a TLS listener);
    # the listener then serves no routes, and no filter but the router.
    https_port: int | None = None
    local_rate_limit: LocalRateLimit | None = None  # the flood guard of every request on the listener
    compression: Compression | None = None  # None: responses leave as the service sent them
    client_address: ClientAddress | None = None  # None: the client is the TCP peer, XFF untrusted
    # Clients (the address client_address finds) that may reach the listener; empty: any (Envoy's RBAC filter).
    allow_networks: tuple[IPNetwork, ...] = ()


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
    protocol: str = "http1"  # http1 | http2 | grpc (grpc: HTTP/2 upstream, e.g. Pavilion's own services)
    source: Location = field(default=NO_SOURCE, compare=False)
    tls: UpstreamTls | None = None  # None: plaintext to the hosts
    load_balancing: str = "round_robin"  # Envoy lb_policy: round_robin | least_request | random | ring_hash | maglev


@dataclass(frozen=True)
class HeaderMatch:
    """A condition on one header, or (in `Match.query`) on one query parameter."""

    name: str
    value: str  # the text compared; "" for present and absent
    how: str = "exact"  # exact | prefix | suffix | contains | regex (RE2, whole value) | present | absent


@dataclass(frozen=True)
class Match:
    prefix: str | None = None
    path: str | None = None
    regex: str | None = None
    headers: tuple[HeaderMatch, ...] = ()
    methods: tuple[str, ...] = ()
    query: tuple[HeaderMatch, ...] = ()  # never `absent`: Envoy cannot match a parameter's absence


@dataclass(frozen=True)
class HashKey:
    """One `hash_on` entry: where the hash that picks a ring_hash or maglev host comes from."""

    source: str  # header | cookie | source_ip | query
    name: str = ""  # the header, cookie or query parameter; "" for source_ip
    ttl: float | None = None  # cookie: Envoy sets a missing cookie with this lifetime (0: session cookie)
    path: str | None = None  # cookie: the Path of the cookie Envoy sets


@dataclass(frozen=True)
class Backend:
    service: str
    weight: int = 100


@dataclass(frozen=True)
class Mirror:
    """One `mirrors` entry: `service` gets a copy of `per_million` of the route's requests, answers dropped."""

    service: str
    per_million: int = 1_000_000  # Envoy's FractionalPercent over MILLION: 0.5 % is 5000


@dataclass(frozen=True)
class Fault:
    """A route's `fault`: Envoy delays and/or aborts a share (per million) of the route's requests, only
    those carrying `only_with_header` when it is set."""

    delay: float | None = None  # seconds, whole milliseconds
    delay_per_million: int = 0
    abort_status: int | None = None  # an HTTP status, or None with abort_grpc_status or without an abort
    abort_grpc_status: int | None = None
    abort_per_million: int = 0
    only_with_header: str | None = None
    source: Location = field(default=NO_SOURCE, compare=False)

    @property
    def aborts(self) -> bool:
        return self.abort_status is not None or self.abort_grpc_status is not None


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
class ClientCertificate:
    """One entry of `auth.client_certificates`: a subject alternative name a client certificate must carry."""

    san: str  # "uri" | "dns": the SAN type it is compared with, never the other
    name: str  # uri: the URI, or with `wildcard` the prefix (ending in '/'); dns: lower case, without `*.`
    wildcard: bool = False  # uri: any URI starting with `name`; dns: any one label, a dot, then `name`

    @property
    def text(self) -> str:
        """As a route YAML would write it."""
        if not self.wildcard:
            return self.name
        return self.name + "*" if self.san == "uri" else "*." + self.name

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class RouteAuth:
    """`auth: none` (public) or what a caller must show: a token holding `{tenants, scopes, claims}`, and/or
    a client certificate (`client_certificates`); at least one of the four given."""

    tenants: tuple[str, ...] = ()  # empty: any tenant
    scopes: tuple[str, ...] = ()  # config order; the token must hold every one
    claims: tuple[tuple[str, tuple[str, ...]], ...] = ()  # config order; each claim must hold one of its values
    public: bool = False  # `auth: none`: ext_authz is not asked
    # Config order; the verified client certificate must carry one of them (checked by Envoy's RBAC filter).
    client_certificates: tuple[ClientCertificate, ...] = ()
    token: bool = True  # `token: false`: only the client certificate is asked for, ext_authz is not
    identity_audience: str | None = None  # `identity: {audience}`: ext_authz signs an assertion for the upstream

    @property
    def asks_token(self) -> bool:
        """Whether ext_authz checks a token on the route."""
        return self.token and not self.public


@dataclass(frozen=True)
class RouteRateLimit:
    """`{per: [tenant, subject], unit: second, requests: 5, algorithm: token_bucket, burst: 10}`."""

    per: tuple[str, ...]  # facts the counter is kept per: tenant, client, subject (from ext_authz), client_ip
    unit: str  # second | minute | hour | day
    requests: int
    unit_multiplier: int = 1
    algorithm: str = "fixed_window"  # fixed_window | sliding_window | token_bucket
    burst: int = 0
    shadow_mode: bool = False
    on_backend_error: str = "allow"  # allow | deny | local


@dataclass(frozen=True)
class ExtAuthzSettings:
    """Top-level `extauthz:`: which service (a `services:` entry with protocol grpc) answers Check."""

    service: str
    timeout: float = 0.25
    identity_header: str = "x-pavilion-identity"  # extauthz/identity_config.py DEFAULT_HEADER
    # An ext_authz error or timeout is a 503, never a pass: Envoy's failure_mode_allow stays false.


@dataclass(frozen=True)
class RateLimitSettings:
    """Top-level `ratelimit:`: which service answers ShouldRateLimit, and what Envoy does when it cannot."""

    service: str
    domain: str = "pavilion"
    timeout: float = 0.05
    failure_mode_deny: bool = False


@dataclass(frozen=True)
class AccessLog:
    """Top-level `access_log:`: one line per request on every HTTP listener, on unless `access_log: off`."""

    format: str = "json"  # json | text
    path: str | None = None  # None: Envoy's stdout; else a file Envoy appends to
    subject: bool = False  # log the token's subject (may be personal data)


@dataclass(frozen=True)
class Tracing:
    """Top-level `tracing:`: OpenTelemetry spans sent to a `services:` entry with protocol grpc (OTLP)."""

    service: str
    sampling: float = 1.0  # percent of requests traced
    service_name: str = "pavilion-edge"


@dataclass(frozen=True)
class ErrorResponses:
    """Top-level `error_responses:`: the body format of the replies Envoy makes itself (not direct responses)."""

    format: str = "problem_json"  # RFC 9457 application/problem+json; `envoy` is no ErrorResponses at all


@dataclass(frozen=True)
class Rollout:
    """Top-level `rollout:`: the order regions get a new config in, and the wait between stages."""

    stages: tuple[tuple[str, ...], ...]
    bake: float  # seconds a released stage runs, every proxy of it acked, before the next is released
    hold: bool = False  # release nothing past the first stage


@dataclass(frozen=True)
class Cors:
    """`cors:` of a route: Envoy's CORS filter answers preflights and adds the allow headers.

    Origins are exact (`https://app.example.com`), or RE2 patterns for `*.` wildcards and `*`."""

    exact_origins: tuple[str, ...] = ()
    origin_patterns: tuple[str, ...] = ()  # full-match RE2
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None  # seconds
    allow_credentials: bool = False


@dataclass(frozen=True)
class Redirect:
    """`redirect:` of a route: a 3xx with Location changed as given, the rest of the request URL kept."""

    https: bool = False
    host: str | None = None
    port: int | None = None
    path: str | None = None  # replaces the whole path
    prefix_rewrite: str | None = None  # replaces the matched prefix
    code: int = 301
    strip_query: bool = False


@dataclass(frozen=True)
class DirectResponse:
    """`direct_response:` of a route: Envoy answers itself, with this status and body."""

    status: int
    body: str | None = None


@dataclass(frozen=True)
class Route:
    name: str
    listener: str
    match: Match
    backends: tuple[Backend, ...]  # `service: x` is one backend of weight 100; empty with redirect/direct_response
    hosts: tuple[str, ...] = ("*",)
    rewrite_prefix: str | None = None
    timeout: float | None = None
    retries: Retries | None = None
    request_headers: HeaderRules = HeaderRules()
    response_headers: HeaderRules = HeaderRules()
    # None: any configured tenant may call the route (a token is required whenever ext_authz is set up);
    # RouteAuth(public=True) is `auth: none`, a public route with ext_authz disabled.
    auth: RouteAuth | None = None
    rate_limits: tuple[RouteRateLimit, ...] = ()
    source: Location = field(default=NO_SOURCE, compare=False)
    cors: Cors | None = None
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    local_rate_limit: LocalRateLimit | None = None  # Envoy's own token bucket, before ext_authz and ratelimit
    hash_on: tuple[HashKey, ...] = ()  # session affinity; the first key the request has decides
    mirrors: tuple[Mirror, ...] = ()  # shadow traffic: copies whose answers Envoy drops
    websocket: bool = False  # the route's RouteAction enables the websocket upgrade (off in the listener)
    compression: bool = True  # False: `compression: off`, never compressed by Envoy
    max_request_body: int | None = None  # bytes; Envoy's buffer filter answers 413 past it
    allow_networks: tuple[IPNetwork, ...] = ()  # clients that may call it, besides its listener's; empty: any
    fault: Fault | None = None  # Envoy's fault filter delays or aborts some of its requests


@dataclass(frozen=True)
class Config:
    """The whole merged directory. Tuples keep file order; lookups go through the helpers below."""

    regions: tuple[str, ...]
    listeners: tuple[Listener, ...]
    services: tuple[Service, ...]
    routes: tuple[Route, ...]
    tenants: tuple[Tenant, ...] = ()
    extauthz: ExtAuthzSettings | None = None
    ratelimit: RateLimitSettings | None = None
    access_log: AccessLog | None = AccessLog()  # None: `access_log: off`
    tracing: Tracing | None = None
    rollout: Rollout | None = None
    error_responses: ErrorResponses | None = None  # None: Envoy's own bodies

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def listener(self, name: str) -> Listener:
        return next(item for item in self.listeners if item.name == name)

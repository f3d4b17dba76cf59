"""The route YAML, declared once: every field, its kind, default and meaning.

`shape.py` checks files against `ROOT`, `schema.py` prints it as JSON Schema, and
docs/route-yaml.md describes the same fields (tests/controlplane/config/test_docs.py keeps it honest).
"""

from __future__ import annotations

from controlplane.config import rules, token_rules
from controlplane.config.client_address import MAX_TRUSTED_HOPS, PROXY_PROTOCOL_MODES, trusted_cidr
from controlplane.config.client_certificates import CLIENT_CERTIFICATE_PATTERN, client_certificate
from controlplane.config.compression import (
    COMPRESSION_ALGORITHMS,
    CONTENT_TYPE_PATTERN,
    DEFAULT_ALGORITHMS,
    DEFAULT_CONTENT_TYPES,
    DEFAULT_MIN_BYTES,
    MAX_MIN_BYTES,
    compression_algorithm,
    content_type,
    route_compression,
)
from controlplane.config.delegation import file_pattern
from controlplane.config.error_responses import ERROR_FORMATS
from controlplane.config.faults import GRPC_STATUSES, fault_delay, fault_header_name, read_fault_percent
from controlplane.config.kinds import Custom, Either, Field, ListOf, MapOf, Object, Value
from controlplane.config.listener_tls import XFCC_ELEMENTS, file_path
from controlplane.config.local_limits import LOCAL_FACTS, LOCAL_UNITS, MAX_CLIENT_IPS, check_local_per
from controlplane.config.mirroring import PERCENT_SCHEMA, read_percent
from controlplane.config.networks import network
from controlplane.config.observability import ACCESS_LOG_FORMATS, log_path, sampling_percent, service_name
from controlplane.config.request_body import A_SIZE, SIZE_PATTERN, byte_size
from controlplane.config.route_answers import FORWARD_ONLY
from controlplane.config.service_tls import server_name, subject_alt_name
from controlplane.config.tenants import TENANT_SCHEMA, read_tenant_node
from ratelimit.rules import ALGORITHMS, MAX_UINT32, ON_BACKEND_ERROR, UNIT_SECONDS

# The spelling pavilion.durations.parse_duration reads, for editors (test_schema checks they agree).
DURATION_PATTERN = r"^\s*\d+(\.\d+)?(us|ms|s|m|h|d)\s*$"
_DURATION_HINT = {"description": "a duration: a number and a unit (us, ms, s, m, h, d), like 250ms or 2s"}

NAME = Value("string", pattern=rules.NAME_PATTERN, pattern_hint=rules.NAME_HINT)
_A_DURATION = "a duration with a unit, like 250ms or 2s"
DURATION = Value("string", convert=rules.duration, expected=_A_DURATION,
                 schema={"pattern": DURATION_PATTERN, **_DURATION_HINT})
POSITIVE_DURATION = Value("string", convert=rules.positive_duration, expected=_A_DURATION,
                          schema={"pattern": DURATION_PATTERN, **_DURATION_HINT})
COUNT = Value("integer", minimum=1)
URL_PATH = Value("string", convert=rules.path_start, schema={"pattern": "^/"})
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
MATCH_HEADER = Value("string", convert=rules.match_header_name, schema={"pattern": f"^:?{_TOKEN}$"})
RULE_HEADER = Value("string", convert=rules.rule_header_name,
                    schema={"pattern": f"^{_TOKEN}$", "not": {"pattern": "^[Hh][Oo][Ss][Tt]$"}})

PEM_FILE = Value("string", convert=file_path, schema={"minLength": 1})

REGION_CERTIFICATE = Object("region certificate", "The certificate Envoy nodes of one region serve on the listener, "
                            "instead of the default (see [Certificates per region](#certificates-per-region)).", (
    Field("certificate", PEM_FILE, "PEM certificate chain, leaf first; a path relative to this YAML file, or "
          "absolute. The leaf must not have expired.", True),
    Field("key", PEM_FILE, "PEM private key of the leaf (RSA of 2048 bits or more, or EC P-256/P-384), unencrypted.",
          True),
))

LISTENER_TLS = Object("tls", "TLS termination on the listener; the files become SDS secrets "
                      "(see [TLS termination](#tls-termination)).", (
    Field("certificate", PEM_FILE, "PEM certificate chain, leaf first; a path relative to this YAML file, or "
          "absolute. The leaf must not have expired. Needs `key`; may be left out (with `key`) only when "
          "`regions` gives a certificate for every region."),
    Field("key", PEM_FILE, "PEM private key of the leaf (RSA of 2048 bits or more, or EC P-256/P-384), unencrypted."),
    Field("regions", MapOf(NAME, REGION_CERTIFICATE, key_title="region"),
          "Region: the certificate Envoy nodes of that region serve instead of `certificate` (each a region of "
          "`regions`). Regions without an entry serve `certificate`."),
    Field("client_ca", PEM_FILE, "PEM bundle of the CAs client certificates are verified against. Absent: "
          "client certificates are not asked for."),
    Field("require_client_certificate", Value("boolean"),
          "Refuse the handshake of a client without a certificate signed by `client_ca` (needs `client_ca`).",
          default="false"),
    Field("forward_client_certificate", ListOf(Value("string", choices=XFCC_ELEMENTS), min_items=1),
          "Tell the upstream which client certificate authenticated: Envoy sets `x-forwarded-client-cert` with "
          "these elements of the verified certificate (`hash` is always there; `cert` and `chain` add whole PEMs, "
          "kilobytes per request). Needs `client_ca`. Absent: the header is removed, never forwarded "
          "(see [Client certificate details to upstreams](#client-certificate-details-to-upstreams))."),
    Field("http3", Value("boolean"), "Also accept HTTP/3 (QUIC) on the same port over UDP, with the same "
          "certificates, filters and routes; TCP responses then carry `alt-svc: h3=\":PORT\"; ma=86400`. Not with "
          "`client_ca` (see [HTTP/3](#http3)).", default="false"),
), at_least_one=("certificate", "regions"), none_given="a listener's tls needs a certificate")

LOCAL_RATE_LIMIT = Object("local_rate_limit", "A token bucket each Envoy keeps itself (Envoy's local_ratelimit "
                          "filter), checked before ext_authz and the ratelimit service: a request over it gets a 429 "
                          "that costs no token check and no counter (see [Local rate limits](#local-rate-limits)).", (
    Field("per", Value("string", convert=check_local_per, schema={"enum": list(LOCAL_FACTS)}),
          "`client_ip`: one bucket per client address (the TCP peer, or the client the listener's `client_address` "
          "finds behind a load balancer). Absent: one bucket for every request. Not `tenant`, "
          "`client` or `subject`: those are known only after ext_authz."),
    Field("unit", Value("string", choices=LOCAL_UNITS), "The time `requests` are added over.", True),
    Field("requests", Value("integer", minimum=1, maximum=MAX_UINT32),
          "Requests admitted per unit, the bucket refilled evenly over it.", True),
    Field("burst", Value("integer", minimum=1, maximum=MAX_UINT32),
          "The bucket's size: requests admitted at once after a quiet spell; at least `requests`, which it is "
          "when absent."),
    Field("max_client_ips", Value("integer", minimum=1, maximum=MAX_CLIENT_IPS),
          "`per: client_ip` only: client addresses each Envoy keeps a bucket for; the least recently seen "
          "one's is dropped (and starts full again) past this.", default="10000"),
    Field("shadow_mode", Value("boolean"), "Count in Envoy's stats, never refuse.", default="false"),
))

COMPRESSION = Object("compression", "Envoy compresses responses for clients that accept it (Accept-Encoding), "
                     "with Envoy's compressor filter (see [Compression](#compression)). `compression: {}` takes "
                     "every default.", (
    Field("algorithms", ListOf(Value("string", convert=compression_algorithm,
                                     schema={"enum": list(COMPRESSION_ALGORITHMS)}), min_items=1),
          "Content-Encodings offered, the server's preference first: `zstd`, `br` (Brotli), `gzip`. The first "
          "wins when a client accepts several equally; a client's higher q-value wins over the order.",
          default=f"[{', '.join(DEFAULT_ALGORITHMS)}]"),
    Field("min_bytes", Value("integer", minimum=1, maximum=MAX_MIN_BYTES),
          f"Responses with a smaller Content-Length are sent as they are (1-{MAX_MIN_BYTES}); a streamed "
          "response (no Content-Length) is compressed whatever its size.", default=str(DEFAULT_MIN_BYTES)),
    Field("content_types", ListOf(Value("string", convert=content_type, schema={"pattern": CONTENT_TYPE_PATTERN}),
                                  min_items=1),
          "Media types compressed (`type/subtype`, compared exactly, parameters ignored); a response of another "
          "type is sent as it is. Replaces the default list.",
          default=f"[{', '.join(DEFAULT_CONTENT_TYPES)}]"),
))

CLIENT_ADDRESS = Object("client_address", "Where Envoy finds the client's address when the listener sits behind a "
                        "load balancer: the PROXY protocol header, and X-Forwarded-For entries appended by trusted "
                        "proxies. Local rate limits per `client_ip`, access logs, ext_authz and the upstream's "
                        "`x-forwarded-for` then see the client, not the balancer (see "
                        "[Client addresses behind a load balancer](#client-addresses-behind-a-load-balancer)).", (
    Field("proxy_protocol", Value("string", choices=PROXY_PROTOCOL_MODES),
          "Read a PROXY protocol header (v1 or v2, as AWS NLB and other L4 balancers send it) before TLS and HTTP: "
          "the client it names becomes the connection's peer. `required`: a connection without one is closed; "
          "`optional`: one without is served as it is."),
    Field("trusted_hops", Value("integer", minimum=1, maximum=MAX_TRUSTED_HOPS),
          f"Proxies in front of Envoy that append to X-Forwarded-For (1-{MAX_TRUSTED_HOPS}): the client is that "
          "many entries from the right, so entries a client wrote itself never count. Not with `trusted_cidrs`."),
    Field("trusted_cidrs", ListOf(Value("string", convert=trusted_cidr, schema={"minLength": 1}), min_items=1),
          "Networks of the proxies in front of Envoy (like 10.0.0.0/8): when the peer is in one, the client is the "
          "rightmost X-Forwarded-For entry outside them. Host bits zero; not `0.0.0.0/0`. Not with `trusted_hops`."),
), at_least_one=("proxy_protocol", "trusted_hops", "trusted_cidrs"),
   none_given="an empty client_address changes nothing: the client would still be the TCP peer")

# `allow_networks` of a listener and of a route (controlplane/config/networks.py).
ALLOW_NETWORKS = ListOf(Value("string", convert=network, schema={"minLength": 1}), min_items=1)
_ALLOW_NETWORKS_SEE = "(see [Source networks](#source-networks))"

LISTENER = Object("listener", "A port Envoy accepts traffic on: an Envoy Listener with an HTTP connection manager.", (
    Field("name", NAME, "Unique name; routes refer to it. Also the Envoy listener and route table name.", True),
    Field("address", Value("string", convert=rules.ip_address), "IPv4 or IPv6 address to bind, like 0.0.0.0.", True),
    Field("port", Value("integer", minimum=1, maximum=65535), "TCP port, 1-65535.", True),
    Field("tls", LISTENER_TLS, "Terminate TLS (HTTPS) with this certificate; plaintext HTTP when absent."),
    Field("redirect_to_https", NAME, "A listener with `tls`: every request here is answered 301 to https on "
          "that listener's port, path and query kept, and this listener takes no routes "
          "(see [Redirects and direct responses](#redirects-and-direct-responses))."),
    Field("local_rate_limit", LOCAL_RATE_LIMIT, "A flood guard for every request on the listener, whatever its "
          "route, kept by each Envoy; not with `redirect_to_https`."),
    Field("compression", COMPRESSION, "Compress responses for clients that accept it (gzip, Brotli, zstd); "
          "routes may say `compression: off`. Not with `redirect_to_https`."),
    Field("client_address", CLIENT_ADDRESS, "Behind a load balancer: read the client's address from the PROXY "
          "protocol or trusted X-Forwarded-For entries. Absent: the client is the TCP peer and X-Forwarded-For "
          "is not trusted."),
    Field("allow_networks", ALLOW_NETWORKS, "Only clients from these networks (CIDR like 10.0.0.0/8 or "
          "2001:db8::/32; an address alone is /32 or /128) reach any route of the listener; others get 403 from "
          "Envoy, before ext_authz and rate limits. The client is the one `client_address` finds. Not with "
          f"`redirect_to_https` {_ALLOW_NETWORKS_SEE}."),
))

ENDPOINT = Object("endpoint", "One upstream host of a service; an Envoy LbEndpoint in the region's locality.", (
    Field("address", Value("string", convert=rules.host_port,
                           schema={"pattern": r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):[0-9]{1,5}$"}),
          "ip:port or [ipv6]:port. Not a DNS name: Envoy does not resolve names sent over EDS.", True),
    Field("region", NAME, "Region the endpoint runs in; must be listed in `regions`. Nodes in this region "
          "send to it first (priority 0), others only on failover (priority 1).", True),
    Field("weight", Value("integer", minimum=1, maximum=1_000_000), "Load-balancing weight within its region.",
          default="1"),
))

HEALTH_CHECK = Object("health_check", "Active HTTP health checking; an Envoy HealthCheck on the cluster.", (
    Field("path", URL_PATH, "Path Envoy requests (starts with /); a 200 answer means healthy.", True),
    Field("interval", POSITIVE_DURATION, "Time between checks.", True),
    Field("timeout", POSITIVE_DURATION, "Time to wait for an answer.", default="1s"),
    Field("healthy_threshold", COUNT, "Passing checks before an unhealthy host is healthy again.", default="1"),
    Field("unhealthy_threshold", COUNT, "Failing checks before a host is unhealthy.", default="2"),
))

CIRCUIT_BREAKER = Object("circuit_breaker", "Limits on the cluster (Envoy circuit_breakers, default priority).", (
    Field("max_connections", COUNT, "Connections to all hosts of the service.", default="1024"),
    Field("max_pending_requests", COUNT, "Requests waiting for a connection.", default="1024"),
    Field("max_requests", COUNT, "Requests in flight.", default="1024"),
    Field("max_retries", COUNT, "Retries in flight.", default="3"),
))

OUTLIER_DETECTION = Object("outlier_detection", "Passive health: eject hosts that fail (Envoy outlier_detection).", (
    Field("consecutive_5xx", COUNT, "5xx answers in a row that eject a host.", default="5"),
    Field("interval", POSITIVE_DURATION, "Time between ejection sweeps.", default="10s"),
    Field("base_ejection_time", POSITIVE_DURATION, "How long a host stays out (times the ejections so far).",
          default="30s"),
    Field("max_ejection_percent", Value("integer", minimum=0, maximum=100),
          "Share of hosts that may be ejected at once. Envoy's own default, 10, ejects nobody in a "
          "two-host service.", default="100"),
))

SERVICE_TLS = Object("upstream tls", "TLS from Envoy to the service's hosts; the files become SDS secrets "
                     "(see [TLS to upstream services](#tls-to-upstream-services)).", (
    Field("ca", PEM_FILE, "PEM bundle of the CAs that sign the hosts' certificates; a path relative to this YAML "
          "file, or absolute.", True),
    Field("server_name", Value("string", convert=server_name, schema={"minLength": 1}),
          "DNS name sent as SNI, and the name a host's certificate must carry (as a subject alternative name) "
          "unless `subject_alt_names` is given. Endpoints are IP addresses: give this or `subject_alt_names`."),
    Field("subject_alt_names", ListOf(Value("string", convert=subject_alt_name, schema={"minLength": 1}),
                                      min_items=1),
          "Names a host's certificate may carry, one of them as a SAN, instead of `server_name`: a DNS name, "
          "`*.` and a DNS name (any one label in place of `*`), or an IP address."),
    Field("certificate", PEM_FILE, "PEM client certificate chain, leaf first, shown to the hosts (mTLS); needs "
          "`key`. The leaf must not have expired."),
    Field("key", PEM_FILE, "PEM private key of the client certificate (RSA of 2048 bits or more, or EC "
          "P-256/P-384), unencrypted; needs `certificate`."),
))

SERVICE = Object("service", "An upstream service; becomes an Envoy Cluster (EDS) and its ClusterLoadAssignment.", (
    Field("name", NAME, "Unique name; routes refer to it. Also the Envoy cluster name.", True),
    Field("endpoints", ListOf(ENDPOINT, min_items=1), "The service's hosts, in any regions.", True),
    Field("health_check", HEALTH_CHECK, "Active health checks; none when absent."),
    Field("circuit_breaker", CIRCUIT_BREAKER, "Connection and request limits; Envoy's defaults when absent."),
    Field("outlier_detection", OUTLIER_DETECTION, "Ejection of failing hosts; none when absent."),
    Field("connect_timeout", POSITIVE_DURATION, "Time to open a connection to a host.", default="1s"),
    Field("protocol", Value("string", choices=rules.PROTOCOLS),
          "How Envoy speaks to the hosts: HTTP/1.1, or HTTP/2 for `http2` and `grpc` (gRPC services such as "
          "Pavilion's ext_authz and ratelimit).", default="http1"),
    Field("tls", SERVICE_TLS, "Speak TLS to the hosts, verifying their certificates; plaintext when absent."),
    Field("load_balancing", Value("string", choices=rules.LOAD_BALANCING),
          "How Envoy picks a host within a region (Envoy lb_policy): in turn, the one with fewest requests in "
          "flight (of two picked at random), at random, or by a hash of the request (`ring_hash`, `maglev`: "
          "the same hash, the same host, for routes with `hash_on`). Endpoint weights and region failover "
          "hold for all (see [Load balancing and session affinity](#load-balancing-and-session-affinity)).",
          default="round_robin"),
))

_MATCH_TEXT = Value("string", convert=rules.match_text, schema={"minLength": 1})
_CONDITION_TEXTS = (
    Field("prefix", _MATCH_TEXT, "The value starts with this text (not empty)."),
    Field("suffix", _MATCH_TEXT, "The value ends with this text (not empty)."),
    Field("contains", _MATCH_TEXT, "The value holds this text (not empty)."),
    Field("regex", Value("string", convert=rules.re2_regex), "RE2 regex the whole value must match."),
)
HEADER_CONDITION = Object("header condition", "A condition on a header other than an exact value (see "
                          "[Match conditions](#match-conditions)).", (
    Field("present", Value("boolean"), "`true`: the header is sent, with any value; `false`: it is not sent."),
    *_CONDITION_TEXTS,
), exactly_one=(("present", "prefix", "suffix", "contains", "regex"),))
QUERY_CONDITION = Object("query condition", "A condition on a query parameter other than an exact value (see "
                         "[Match conditions](#match-conditions)).", (
    Field("present", Value("boolean", convert=rules.query_present, schema={"const": True}),
          "`true`: the parameter is in the query, with any value. Not `false`: Envoy cannot ask for its absence."),
    *_CONDITION_TEXTS,
), exactly_one=(("present", "prefix", "suffix", "contains", "regex"),))
_EXACT_VALUE = Value("string", convert=rules.header_value)

MATCH = Object("match", "Which requests the route takes: a path condition, plus headers, query parameters and "
               "methods.", (
    Field("prefix", URL_PATH, "Path prefix, starting with /, like /v1/accounts (Envoy route match `prefix`)."),
    Field("path", URL_PATH, "Exact path, starting with / (Envoy route match `path`)."),
    Field("regex", Value("string", convert=rules.re2_regex),
          "RE2 regex the whole path must match (Envoy `safe_regex`)."),
    Field("headers", MapOf(MATCH_HEADER, Either((_EXACT_VALUE, HEADER_CONDITION),
                                                "a value, or a mapping with one of present, prefix, suffix, "
                                                "contains or regex")),
          "Headers the request must have (name: exact value, or name: condition); all must hold."),
    Field("query", MapOf(Value("string", convert=rules.query_name, schema={"minLength": 1}),
                         Either((_EXACT_VALUE, QUERY_CONDITION),
                                "a value, or a mapping with one of present, prefix, suffix, contains or regex"),
                         key_title="query parameter"),
          "Query parameters the request must have (name: exact value, or name: condition); all must hold. "
          "The first of a repeated parameter counts."),
    Field("methods", ListOf(Value("string", choices=rules.HTTP_METHODS), min_items=1),
          "HTTP methods taken (upper case); any method when absent."),
), exactly_one=(("prefix", "path", "regex"),))

BACKEND = Object("backend", "One service of a weighted split (Envoy weighted_clusters).", (
    Field("service", NAME, "A service name.", True),
    Field("weight", Value("integer", minimum=0, maximum=100), "Share of requests in percent; weights add to 100.",
          True),
))

BACKOFF = Object("backoff", "Time between retries (Envoy retry_back_off): jittered, growing from base to max.", (
    Field("base", POSITIVE_DURATION, "First interval.", default="25ms"),
    Field("max", POSITIVE_DURATION, "Largest interval; at least base. When absent: 250ms, or base if longer.",
          default="250ms"),
))

RETRIES = Object("retries", "Retry policy of the route (Envoy retry_policy).", (
    Field("attempts", Value("integer", minimum=1, maximum=100),
          "Retries after the first try (Envoy num_retries).", True),
    Field("on", ListOf(Value("string", choices=rules.RETRY_ON), min_items=1),
          "Conditions that trigger a retry (Envoy retry_on).", default="[5xx, reset, connect-failure]"),
    Field("backoff", BACKOFF, "Time between retries.", default="{base: 25ms, max: 250ms}"),
    Field("per_try_timeout", POSITIVE_DURATION, "Timeout of each try; the route timeout when absent."),
))

HEADER_RULES = Object("header_rules", "Headers to add (overwriting) and remove. Not `host` nor ':' headers.", (
    Field("add", MapOf(RULE_HEADER, Value("string", convert=rules.added_header_value)),
          "name: value to set, replacing any value present. Values are Envoy format strings: %% is a literal %."),
    Field("remove", ListOf(RULE_HEADER), "Header names to remove."),
))

HASH_COOKIE = Object("hash cookie", "A cookie whose value keeps a client on one host.", (
    Field("name", Value("string", convert=rules.cookie_name, schema={"pattern": f"^{_TOKEN}$"}), "Cookie name.",
          True),
    Field("ttl", DURATION, "Envoy sets the cookie itself, with this lifetime, on a request without it (`0s`: a "
          "session cookie). Absent: the cookie is only read, and a request without it takes the next entry."),
    Field("path", URL_PATH, "The `Path` of the cookie Envoy sets (needs `ttl`)."),
))

HASH_ON = Object("hash_on", "One source of the hash that picks the host, for services with `load_balancing: "
                 "ring_hash` or `maglev` (Envoy hash_policy; see "
                 "[Load balancing and session affinity](#load-balancing-and-session-affinity)).", (
    Field("header", MATCH_HEADER, "A request header's value."),
    Field("cookie", HASH_COOKIE, "A cookie's value; Envoy can set it (`ttl`)."),
    Field("source_ip", Value("boolean", convert=rules.true_only, schema={"const": True}),
          "`true`: the client's address (the TCP peer)."),
    Field("query", Value("string", convert=rules.query_name, schema={"minLength": 1}), "A query parameter's value."),
), exactly_one=(("header", "cookie", "source_ip", "query"),))

MIRROR = Object("mirror", "A service that gets a copy of the route's requests; its answers are dropped (Envoy "
                "request_mirror_policies; see [Traffic mirroring](#traffic-mirroring)).", (
    Field("service", NAME, "The service the copies go to; not one the route itself sends to.", True),
    Field("percent", Custom("percent", read_percent, PERCENT_SCHEMA, anchor="traffic-mirroring"),
          "Share of the route's requests copied, 0-100, at most 4 decimals (like 0.5).", default="100"),
))

REWRITE = Object("rewrite", "Path rewrite before forwarding.", (
    Field("prefix", URL_PATH, "Replaces the matched prefix or path; starts with / (Envoy prefix_rewrite).", True),
))

SCOPE = Value("string", convert=token_rules.scope_token, schema={"pattern": token_rules.SCOPE_PATTERN})
CLAIM_NAME = Value("string", convert=token_rules.claim_name,
                   schema={"pattern": token_rules.CLAIM_TEXT_PATTERN, "not": {"enum": list(token_rules.SCOPE_CLAIMS)}})
# maxLength counts characters, the loader UTF-8 bytes: the schema lets through some the loader refuses.
CLAIM_VALUE = Value("string", convert=token_rules.claim_value,
                    schema={"pattern": token_rules.CLAIM_TEXT_PATTERN,
                            "maxLength": token_rules.MAX_CLAIM_VALUE_BYTES})

CLIENT_CERTIFICATE = Value("string", convert=client_certificate, schema={"pattern": CLIENT_CERTIFICATE_PATTERN})

# The `aud` of the route's identity assertions (extauthz/identity_assertion.py): printable ASCII, at most 256.
AUDIENCE = Value("string", pattern=r"^[!-~]([ -~]{0,254}[!-~])?$",
                 pattern_hint="printable ASCII, at most 256 characters, no surrounding spaces")
IDENTITY = Object("identity", "A signed identity assertion for the upstream (ext_authz's `identity:` settings; "
                  "see docs/extauthz.md, Signed identity for upstreams).", (
    Field("audience", AUDIENCE, "The assertion's `aud`: the upstream's own name, which it checks.", True),
))

AUTH = Object("auth", "What a caller must show: a token, checked by ext_authz, and/or a client certificate, checked "
              "by Envoy (a 403 when either falls short; see [Client certificates](#client-certificates)).", (
    Field("tenants", ListOf(Value("string"), min_items=1),
          "Tenant ids (from `tenants`); the token must be one of theirs. Absent: a valid token of any tenant."),
    Field("scopes", ListOf(SCOPE, min_items=1),
          "OAuth scopes (RFC 6749 section 3.3 tokens), every one of which the token's `scope` or `scp` must hold."),
    Field("claims", MapOf(CLAIM_NAME, ListOf(CLAIM_VALUE, min_items=1), key_title="claim name"),
          "Claim name: accepted values. Each claim named must hold one of its values (the string itself, "
          "or an array with it among its elements). Not `scope` or `scp`: use `scopes`."),
    Field("client_certificates", ListOf(CLIENT_CERTIFICATE, min_items=1),
          "Client certificates admitted, by a SAN the verified certificate must carry: a URI exactly "
          "(`spiffe://example.org/ns/partners/sa/billing`), a URI prefix ending in `/*`, or a DNS name exactly "
          "or `*.` and a DNS name (any one label). Needs a listener with `tls.client_ca`."),
    Field("token", Value("boolean"),
          "Whether a token is asked for too. `false`: the client certificate alone (with `client_certificates`, "
          "and without tenants, scopes or claims).", default="true"),
    Field("identity", IDENTITY, "The upstream gets a JWT signed by ext_authz saying who the caller is "
          "(`x-pavilion-identity`), for this audience. Goes with one of the fields above."),
), at_least_one=("tenants", "scopes", "claims", "client_certificates"),
   none_given="for a public route write `auth: none`")

RATE_LIMIT = Object("rate_limit", "One counter of the route, kept by the ratelimit service per the facts in `per`.", (
    Field("per", Either((Value("string", choices=rules.RATE_LIMIT_FACTS),
                         ListOf(Value("string", choices=rules.RATE_LIMIT_FACTS), min_items=1)),
                        "a fact or a list of facts"),
          "What the counter is kept per: `tenant`, `client` and `subject` (the token's, from ext_authz; "
          "client and subject need tenant too; `client` is the token's client_id, else its azp, and tokens "
          "with neither share one counter), `client_ip` (the TCP peer). Absent: one counter for the whole route."),
    Field("unit", Value("string", choices=tuple(UNIT_SECONDS)), "The window: a month is 30 days, a year 365.", True),
    Field("requests", Value("integer", minimum=1, maximum=MAX_UINT32), "Requests allowed per window.", True),
    Field("unit_multiplier", Value("integer", minimum=1, maximum=MAX_UINT32),
          "Windows of this many units (5 with `unit: second` is a 5 s window).", default="1"),
    Field("algorithm", Value("string", choices=ALGORITHMS),
          "How requests are counted: fixed windows aligned to the epoch, a sliding window, or a token bucket.",
          default="fixed_window"),
    Field("burst", Value("integer", minimum=1, maximum=MAX_UINT32),
          "Token bucket only: the bucket's size; `requests` when absent."),
    Field("shadow_mode", Value("boolean"), "Count and report, never refuse.", default="false"),
    Field("on_backend_error", Value("string", choices=ON_BACKEND_ERROR),
          "When the ratelimit service cannot reach its store: allow, deny, or count in the replica's memory.",
          default="allow"),
))

# What an editor can check of an origin (the loader also checks the host's labels and the port's range).
ORIGIN_PATTERN = r"^(\*|[Hh][Tt][Tt][Pp][Ss]?://((\*\.)?[^/:?#*\s\[\]]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?)$"
HEADER_NAME = Value("string", convert=rules.cors_header_name, schema={"pattern": f"^{_TOKEN}$", "not": {"const": "*"}})

CORS = Object("cors", "Cross-origin calls from browsers (Envoy's CORS filter): preflights are answered by Envoy, "
              "before ext_authz and rate limits (see [CORS](#cors)).", (
    Field("allow_origins", ListOf(Value("string", convert=rules.cors_origin, schema={"pattern": ORIGIN_PATTERN}),
                                  min_items=1),
          "Origins allowed: `scheme://host[:port]` exactly, `scheme://*.example.com` (one or more labels in place "
          "of `*`), or `*` alone (any origin; not with `allow_credentials`).", True),
    Field("allow_methods", ListOf(Value("string", choices=rules.HTTP_METHODS), min_items=1),
          "Methods a preflight allows (Access-Control-Allow-Methods). Absent: only what browsers allow without "
          "asking (GET, HEAD, POST)."),
    Field("allow_headers", ListOf(HEADER_NAME, min_items=1),
          "Request headers a preflight allows (Access-Control-Allow-Headers), like authorization, dpop, "
          "content-type. Not `*`."),
    Field("expose_headers", ListOf(HEADER_NAME, min_items=1),
          "Response headers the page's script may read (Access-Control-Expose-Headers), like www-authenticate, "
          "dpop-nonce, ratelimit."),
    Field("max_age", Value("string", convert=rules.whole_seconds, expected="a duration of whole seconds, like 10m",
                           schema={"pattern": DURATION_PATTERN, **_DURATION_HINT}),
          "How long a browser may reuse a preflight's answer (Access-Control-Max-Age); the browser's own "
          "default (5 s) when absent."),
    Field("allow_credentials", Value("boolean"),
          "Let the page send cookies or TLS client certificates (Access-Control-Allow-Credentials).",
          default="false"),
))

REDIRECT = Object("redirect", "Answer with a redirect instead of forwarding; the parts not given are the "
                  "request's own (see [Redirects and direct responses](#redirects-and-direct-responses)).", (
    Field("https", Value("boolean"), "Change the scheme to https.", default="false"),
    Field("host", Value("string", convert=rules.redirect_host), "Host name to send to, without a port."),
    Field("port", Value("integer", minimum=1, maximum=65535), "Port to send to; the scheme's default port "
          "when absent."),
    Field("path", URL_PATH, "Replaces the whole path (the query is kept unless `strip_query`)."),
    Field("prefix_rewrite", URL_PATH, "Replaces the matched prefix or path, like `rewrite.prefix`."),
    Field("code", Value("integer", minimum=301, maximum=308, convert=rules.redirect_code,
                        schema={"enum": list(rules.REDIRECT_CODES)}),
          "Status: 301, 302, 303, 307 or 308 (307 and 308 keep the method and body).", default="301"),
    Field("strip_query", Value("boolean"), "Drop the query string.", default="false"),
), at_least_one=("https", "host", "port", "path", "prefix_rewrite"),
   none_given="a redirect to the same URL would loop")

DIRECT_RESPONSE = Object("direct_response", "Envoy answers the request itself; no service is called.", (
    Field("status", Value("integer", minimum=200, maximum=599), "HTTP status, 200-599.", True),
    # maxLength counts characters, the loader UTF-8 bytes: the schema lets through some the loader refuses.
    Field("body", Value("string", convert=rules.direct_response_body,
                        schema={"maxLength": rules.MAX_DIRECT_RESPONSE_BODY}),
          f"Response body (text/plain), at most {rules.MAX_DIRECT_RESPONSE_BODY} bytes; none when absent."),
))

FAULT_PERCENT = Custom("percent", read_fault_percent, PERCENT_SCHEMA, anchor="fault-injection")
FAULT_DELAY = Object("fault delay", "Envoy holds a share of the route's requests before passing them on.", (
    Field("duration", Value("string", convert=fault_delay, expected=_A_DURATION,
                            schema={"pattern": DURATION_PATTERN, **_DURATION_HINT}),
          "How long: whole milliseconds, from 1ms to less than 300s (like 200ms). The route's `timeout` "
          "starts after it.", True),
    Field("percent", FAULT_PERCENT, "Share of the route's requests delayed, 0-100, at most 4 decimals.", True),
))
FAULT_ABORT = Object("fault abort", "Envoy answers a share of the route's requests itself with an error; the "
                     "service never sees them.", (
    Field("status", Value("integer", minimum=200, maximum=599), "HTTP status of the answer, 200-599."),
    Field("grpc_status", Value("integer", minimum=GRPC_STATUSES[0], maximum=GRPC_STATUSES[1]),
          "gRPC status of the answer (1-16, like 14 for UNAVAILABLE), in a trailers-only response with HTTP "
          "200; every service of the route needs `protocol: grpc`."),
    Field("percent", FAULT_PERCENT, "Share of the route's requests aborted, 0-100, at most 4 decimals; drawn "
          "apart from the delay's.", True),
), exactly_one=(("status", "grpc_status"),))
FAULT = Object("fault", "Faults Envoy injects into the route's requests to try clients' timeouts and retries "
               "(Envoy's fault filter; see [Fault injection](#fault-injection)).", (
    Field("delay", FAULT_DELAY, "Hold requests before passing them on."),
    Field("abort", FAULT_ABORT, "Answer requests with an error instead of passing them on (after the delay, "
          "when a request gets both)."),
    Field("only_with_header", Value("string", convert=fault_header_name, schema={"pattern": f"^{_TOKEN}$"}),
          "Fault only requests carrying this header (any value), like `x-chaos-test`: a team tries a fault in "
          "production on its own requests. Not a header Envoy or ext_authz sets (`x-envoy-*`, `x-pavilion-*`, "
          "`x-request-id`, `authorization`...). Absent: every request of the route may be faulted."),
), at_least_one=("delay", "abort"), none_given="a fault needs a `delay`, an `abort` or both")

# What a route that answers by itself refuses (route_answers.FORWARD_ONLY, and the checks of mirrors and websocket).
_NOT_WITH_ANSWERS = ", ".join(FORWARD_ONLY) + ", mirrors or websocket"

ROUTE = Object("route", "Where requests go; an Envoy Route in the listener's RouteConfiguration.", (
    Field("name", NAME, "Unique name, for errors and status. Also the Envoy route name.", True),
    Field("listener", NAME, "Listener this route serves; may be left out when there is only one listener."),
    Field("hosts", ListOf(Value("string", convert=rules.domain), min_items=1),
          "Host (authority) values the route answers (Envoy virtual host domains); '*.x' and 'x.*' wildcards.",
          default='["*"]'),
    Field("match", MATCH, "Which requests the route takes.", True),
    Field("service", NAME, "The service to send to (one backend of weight 100)."),
    Field("backends", ListOf(BACKEND, min_items=1), "A weighted split between services; weights add up to 100."),
    Field("hash_on", ListOf(HASH_ON, min_items=1),
          "Session affinity: what the host-picking hash is taken from, the first entry the request has deciding. "
          "Every service of the route needs `load_balancing: ring_hash` or `maglev`."),
    Field("mirrors", ListOf(MIRROR, min_items=1), "Services that get a copy of each request (shadow traffic); "
          "the client gets the route's own answer only. Not on a `redirect`, `direct_response` or websocket route."),
    Field("websocket", Value("boolean"), "Let clients open a WebSocket on this route (HTTP/1.1 `Upgrade: "
          "websocket`, or extended CONNECT over HTTP/2 and HTTP/3; the service always gets the HTTP/1.1 upgrade); "
          "upgrades elsewhere are refused with a 403 (see [WebSockets](#websockets)). Not with "
          "`retries`; the route's services need `protocol: http1`.", default="false"),
    Field("max_request_body", Value("string", convert=byte_size, expected=A_SIZE, schema={"pattern": SIZE_PATTERN}),
          "The largest request body the route's services get: a number and a unit (B, kB, KiB, MB, MiB), at most "
          "64MiB. Envoy holds the whole body first and answers 413 past it (see "
          "[Request body limits](#request-body-limits)). Not with `websocket`, nor to `protocol: grpc` services."),
    Field("fault", FAULT, "Delays and aborts Envoy injects into a share of the route's requests, optionally only "
          "those with a header (see [Fault injection](#fault-injection)). Not on a `redirect` or `direct_response` "
          "route."),
    Field("compression", Value("string", convert=route_compression, schema={"enum": ["off"]}),
          "`off`: Envoy never compresses this route's responses, though its listener has `compression` "
          "(already compressed downloads; answers that mix a secret with what a caller sent, see "
          "[Compression](#compression)). Absent: the listener's setting."),
    Field("rewrite", REWRITE, "Path rewrite."),
    Field("timeout", DURATION, "Whole-request timeout (Envoy route timeout); Envoy's 15s when absent, 0s disables it."),
    Field("retries", RETRIES, "Retry policy; no retries when absent."),
    Field("request_headers", HEADER_RULES, "Header rules applied to the request sent upstream."),
    Field("response_headers", HEADER_RULES, "Header rules applied to the response sent back."),
    Field("auth", Either((Value("string", choices=("none",)), AUTH),
                         "`none` or a mapping {tenants, scopes, claims, client_certificates, token, identity}"),
          "Who may call the route. Absent: a valid token of any tenant when `extauthz` is set (no token on a "
          "`redirect` or `direct_response` route). `none`: public, ext_authz is not asked."),
    Field("rate_limits", ListOf(RATE_LIMIT, min_items=1), "Rate limits; each counts separately. Needs `ratelimit`."),
    Field("allow_networks", ALLOW_NETWORKS, "Only clients from these networks (CIDR like 10.0.0.0/8 or "
          "2001:db8::/32; an address alone is /32 or /128) reach the route; others get 403 from Envoy, before "
          "ext_authz and rate limits. On a listener with `allow_networks` a client must be in both lists "
          f"{_ALLOW_NETWORKS_SEE}."),
    Field("local_rate_limit", LOCAL_RATE_LIMIT, "A token bucket of the route kept by each Envoy, checked before "
          "`auth` and `rate_limits` cost anything. Needs no `ratelimit`."),
    Field("cors", CORS, "Cross-origin calls from browsers; none allowed when absent. Only on a route that calls a "
          "service (Envoy's CORS filter skips redirects and direct responses)."),
    Field("redirect", REDIRECT, "Answer with a redirect instead of calling a service. No token is asked unless "
          f"`auth` is given; not with {_NOT_WITH_ANSWERS}."),
    Field("direct_response", DIRECT_RESPONSE, "Answer with this status and body instead of calling a service. No "
          f"token is asked unless `auth` is given; not with {_NOT_WITH_ANSWERS}."),
), exactly_one=(("service", "backends", "redirect", "direct_response"),))

TENANT = Custom("tenant", read_tenant_node, TENANT_SCHEMA, label="id", anchor="tenants-auth-and-rate-limits")

EXTAUTHZ = Object("extauthz", "The ext_authz service Envoy asks before protected routes (Envoy ext_authz filter).", (
    Field("service", NAME, "A service with `protocol: grpc` answering envoy.service.auth.v3.Authorization.", True),
    Field("timeout", POSITIVE_DURATION, "Time Envoy waits for an answer; after it the request gets a 503.",
          default="250ms"),
    Field("identity_header", Value("string", convert=rules.identity_header_name, schema={"pattern": f"^{_TOKEN}$"}),
          "The header ext_authz's signed identity assertions travel in (its `identity.header`); removed from "
          "requests on routes that do not ask ext_authz, so a client cannot send its own.",
          default="x-pavilion-identity"),
))

RATELIMIT = Object("ratelimit", "The ratelimit service Envoy asks on routes with `rate_limits` (ratelimit filter).", (
    Field("service", NAME, "A service with `protocol: grpc` answering envoy.service.ratelimit.v3.RateLimitService.",
          True),
    Field("domain", NAME, "The rate-limit domain of every descriptor Envoy sends.", default="pavilion"),
    Field("timeout", POSITIVE_DURATION, "Time Envoy waits for an answer.", default="50ms"),
    Field("failure_mode_deny", Value("boolean"),
          "When the service does not answer in time: false lets the request through, true answers 503.",
          default="false"),
))

ACCESS_LOG = Object("access_log", "One line per request on every HTTP listener, written by Envoy (Envoy access "
                    "loggers; see [Access logs](#access-logs)). On by default: JSON to Envoy's stdout.", (
    Field("format", Value("string", choices=ACCESS_LOG_FORMATS),
          "`json`: one JSON object per line; `text`: `key=value` pairs, for reading by eye.", default="json"),
    Field("path", Value("string", convert=log_path, schema={"pattern": "^/"}),
          "An absolute file path Envoy appends to instead of its stdout (it does not rotate it). Absent: "
          "Envoy's stdout, where a Kubernetes node's log pipeline picks it up."),
    Field("subject", Value("boolean"), "Log the token's subject (`sub`, from ext_authz) too. It names a person "
          "for user tokens: personal data, so off unless the log's readers and retention allow it.",
          default="false"),
))

TRACING = Object("tracing", "Distributed tracing: Envoy's OpenTelemetry tracer sends a span per sampled request to an "
                 "OTLP collector (see [Tracing](#tracing)).", (
    Field("service", NAME, "A service with `protocol: grpc` answering OTLP's "
          "opentelemetry.proto.collector.trace.v1.TraceService (an OpenTelemetry Collector).", True),
    Field("sampling", Value("string", convert=sampling_percent, schema={"pattern": r"^\d+(\.\d+)?%$"}),
          "Share of requests Envoy starts a trace for (random sampling), a percent from 0% to 100%, like 0.5%.",
          default="1%"),
    Field("service_name", Value("string", schema={"minLength": 1}, convert=service_name),
          "The `service.name` of the spans.", default="pavilion-edge"),
))

ERROR_RESPONSES = Object("error_responses", "The body of every reply Envoy makes itself (no route, no healthy "
                         "upstream, a timeout, a refused token, a rate limit), on every HTTP listener (see "
                         "[Error responses](#error-responses)). A route's `direct_response` and `redirect` are "
                         "never rewritten, nor the answers of services.", (
    Field("format", Value("string", choices=ERROR_FORMATS),
          "`problem_json`: RFC 9457 problem details (`application/problem+json`) with Envoy's request id; gRPC "
          "requests keep their grpc-status answer. `envoy`: Envoy's own bodies.", True),
))

DELEGATION = Object("delegation", "Files a team writes, fenced in: they hold only `services` and `routes`, and "
                    "each route's hosts and paths lie inside the ones given here (see "
                    "[Delegating to teams](#delegating-to-teams)).", (
    Field("files", ListOf(Value("string", convert=file_pattern, schema={"minLength": 1}), min_items=1),
          "The team's files, relative to this file's folder: a folder ending in `/` (every file under it), or a "
          "glob like `teams/pay*.yaml` (`*` stays within one folder).", True),
    Field("hosts", ListOf(Value("string", convert=rules.domain), min_items=1),
          "Hosts the team's routes may answer: each of a route's `hosts` is one of these or within a wildcard "
          "here. A route without `hosts` (`*`) needs `*` here.", True),
    Field("paths", ListOf(URL_PATH, min_items=1),
          "Path prefixes the team's routes may take: a route's `prefix` or `path` starts with one of them, a "
          "`regex` spells one first and keeps any `|` inside a group. End one with `/` to keep to whole "
          "segments (`/v1/pay` also covers `/v1/payroll`).", True),
    Field("public", Value("boolean"), "Whether the team's routes may be `auth: none` (no token asked).",
          default="false"),
    Field("services", ListOf(NAME, min_items=1), "Services of other files the team's routes may send to. Absent: "
          "only the services the team's own files define."),
    Field("audiences", ListOf(AUDIENCE, min_items=1),
          "Identity assertion audiences (`auth.identity.audience`) the team's routes may ask for. Absent: none."),
    Field("networks", ListOf(Value("string", convert=network, schema={"minLength": 1}), min_items=1),
          "Networks (CIDR, like 10.20.0.0/16) the endpoints of the team's services must lie in. Absent: any."),
    Field("listeners", ListOf(NAME, min_items=1), "Listeners the team's routes may serve on (an internal "
          "listener stays the platform's). Absent: any."),
))

ROLLOUT = Object("rollout", "Each new config reaches the regions stage by stage: a stage gets it once every proxy of "
                 "the stages before acked it and `bake` has passed (see [Staged rollout](#staged-rollout)).", (
    Field("stages", ListOf(Either((NAME, ListOf(NAME, min_items=1)), "a region or a list of regions"), min_items=1),
          "Regions in the order they get a new config: each entry a region, or a list of regions released "
          "together. Regions no stage names (and nodes without a region) come last.", True),
    Field("bake", DURATION, "How long a stage runs the new config, every proxy of it acked, before the next stage "
          "gets it. `0s`: as soon as they acked.", True),
    Field("hold", Value("boolean"), "Release no stage past the first: the first stage's regions run the new config, "
          "the others keep theirs until an edit sets it false (the rollout then starts over).", default="false"),
))

ROOT = Object("route YAML file", "One file of the route YAML directory; all files merge into one config.", (
    Field("regions", ListOf(NAME), "Regions endpoints may run in; the union over all files."),
    Field("listeners", ListOf(LISTENER), "Listeners; names unique across all files."),
    Field("services", ListOf(SERVICE), "Upstream services; names unique across all files."),
    Field("routes", ListOf(ROUTE), "Routes; names unique across all files. Envoy tries the most specific first."),
    Field("tenants", ListOf(TENANT), "Token issuers ext_authz accepts; ids and issuers unique across all files."),
    Field("extauthz", EXTAUTHZ, "Turns token checks on for every route (see `auth`); in one file only."),
    Field("ratelimit", RATELIMIT, "Turns `rate_limits` on; in one file only."),
    Field("access_log", Either((Value("string", choices=("off",)), ACCESS_LOG),
                               "`off` or a mapping {format, path, subject}"),
          "Per-request logs of every HTTP listener; in one file only. Absent: JSON lines on Envoy's stdout. "
          "`off`: none.", default="{format: json}"),
    Field("tracing", TRACING, "Spans of every HTTP listener's requests to an OTLP collector; in one file only. "
          "Absent: no tracing."),
    Field("error_responses", ERROR_RESPONSES, "How Envoy writes the errors it answers itself; in one file only. "
          "Absent: Envoy's own bodies."),
    Field("rollout", ROLLOUT, "Release each new config region by region; in one file only. Absent: every region "
          "at once."),
    Field("delegations", ListOf(DELEGATION), "Files handed to teams, and the hosts and paths their routes may "
          "take; not in a delegated file."),
))

"""`client_address` through the real control plane and Envoy: behind a load balancer, the client a PROXY
protocol header (v1 or v2) or a trusted X-Forwarded-For entry names is the client of its own `per:
client_ip` local limit bucket and ratelimit service counter, of the access log's `client_address` and of
the `x-forwarded-for` / `x-envoy-external-address` the upstream gets. A client cannot name itself by
writing X-Forwarded-For entries of its own, nor by sending its own `x-envoy-external-address`. ext_authz's
CheckRequest `source.address` is the connection's peer: the PROXY header's client, the balancer otherwise."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controlplane.config.load import load_config
from controlplane.envoy_check import check_with_envoy
from tests.controlplane.certs import make_ca, write_pair
from tests.integration.client_address_peers import Answer, RecordingAuthz, ask, proxy_v1, proxy_v2
from tests.integration.gateway_procs import Gateway, running_gateway, start_upstreams, start_xds_service
from tests.procs import ENVOY, free_port

pytestmark = pytest.mark.integration

BUCKET = 2  # every route's `per: client_ip` bucket; with `unit: hour` none refills during the test
LIMIT = f"{{per: client_ip, unit: hour, requests: {BUCKET}}}"

CONFIG = """regions: [eu-west]
listeners:
  - {{name: pp, address: 127.0.0.1, port: {pp}, client_address: {{proxy_protocol: required}}}}
  - {{name: opt, address: 127.0.0.1, port: {opt}, client_address: {{proxy_protocol: optional}}}}
  - {{name: hops, address: 127.0.0.1, port: {hops}, client_address: {{trusted_hops: 1}}}}
  - {{name: cidrs, address: 127.0.0.1, port: {cidrs}, client_address: {{trusted_cidrs: [127.0.0.2/32, 10.9.0.0/16]}}}}
  - {{name: both, address: 127.0.0.1, port: {both},
     client_address: {{proxy_protocol: required, trusted_cidrs: [10.9.0.0/16]}}}}
  - name: secure
    address: 127.0.0.1
    port: {secure}
    tls: {{certificate: {certs}/edge.pem, key: {certs}/edge-key.pem}}
    client_address: {{proxy_protocol: required}}
  - {{name: plain, address: 127.0.0.1, port: {plain}, redirect_to_https: secure,
     client_address: {{proxy_protocol: required}}}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:{accounts}, region: eu-west}}]
  - name: extauthz
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:{extauthz}, region: eu-west}}]
  - name: ratelimit
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:{ratelimit}, region: eu-west}}]
extauthz: {{service: extauthz, timeout: 2s}}
ratelimit: {{service: ratelimit, timeout: 2s, failure_mode_deny: true}}
routes:
  - {{name: who-pp, listener: pp, match: {{prefix: /who}}, service: accounts}}
  - {{name: who-hops, listener: hops, match: {{prefix: /who}}, service: accounts}}
  - {{name: who-cidrs, listener: cidrs, match: {{prefix: /who}}, service: accounts}}
  - {{name: counted-pp, listener: pp, match: {{prefix: /counted}}, service: accounts, auth: none,
     rate_limits: [{{per: client_ip, unit: hour, requests: 2}}]}}
  - {{name: counted-hops, listener: hops, match: {{prefix: /counted}}, service: accounts, auth: none,
     rate_limits: [{{per: client_ip, unit: hour, requests: 2}}]}}
"""
# One route per listener, each with its own bucket per client address.
ROUTES = "".join(f"""  - {{name: {name}, listener: {name}, match: {{prefix: /}}, service: accounts, auth: none,
     local_rate_limit: {LIMIT}}}
""" for name in ("pp", "opt", "hops", "cidrs", "secure", "both"))


@dataclass
class Stack:
    gateway: Gateway
    ports: dict[str, int]
    authz: RecordingAuthz
    tls: ssl.SSLContext

    def log_lines(self, answers: list[Answer], timeout: float = 20.0) -> list[dict[str, Any]]:
        """The access log line of each request Envoy answered with `answers` (found by x-request-id). Envoy
        flushes its log every 10 s, so a test waits once for all of its lines."""
        wanted = [answer.headers["x-request-id"] for answer in answers]
        deadline = time.monotonic() + timeout
        while True:
            by_id: dict[str, list[dict[str, Any]]] = {}
            for text in self.gateway.envoys[0].proc.output().splitlines():
                if text.startswith("{"):
                    line = json.loads(text)
                    by_id.setdefault(line["request_id"], []).append(line)
            if all(i in by_id for i in wanted) or time.monotonic() > deadline:
                assert all(len(by_id.get(i, [])) == 1 for i in wanted), (wanted, list(by_id)[-10:])
                return [by_id[i][0] for i in wanted]
            time.sleep(0.2)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    routes, certs = tmp_path_factory.mktemp("routes"), tmp_path_factory.mktemp("certs")
    ca = make_ca()
    write_pair(certs, *ca.issue("edge"))
    names = ("pp", "opt", "hops", "cidrs", "secure", "plain", "both", "extauthz", "ratelimit")
    ports = {name: free_port() for name in names}
    upstreams = start_upstreams({"accounts": "eu-west"})
    text = CONFIG.format(accounts=upstreams["accounts"][1], certs=certs, **ports) + ROUTES
    (routes / "gateway.yaml").write_text(text)
    # What the control plane serves, Envoy itself accepts (`envoy --mode validate`).
    assert check_with_envoy(load_config(routes), ENVOY) == []
    authz = RecordingAuthz(ports["extauthz"]).start()
    try:
        with running_gateway(routes, ports["opt"], upstreams) as gateway:
            for name in ("pp", "hops", "cidrs", "secure", "plain", "both"):
                gateway.envoys[0].proc.wait_port(ports[name])
            ratelimit = start_xds_service("ratelimit", gateway.plane, ports["ratelimit"], "ratelimit-client-address")
            try:
                tls = ssl.create_default_context(cadata=ca.pem.decode())
                yield Stack(gateway, ports, authz, tls)
            finally:
                ratelimit.stop()
    finally:
        authz.stop()


def statuses(stack: Stack, listener: str, count: int, **kwargs: Any) -> list[int | None]:
    return [ask(stack.ports[listener], **kwargs).status for _ in range(count)]


# (a) The PROXY protocol


@pytest.mark.parametrize("header", [proxy_v1, proxy_v2], ids=["v1", "v2"])
def test_the_proxy_header_names_the_client_everywhere(stack: Stack, header: Any) -> None:
    client = "203.0.113.7" if header is proxy_v1 else "203.0.113.17"
    answer = ask(stack.ports["pp"], "/v1/x", preface=header(client, 41234))
    assert answer.status == 200, answer.body
    upstream = answer.upstream_headers
    assert upstream["x-forwarded-for"] == client
    assert upstream["x-envoy-external-address"] == client
    # Its own bucket: the second request takes its last token, the third is refused.
    assert statuses(stack, "pp", BUCKET, preface=header(client)) == [200, 429]


def test_two_claimed_addresses_get_two_buckets(stack: Stack) -> None:
    assert statuses(stack, "pp", BUCKET + 1, preface=proxy_v1("203.0.113.8")) == [200] * BUCKET + [429]
    # Same balancer (the same TCP peer, 127.0.0.1), another client: a full bucket.
    assert statuses(stack, "pp", BUCKET + 1, preface=proxy_v2("203.0.113.9")) == [200] * BUCKET + [429]


def test_a_client_cannot_name_itself_with_x_forwarded_for_on_a_proxy_protocol_listener(stack: Stack) -> None:
    spoofs = [{"x-forwarded-for": f"198.51.100.{i}", "x-envoy-external-address": f"198.51.100.{i}"}
              for i in range(BUCKET + 1)]
    got = [ask(stack.ports["pp"], preface=proxy_v1("203.0.113.10"), headers=h) for h in spoofs]
    assert [a.status for a in got] == [200] * BUCKET + [429]
    assert got[0].upstream_headers["x-envoy-external-address"] == "203.0.113.10"
    # The client's own entry stays (an upstream reads from the right), Envoy's comes last.
    assert got[0].upstream_headers["x-forwarded-for"] == "198.51.100.0,203.0.113.10"


def test_a_connection_without_the_header_is_refused_when_required_and_served_when_optional(stack: Stack) -> None:
    assert ask(stack.ports["pp"]).status is None
    answer = ask(stack.ports["opt"], "/v1/x")
    assert answer.status == 200
    assert answer.upstream_headers["x-envoy-external-address"] == "127.0.0.1"
    with_header = ask(stack.ports["opt"], "/v1/x", preface=proxy_v2("203.0.113.11"))
    assert with_header.upstream_headers["x-envoy-external-address"] == "203.0.113.11"


def test_tls_after_the_proxy_header(stack: Stack) -> None:
    """The listener filter reads the PROXY header before the TLS handshake starts."""
    answer = ask(stack.ports["secure"], "/v1/x", preface=proxy_v1("203.0.113.12", 40001), tls=stack.tls)
    assert answer.status == 200
    assert answer.upstream_headers["x-envoy-external-address"] == "203.0.113.12"
    assert answer.upstream_headers["x-forwarded-proto"] == "https"
    assert statuses(stack, "secure", BUCKET, preface=proxy_v1("203.0.113.12"), tls=stack.tls) == [200, 429]
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        ask(stack.ports["secure"], tls=stack.tls)


def test_the_redirect_listener_reads_the_header_too(stack: Stack) -> None:
    answer = ask(stack.ports["plain"], "/v1/x?q=1", preface=proxy_v1("203.0.113.13"))
    assert answer.status == 301
    assert answer.headers["location"] == f"https://api.example.com:{stack.ports['secure']}/v1/x?q=1"
    assert ask(stack.ports["plain"]).status is None


# (b) X-Forwarded-For from trusted proxies


def test_trusted_hops_take_the_entry_the_balancer_appended(stack: Stack) -> None:
    # The balancer (127.0.0.1 here) appended 203.0.113.20; whatever the client wrote before it does not count.
    spoofs = [{"x-forwarded-for": f"198.51.100.{i}, 203.0.113.20", "x-envoy-external-address": "198.51.100.1"}
              for i in range(BUCKET + 1)]
    got = [ask(stack.ports["hops"], "/v1/x", headers=h) for h in spoofs]
    assert [a.status for a in got] == [200] * BUCKET + [429]
    assert got[0].upstream_headers["x-envoy-external-address"] == "203.0.113.20"
    assert got[0].upstream_headers["x-forwarded-for"].startswith("198.51.100.0, 203.0.113.20,")
    # Another client behind the same balancer: its own bucket.
    assert ask(stack.ports["hops"], headers={"x-forwarded-for": "203.0.113.21"}).status == 200
    # A private address is a client like any other (Envoy 1.40 counts none internal unless told): the
    # x-envoy-* headers it sends are removed, and it is not marked internal.
    private = ask(stack.ports["hops"], "/v1/x", headers={"x-forwarded-for": "10.0.0.5", "x-envoy-retry-on": "5xx",
                                                         "x-envoy-upstream-rq-timeout-ms": "1"}).upstream_headers
    assert private["x-envoy-external-address"] == "10.0.0.5"
    assert not {"x-envoy-retry-on", "x-envoy-upstream-rq-timeout-ms", "x-envoy-internal"} & set(private)
    # An entry with a port (Azure Application Gateway writes `ip:port`) is not an address to Envoy: the
    # client falls back to the peer, the balancer (docs/operations.md says what to do there).
    with_port = ask(stack.ports["hops"], "/v1/x", source="127.0.0.6", headers={"x-forwarded-for": "203.0.113.60:5555"})
    assert with_port.upstream_headers["x-envoy-external-address"] == "127.0.0.6"
    # No X-Forwarded-For at all (a probe from inside): the peer.
    assert ask(stack.ports["hops"], "/v1/x").upstream_headers["x-envoy-external-address"] == "127.0.0.1"


def test_trusted_cidrs_skip_the_trusted_proxies_from_the_right(stack: Stack) -> None:
    # From 127.0.0.2 (trusted): the rightmost entry outside the trusted networks, past 10.9.1.1 (trusted too).
    spoofs = [{"x-forwarded-for": f"198.51.100.{i}, 203.0.113.30, 10.9.1.1", "x-envoy-external-address": "1.2.3.4",
               "x-request-id": "chosen-by-the-client", "x-envoy-retry-on": "5xx"} for i in range(BUCKET + 1)]
    got = [ask(stack.ports["cidrs"], "/v1/x", source="127.0.0.2", headers=h) for h in spoofs]
    assert [a.status for a in got] == [200] * BUCKET + [429]
    upstream = got[0].upstream_headers
    # Envoy's own x-envoy-external-address replaces the client's, and its own request id too.
    assert upstream["x-envoy-external-address"] == "203.0.113.30"
    assert upstream["x-request-id"] != "chosen-by-the-client"
    assert "x-envoy-retry-on" not in upstream and "x-envoy-internal" not in upstream
    assert upstream["x-forwarded-for"].startswith("198.51.100.0, 203.0.113.30, 10.9.1.1,")


def test_trusted_cidrs_ignore_x_forwarded_for_from_an_untrusted_peer(stack: Stack) -> None:
    # 127.0.0.3 is not a trusted proxy: what it writes in X-Forwarded-For is not believed.
    got = [ask(stack.ports["cidrs"], "/v1/x", source="127.0.0.3",
               headers={"x-forwarded-for": f"203.0.113.{31 + i}", "x-envoy-external-address": "203.0.113.31"})
           for i in range(BUCKET + 1)]
    assert [a.status for a in got] == [200] * BUCKET + [429]
    assert got[0].upstream_headers["x-envoy-external-address"] == "127.0.0.3"
    assert got[0].upstream_headers["x-forwarded-for"].startswith("203.0.113.31,")


def test_the_proxy_headers_client_is_the_peer_trusted_cidrs_compare(stack: Stack) -> None:
    """An L7 proxy of ours behind an L4 balancer: the PROXY header names the proxy (trusted), whose
    X-Forwarded-For then names the client; a header naming anyone else makes X-Forwarded-For untrusted."""
    via_proxy = ask(stack.ports["both"], "/v1/x", preface=proxy_v1("10.9.1.1"),
                    headers={"x-forwarded-for": "198.51.100.1, 203.0.113.80"})
    assert via_proxy.upstream_headers["x-envoy-external-address"] == "203.0.113.80"
    direct = ask(stack.ports["both"], "/v1/x", preface=proxy_v2("203.0.113.81"),
                 headers={"x-forwarded-for": "203.0.113.80"})
    assert direct.upstream_headers["x-envoy-external-address"] == "203.0.113.81"


# The access log


def test_the_access_log_names_the_detected_client(stack: Stack) -> None:
    ports = stack.ports
    sent = [
        (ask(ports["pp"], "/v1/log", preface=proxy_v1("203.0.113.50", 41234)), "203.0.113.50:41234"),
        (ask(ports["pp"], "/v1/log", preface=proxy_v2("203.0.113.51", 41235)), "203.0.113.51:41235"),
        (ask(ports["secure"], "/v1/log", preface=proxy_v1("203.0.113.52", 41236), tls=stack.tls),
         "203.0.113.52:41236"),
        (ask(ports["plain"], "/v1/log", preface=proxy_v1("203.0.113.53", 41237)), "203.0.113.53:41237"),
        (ask(ports["opt"], "/v1/log", source="127.0.0.5"), "127.0.0.5:"),
        # From X-Forwarded-For there is no port: Envoy logs port 0.
        (ask(ports["hops"], "/v1/log", headers={"x-forwarded-for": "198.51.100.1, 203.0.113.54"}), "203.0.113.54:0"),
        (ask(ports["cidrs"], "/v1/log", source="127.0.0.2", headers={"x-forwarded-for": "198.51.100.1, 203.0.113.55"}),
         "203.0.113.55:0"),
        (ask(ports["cidrs"], "/v1/log", source="127.0.0.4", headers={"x-forwarded-for": "203.0.113.56"}), "127.0.0.4:"),
    ]
    assert [answer.status for answer, _ in sent] == [200, 200, 200, 301, 200, 200, 200, 200]
    lines = stack.log_lines([answer for answer, _ in sent])
    for line, (_, expected) in zip(lines, sent, strict=True):
        assert line["client_address"].startswith(expected), line
    assert lines[2]["tls_version"] == "TLSv1.3"


# The ratelimit service


def test_the_ratelimit_service_counts_per_detected_client(stack: Stack) -> None:
    """`rate_limits` with `per: client_ip` send Envoy's remote_address descriptor: the detected client."""
    pp = [ask(stack.ports["pp"], "/counted", preface=proxy_v1("203.0.113.70")).status for _ in range(3)]
    assert pp == [200, 200, 429]
    assert ask(stack.ports["pp"], "/counted", preface=proxy_v2("203.0.113.71")).status == 200
    spoofs = [{"x-forwarded-for": f"198.51.100.{i}, 203.0.113.72"} for i in range(3)]
    assert [ask(stack.ports["hops"], "/counted", headers=h).status for h in spoofs] == [200, 200, 429]
    assert ask(stack.ports["hops"], "/counted", headers={"x-forwarded-for": "203.0.113.73"}).status == 200


# ext_authz


def test_ext_authz_source_is_the_connection_peer(stack: Stack) -> None:
    """Envoy fills CheckRequest.attributes.source from the connection: the PROXY header's client, but the
    balancer (the TCP peer) where the client comes from X-Forwarded-For. Pavilion's ext_authz does not read
    it; an address check belongs in the local limits, which see the detected client."""
    assert ask(stack.ports["pp"], "/who/pp", preface=proxy_v2("203.0.113.40")).status == 200
    xff = {"x-forwarded-for": "198.51.100.9, 203.0.113.41"}
    assert ask(stack.ports["hops"], "/who/hops", headers=xff).status == 200
    assert ask(stack.ports["cidrs"], "/who/cidrs", source="127.0.0.2", headers=xff).status == 200
    assert stack.authz.sources("/who/pp") == ["203.0.113.40"]
    assert stack.authz.sources("/who/hops") == ["127.0.0.1"]
    assert stack.authz.sources("/who/cidrs") == ["127.0.0.2"]


SHAPES = """regions: [eu-west]
listeners:
  - {name: a, address: 127.0.0.1, port: 10080, client_address: {proxy_protocol: optional, trusted_hops: 10}}
  - name: b
    address: "::1"
    port: 10081
    client_address: {proxy_protocol: required, trusted_cidrs: [10.0.0.0/8, "fd00::/8", 192.0.2.7, "2001:db8::1"]}
  - {name: c, address: 127.0.0.1, port: 10082, client_address: {trusted_cidrs: [130.211.0.0/22, 35.191.0.0/16]}}
services:
  - name: accounts
    endpoints: [{address: 127.0.0.1:9001, region: eu-west}]
routes:
  - {name: a, listener: a, match: {prefix: /}, service: accounts,
     local_rate_limit: {per: client_ip, unit: second, requests: 5}}
  - {name: b, listener: b, match: {prefix: /}, service: accounts}
  - {name: c, listener: c, match: {prefix: /}, service: accounts, cors: {allow_origins: ["https://a.example"]}}
"""


def test_envoy_accepts_every_shape_of_client_address(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(SHAPES)
    assert check_with_envoy(load_config(tmp_path), ENVOY) == []

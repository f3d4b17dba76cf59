"""Local rate limits with the real control plane, Envoy, `pavilion extauthz` and `pavilion ratelimit`:
a request over a route's or listener's `local_rate_limit` gets Envoy's own 429 before ext_authz is asked
or the ratelimit service counts it; `per: client_ip` keeps one bucket per source address (the test
varies it on the loopback: 127.0.0.2, 127.0.0.3...); a listener's guard holds for routes that have
their own limit; a preflight is still answered by CORS, and a 429 carries CORS headers."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.config.load import load_config
from controlplane.envoy_check import check_with_envoy
from tests.extauthz.issuer import Issuer
from tests.integration.gateway_procs import running_gateway, start_upstreams, start_xds_service
from tests.procs import ENVOY, PAVILION, free_port

pytestmark = pytest.mark.integration

ACME = Issuer(algs=("ES256",))
APP = "https://app.example.com"
WHOLE, PER_IP, GUARD = 5, 3, 4  # the buckets' sizes; with `unit: hour` none refills during the test

CONFIG = """regions: [eu-west]
listeners:
  - {{name: open, address: 127.0.0.1, port: {open}}}
  - name: guarded
    address: 127.0.0.1
    port: {guarded}
    local_rate_limit: {{per: client_ip, unit: hour, requests: {guard}}}
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
ratelimit: {{service: ratelimit, timeout: 2s}}
tenants:
  - id: acme
    issuer: {issuer}
    audiences: [{audience}]
    algorithms: [ES256]
    jwks: {{inline: {jwks}}}
routes:
  - name: whole
    listener: open
    match: {{prefix: /v1/whole}}
    service: accounts
    auth: {{tenants: [acme]}}
    rate_limits: [{{per: tenant, unit: hour, requests: 1000}}]
    local_rate_limit: {{unit: hour, requests: {whole}}}
  - name: per-ip
    listener: open
    match: {{prefix: /v1/per-ip}}
    service: accounts
    auth: none
    cors: {{allow_origins: [{app}], expose_headers: [ratelimit, retry-after]}}
    local_rate_limit: {{per: client_ip, unit: hour, requests: {per_ip}}}
  - name: shadow
    listener: open
    match: {{prefix: /v1/shadow}}
    service: accounts
    auth: none
    local_rate_limit: {{unit: hour, requests: 1, shadow_mode: true}}
  - name: warm-up
    listener: open
    match: {{prefix: /v1/warm-up}}
    service: accounts
  - name: inner
    listener: guarded
    match: {{prefix: /v1/inner}}
    service: accounts
    auth: none
    local_rate_limit: {{unit: hour, requests: 1000}}
"""


@dataclass
class Stack:
    open: int
    guarded: int
    envoy_admin: int
    extauthz_admin: int

    def envoy_stat(self, name: str) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.envoy_admin}/stats?filter=^{name}$",
                                    timeout=5) as response:
            lines = response.read().decode().splitlines()
        values = [int(line.split(": ", 1)[1]) for line in lines if line.startswith(f"{name}: ")]
        return values[0] if values else 0

    def checks(self) -> float:
        """Check answers ext_authz itself has counted (pavilion_extauthz_checks_total, all labels)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.extauthz_admin}/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("pavilion_extauthz_checks_total{"))

    def checks_after(self, before: float, expected: int) -> float:
        """ext_authz's count of checks since `before`, once it holds `expected` (ext_authz adds its counts to
        /metrics every 0.5 s) and a further 1.2 s (two more flushes) passed for any others to show."""
        deadline = time.monotonic() + 10
        while self.checks() - before < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.2)
        return self.checks() - before

    def envoy_checks(self) -> int:
        """Check calls Envoy has made (requests on ext_authz's cluster)."""
        return self.envoy_stat("cluster.extauthz.upstream_rq_total")

    def ratelimit_calls(self) -> int:
        """ShouldRateLimit calls Envoy has made (requests on the ratelimit service's cluster)."""
        return self.envoy_stat("cluster.ratelimit.upstream_rq_total")

    def forwarded(self) -> int:
        return self.envoy_stat("cluster.accounts.upstream_rq_total")


def send(port: int, path: str, *, source: str = "127.0.0.1", method: str = "GET",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """(status, lower-cased headers, body) of one request to 127.0.0.1:`port` from the address `source`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        connection.close()


def statuses(port: int, path: str, count: int, **kwargs: object) -> list[int]:
    return [send(port, path, **kwargs)[0] for _ in range(count)]  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=[False, True], ids=["sotw", "delta"])
def stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The whole stack, with an Envoy on State of the World ADS, then one on Delta ADS (virtual hosts, and
    so the routes' buckets, over VHDS)."""
    routes = tmp_path_factory.mktemp("routes")
    open_port, guarded, extauthz_port, extauthz_admin = free_port(), free_port(), free_port(), free_port()
    ratelimit_port, ratelimit_admin = free_port(), free_port()
    upstreams = start_upstreams({"accounts": "eu-west"})
    (routes / "gateway.yaml").write_text(CONFIG.format(
        open=open_port, guarded=guarded, accounts=upstreams["accounts"][1], extauthz=extauthz_port,
        ratelimit=ratelimit_port, issuer=ACME.issuer, audience=ACME.audience, jwks=json.dumps(ACME.jwks()),
        app=APP, whole=WHOLE, per_ip=PER_IP, guard=GUARD))
    # What the control plane serves, Envoy itself accepts (`envoy --mode validate`).
    assert check_with_envoy(load_config(routes), ENVOY) == []
    with running_gateway(routes, open_port, upstreams, delta=request.param) as gateway:
        extauthz = start_xds_service("extauthz", gateway.plane, extauthz_port, "extauthz-local",
                                     admin_port=extauthz_admin)
        try:
            ratelimit = start_xds_service("ratelimit", gateway.plane, ratelimit_port, "ratelimit-local",
                                          admin_port=ratelimit_admin)
        except BaseException:
            extauthz.stop()
            raise
        try:
            gateway.envoys[0].proc.wait_port(guarded)
            result = Stack(open_port, guarded, gateway.envoys[0].admin_port, extauthz_admin)
            _wait_for_tenants(result)
            yield result
        finally:
            ratelimit.stop()
            extauthz.stop()


def _wait_for_tenants(stack: Stack, timeout: float = 20.0) -> None:
    """ext_authz takes its tenants over xDS after starting: wait for a 200 on a route without a local limit."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = send(stack.open, "/v1/warm-up", headers={"authorization": f"Bearer {ACME.token('ES256')}"})
        if status == 200 or time.monotonic() > deadline:
            assert status == 200, body
            return
        time.sleep(0.1)


def test_requests_over_a_route_limit_never_reach_ext_authz_nor_the_ratelimit_service(stack: Stack) -> None:
    token = {"authorization": f"Bearer {ACME.token('ES256')}"}
    checks = stack.checks_after(stack.checks(), 0)  # the warm-up's check counted
    envoy_checks, calls, forwarded = stack.envoy_checks(), stack.ratelimit_calls(), stack.forwarded()
    got = statuses(stack.open, "/v1/whole", WHOLE + 7, headers=token)
    assert got == [200] * WHOLE + [429] * 7
    # Only the admitted requests cost a Check and a ShouldRateLimit call; the 7 shed ones cost nothing.
    assert stack.envoy_checks() - envoy_checks == WHOLE
    assert stack.checks_after(checks, WHOLE) == WHOLE
    assert stack.ratelimit_calls() - calls == WHOLE
    assert stack.forwarded() - forwarded == WHOLE
    assert stack.envoy_stat("local_ratelimit.route.whole.http_local_rate_limit.rate_limited") == 7


def test_a_local_429_says_why_and_when_to_come_back(stack: Stack) -> None:
    statuses(stack.open, "/v1/whole", WHOLE + 1)  # whatever the other tests left, the bucket is empty now
    status, headers, body = send(stack.open, "/v1/whole", headers={"authorization": "Bearer not-even-a-jwt"})
    assert status == 429  # not 401: the token was never looked at
    assert body == "local_rate_limited"
    # The ratelimit service's header style: one hour over 5 requests is 720 s per token.
    assert headers["ratelimit-policy"] == f'"local";q={WHOLE};w=3600'
    assert headers["ratelimit"] == '"local";r=0;t=720'
    assert headers["retry-after"] == "720"
    assert "x-ratelimit-limit" not in headers  # Envoy's own X-RateLimit-* stay off


def test_per_client_ip_gives_each_address_its_own_bucket(stack: Stack) -> None:
    assert statuses(stack.open, "/v1/per-ip", PER_IP + 2, source="127.0.0.2") == [200] * PER_IP + [429] * 2
    # Another address is not affected by the first one's flood, and gets its own full bucket.
    assert statuses(stack.open, "/v1/per-ip", PER_IP + 1, source="127.0.0.3") == [200] * PER_IP + [429]
    assert send(stack.open, "/v1/per-ip", source="127.0.0.2")[0] == 429


def test_a_preflight_is_answered_and_a_429_is_readable_cross_origin(stack: Stack) -> None:
    source = "127.0.0.4"
    statuses(stack.open, "/v1/per-ip", PER_IP, source=source)
    status, headers, _ = send(stack.open, "/v1/per-ip", source=source, headers={"origin": APP})
    assert status == 429
    # CORS runs first: the page's script may read the 429 and its Retry-After.
    assert headers["access-control-allow-origin"] == APP
    assert headers["retry-after"] == "1200"
    # A preflight from the same exhausted address is still answered by the CORS filter.
    status, headers, _ = send(stack.open, "/v1/per-ip", source=source, method="OPTIONS",
                              headers={"origin": APP, "access-control-request-method": "GET"})
    assert status == 200
    assert headers["access-control-allow-origin"] == APP


def test_a_listener_guard_sheds_every_path_per_address_even_on_routes_with_their_own_limit(stack: Stack) -> None:
    # A route with its own (generous) local limit stays under the listener's guard.
    got = statuses(stack.guarded, "/v1/inner", GUARD + 2, source="127.0.0.5")
    assert got == [200] * GUARD + [429] * 2
    status, headers, _ = send(stack.guarded, "/v1/inner", source="127.0.0.5")
    assert status == 429
    assert headers["ratelimit-policy"] == f'"local-listener";q={GUARD};w=3600'
    # Paths no route takes are guarded too: a 404 flood is shed the same way.
    assert statuses(stack.guarded, "/nowhere", GUARD + 1, source="127.0.0.6") == [404] * GUARD + [429]
    # Another address still gets through.
    assert send(stack.guarded, "/v1/inner", source="127.0.0.7")[0] == 200


SHAPES = """regions: [eu-west]
listeners:
  - name: edge
    address: 127.0.0.1
    port: 10080
    local_rate_limit: {per: client_ip, unit: second, requests: 4294967295, max_client_ips: 1000000, shadow_mode: true}
  - {name: bare, address: 127.0.0.1, port: 10081, local_rate_limit: {unit: hour, requests: 1}}
services:
  - name: accounts
    endpoints: [{address: 127.0.0.1:9001, region: eu-west}]
routes:
  - name: whole
    listener: edge
    match: {prefix: /whole, methods: [GET]}
    service: accounts
    cors: {allow_origins: ["https://app.example.com"], allow_methods: [GET]}
    local_rate_limit: {unit: minute, requests: 7, burst: 70}
  - name: per-ip
    listener: edge
    match: {prefix: /per-ip}
    service: accounts
    local_rate_limit: {per: client_ip, unit: hour, requests: 1, max_client_ips: 1}
  - name: moved
    listener: edge
    match: {prefix: /old}
    redirect: {path: /new}
    local_rate_limit: {unit: second, requests: 1}
  - name: health
    listener: bare
    match: {path: /healthz}
    direct_response: {status: 200}
    local_rate_limit: {per: client_ip, unit: second, requests: 1, shadow_mode: true}
"""


def test_envoy_accepts_every_shape_of_local_limit(tmp_path: Path) -> None:
    """`envoy --mode validate` on the translated config: bounds, shadow mode, redirects and direct responses."""
    (tmp_path / "gateway.yaml").write_text(SHAPES)
    assert check_with_envoy(load_config(tmp_path), ENVOY) == []


def test_pavilion_validate_shows_a_local_limit_problem_and_accepts_the_fix(tmp_path: Path) -> None:
    bad = SHAPES.replace("{per: client_ip, unit: hour, requests: 1, max_client_ips: 1}",
                         "{per: subject, unit: hour, requests: 1}")
    (tmp_path / "gateway.yaml").write_text(bad)
    run = subprocess.run([PAVILION, "validate", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stdout.startswith(f"{tmp_path / 'gateway.yaml'}:22:29: routes[per-ip].local_rate_limit.per: a local "
                                 "limit cannot count per subject: Envoy knows the subject only after ext_authz")
    (tmp_path / "gateway.yaml").write_text(SHAPES)
    run = subprocess.run([PAVILION, "validate", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ok: 1 file, 2 listeners, 1 service, 4 routes; config version "), run.stdout


def test_shadow_mode_counts_what_it_would_shed_and_sheds_nothing(stack: Stack) -> None:
    assert statuses(stack.open, "/v1/shadow", 3) == [200] * 3
    prefix = "local_ratelimit.route.shadow.http_local_rate_limit"
    assert (stack.envoy_stat(f"{prefix}.rate_limited"), stack.envoy_stat(f"{prefix}.enforced")) == (2, 0)

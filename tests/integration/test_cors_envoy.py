"""Browser clients and HTTPS with the real control plane, Envoy and `pavilion extauthz`: route `cors`
answers preflights in Envoy (ext_authz is never asked, the service never sees them), adds the allow
headers to real cross-origin answers, a plaintext listener with `redirect_to_https` sends every
request to the TLS listener with a 301, and a `direct_response` route answers without a token."""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from controlplane.config.load import load_config
from controlplane.envoy_check import check_with_envoy
from extauthz.dpop_sign import key_thumbprint, make_proof
from tests.controlplane.certs import Ca, make_ca, write_pair
from tests.extauthz.issuer import Issuer
from tests.integration.gateway_procs import running_gateway, start_upstreams, start_xds_service
from tests.procs import ENVOY, free_port

pytestmark = pytest.mark.integration

ACME = Issuer(algs=("ES256",))
APP = "https://app.example.com"

CONFIG = """regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: {https}
    tls: {{certificate: {certs}/edge.pem, key: {certs}/edge-key.pem}}
  - {{name: plain, address: 127.0.0.1, port: {http}, redirect_to_https: public}}
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
  - name: accounts
    match: {{prefix: /v1/accounts, methods: [GET, POST]}}
    service: accounts
    cors:
      allow_origins: [{app}, "https://*.rp.example"]
      allow_methods: [GET, POST]
      allow_headers: [authorization, dpop, content-type]
      expose_headers: [www-authenticate]
      max_age: 10m
  - name: health
    match: {{path: /healthz}}
    direct_response: {{status: 200, body: "ok\\n"}}
  - name: limited
    match: {{prefix: /v1/limited}}
    service: accounts
    auth: none
    cors: {{allow_origins: [{app}], expose_headers: [ratelimit, retry-after]}}
    rate_limits: [{{unit: hour, requests: 2, algorithm: token_bucket}}]
  - name: members
    match: {{path: /members}}
    direct_response: {{status: 200, body: members only}}
    auth: {{tenants: [acme]}}
"""


@dataclass
class Setup:
    https: int
    http: int
    ca: Ca
    envoy_admin: int

    def stat(self, name: str) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.envoy_admin}/stats?filter=^{name}$",
                                    timeout=5) as response:
            lines = response.read().decode().splitlines()
        values = [int(line.split(": ", 1)[1]) for line in lines if line.startswith(f"{name}: ")]
        return values[0] if values else 0

    def checks(self) -> int:
        """Requests Envoy has sent to ext_authz (its gRPC cluster)."""
        return self.stat("cluster.extauthz.upstream_rq_total")

    def forwarded(self) -> int:
        return self.stat("cluster.accounts.upstream_rq_total")


def send(setup: Setup, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """(status, lower-cased headers, body) of one HTTPS request, the server verified against the test CA."""
    context = ssl.create_default_context(cadata=setup.ca.pem.decode())
    connection = http.client.HTTPSConnection("localhost", setup.https, context=context, timeout=5)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        connection.close()


@pytest.fixture(scope="module", params=[False, True], ids=["sotw", "delta"])
def setup(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Setup]:
    """The whole stack, with an Envoy on State of the World ADS, then one on Delta ADS (virtual hosts
    over VHDS): the routes' CORS policies and the redirecting listener arrive either way."""
    certs, routes = tmp_path_factory.mktemp("certs"), tmp_path_factory.mktemp("routes")
    ca = make_ca("Edge CA")
    write_pair(certs, *ca.issue("localhost"))
    https, plain, extauthz_port = free_port(), free_port(), free_port()
    ratelimit_port, ratelimit_admin = free_port(), free_port()
    upstreams = start_upstreams({"accounts": "eu-west"})
    (routes / "gateway.yaml").write_text(CONFIG.format(
        https=https, http=plain, certs=certs, accounts=upstreams["accounts"][1], extauthz=extauthz_port,
        ratelimit=ratelimit_port,
        issuer=ACME.issuer, audience=ACME.audience, jwks=json.dumps(ACME.jwks()), app=APP))
    # What the control plane serves, Envoy itself accepts (`envoy --mode validate`).
    assert check_with_envoy(load_config(routes), ENVOY) == []
    with running_gateway(routes, https, upstreams, delta=request.param) as gateway:
        extauthz = start_xds_service("extauthz", gateway.plane, extauthz_port, "extauthz-cors")
        try:
            # In memory (no Redis): one replica counts alone.
            ratelimit = start_xds_service("ratelimit", gateway.plane, ratelimit_port, "ratelimit-cors",
                                          admin_port=ratelimit_admin)
        except BaseException:
            extauthz.stop()
            raise
        try:
            version = gateway.plane.status()["version"]
            ratelimit.wait_until(lambda: _config_version(ratelimit_admin) == version, 20, "the rules over xDS")
            gateway.envoys[0].proc.wait_port(plain)
            result = Setup(https, plain, ca, gateway.envoys[0].admin_port)
            _wait_for_tenants(result)
            yield result
        finally:
            ratelimit.stop()
            extauthz.stop()


def _config_version(admin_port: int) -> str | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/status", timeout=5) as response:
        version = json.loads(response.read()).get("config_version")
    return str(version) if version else None


def _wait_for_tenants(setup: Setup, timeout: float = 20.0) -> None:
    """ext_authz takes its tenants over xDS after starting: wait for the first 200 with a token."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = send(setup, "GET", "/v1/accounts", {"authorization": f"Bearer {ACME.token('ES256')}"})
        if status == 200 or time.monotonic() > deadline:
            assert status == 200, body
            return
        time.sleep(0.1)


def preflight(setup: Setup, origin: str) -> tuple[int, dict[str, str], str]:
    return send(setup, "OPTIONS", "/v1/accounts/7", {
        "origin": origin, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,dpop,content-type"})


def test_preflight_from_an_allowed_origin_is_answered_by_envoy(setup: Setup) -> None:
    checks, forwarded = setup.checks(), setup.forwarded()
    for origin in (APP, "https://spa.team-a.rp.example"):
        status, headers, _ = preflight(setup, origin)
        assert status == 200
        assert headers["access-control-allow-origin"] == origin
        assert headers["access-control-allow-methods"] == "GET,POST"
        assert headers["access-control-allow-headers"] == "authorization,dpop,content-type"
        assert headers["access-control-max-age"] == "600"
        assert "access-control-allow-credentials" not in headers
    # Neither ext_authz (no token in a preflight) nor the service saw them.
    assert (setup.checks(), setup.forwarded()) == (checks, forwarded)


def test_preflight_from_another_origin_gets_no_allow_origin_and_never_reaches_ext_authz(setup: Setup) -> None:
    checks, forwarded = setup.checks(), setup.forwarded()
    for origin in ("https://evil.example", "https://rp.example", "http://app.example.com"):
        status, headers, _ = preflight(setup, origin)
        assert status == 200
        assert "access-control-allow-origin" not in headers
    assert (setup.checks(), setup.forwarded()) == (checks, forwarded)


def test_cross_origin_get_with_a_token_gets_allow_origin(setup: Setup) -> None:
    checks = setup.checks()
    status, headers, body = send(setup, "GET", "/v1/accounts/7",
                                 {"origin": APP, "authorization": f"Bearer {ACME.token('ES256')}"})
    assert status == 200 and json.loads(body)["name"] == "accounts"
    assert headers["access-control-allow-origin"] == APP
    assert headers["access-control-expose-headers"] == "www-authenticate"
    assert headers["vary"] == "Origin"
    # The actual request is checked, once.
    assert setup.checks() == checks + 1
    # The same request from an origin not allowed is served (CORS is the browser's rule), without allow headers.
    status, headers, _ = send(setup, "GET", "/v1/accounts/7",
                              {"origin": "https://evil.example", "authorization": f"Bearer {ACME.token('ES256')}"})
    assert status == 200 and "access-control-allow-origin" not in headers


def test_a_refusal_is_readable_by_the_page(setup: Setup) -> None:
    """ext_authz's 401 passes back through the CORS filter: the page sees the status and the challenge."""
    status, headers, _ = send(setup, "GET", "/v1/accounts/7", {"origin": APP})
    assert status == 401
    assert headers["access-control-allow-origin"] == APP
    assert headers["www-authenticate"].startswith("Bearer")


def test_plaintext_is_redirected_to_https_and_the_redirect_works(setup: Setup) -> None:
    checks = setup.checks()
    connection = http.client.HTTPConnection("127.0.0.1", setup.http, timeout=5)
    try:
        connection.request("POST", "/v1/accounts/7?page=2", headers={"host": "localhost"})
        response = connection.getresponse()
        response.read()
        status, location = response.status, response.getheader("location", "")
    finally:
        connection.close()
    assert (status, location) == (301, f"https://localhost:{setup.https}/v1/accounts/7?page=2")
    assert setup.checks() == checks  # no token needed to be told where to go
    status, _, _ = send(setup, "GET", location.removeprefix(f"https://localhost:{setup.https}"),
                        {"authorization": f"Bearer {ACME.token('ES256')}"})
    assert status == 200


def test_direct_response_answers_without_a_token(setup: Setup) -> None:
    checks, forwarded = setup.checks(), setup.forwarded()
    status, headers, body = send(setup, "GET", "/healthz", {})
    assert (status, body, headers["content-type"]) == (200, "ok\n", "text/plain")
    assert (setup.checks(), setup.forwarded()) == (checks, forwarded)


def test_direct_response_with_auth_asks_for_a_token(setup: Setup) -> None:
    status, _, _ = send(setup, "GET", "/members", {})
    assert status == 401
    status, _, body = send(setup, "GET", "/members", {"authorization": f"Bearer {ACME.token('ES256')}"})
    assert (status, body) == (200, "members only")


def test_a_browser_app_calls_with_dpop_over_https(setup: Setup) -> None:
    """What an SPA's fetch() does: the preflight for authorization and dpop, then the call with a proof
    for the https URL it called (ext_authz sees the scheme the TLS listener took it on)."""
    client = ec.generate_private_key(ec.SECP256R1())
    status, headers, _ = send(setup, "OPTIONS", "/v1/accounts/7", {
        "origin": APP, "access-control-request-method": "GET", "access-control-request-headers": "authorization,dpop"})
    assert status == 200 and headers["access-control-allow-origin"] == APP
    token = ACME.token("ES256", jti="cors-dpop", cnf={"jkt": key_thumbprint(client)})
    proof = make_proof(client, method="GET", url=f"https://localhost:{setup.https}/v1/accounts/7", access_token=token)
    status, headers, body = send(setup, "GET", "/v1/accounts/7",
                                 {"origin": APP, "authorization": f"DPoP {token}", "dpop": proof})
    assert status == 200, body
    assert headers["access-control-allow-origin"] == APP


def test_preflights_are_not_counted_by_a_rate_limit_and_a_429_is_readable(setup: Setup) -> None:
    """`limited` allows 2 requests an hour for everyone together: preflights before them take none."""
    for _ in range(5):
        status, headers, _ = send(setup, "OPTIONS", "/v1/limited", {"origin": APP,
                                                                     "access-control-request-method": "GET"})
        assert status == 200 and headers["access-control-allow-origin"] == APP
    statuses = [send(setup, "GET", "/v1/limited", {"origin": APP})[0] for _ in range(2)]
    assert statuses == [200, 200]
    status, headers, _ = send(setup, "GET", "/v1/limited", {"origin": APP})
    # The limit holds, and the page can read the 429 and when to retry.
    assert status == 429
    assert headers["access-control-allow-origin"] == APP and "retry-after" in headers


RELOADED = """regions: [eu-west]
listeners:
  - {{name: public, address: 127.0.0.1, port: {port}}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:{accounts}, region: eu-west}}]
routes:
  - name: accounts
    match: {{prefix: /v1/accounts, methods: [GET]}}
    service: accounts
{cors}"""


def test_cors_added_to_and_removed_from_a_running_gateway(tmp_path: Path) -> None:
    """The first `cors` route adds the filter to the Listener, the last one's removal takes it away: both are
    live edits of the directory, with the route's policy and its preflight companion following."""
    port = free_port()
    upstreams = start_upstreams({"accounts": "eu-west"})
    config = tmp_path / "gateway.yaml"
    config.write_text(RELOADED.format(port=port, accounts=upstreams["accounts"][1], cors=""))

    def preflight_answer() -> tuple[int, str | None]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("OPTIONS", "/v1/accounts", headers={"origin": APP,
                                                                    "access-control-request-method": "GET"})
            response = connection.getresponse()
            response.read()
            return response.status, response.getheader("access-control-allow-origin")
        finally:
            connection.close()

    with running_gateway(tmp_path, port, upstreams) as gateway:
        gateway.plane.wait_current(1)
        assert preflight_answer() == (404, None)  # OPTIONS is not among the route's methods
        config.write_text(RELOADED.format(port=port, accounts=upstreams["accounts"][1],
                                          cors=f"    cors: {{allow_origins: [{APP}]}}\n"))
        gateway.plane.wait_current(1)
        gateway.envoys[0].proc.wait_until(lambda: preflight_answer() == (200, APP), 10, "answering preflights")
        config.write_text(RELOADED.format(port=port, accounts=upstreams["accounts"][1], cors=""))
        gateway.plane.wait_current(1)
        gateway.envoys[0].proc.wait_until(lambda: preflight_answer() == (404, None), 10, "no CORS again")

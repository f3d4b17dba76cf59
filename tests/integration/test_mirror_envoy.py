"""Traffic mirroring with the real control plane, Envoy and `pavilion extauthz`: a route's `mirrors` send a
copy of each request to the shadow service (Host `<host>-shadow`, the body, the route's headers and
ext_authz's identity headers), the client only ever gets the primary's answer, a request ext_authz
refuses is not copied, `percent: 0` copies nothing and `percent: 50` about half, and a mirror that is
down costs the client nothing."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from controlplane.config.load import load_config
from controlplane.envoy_check import check_with_envoy
from tests.extauthz.issuer import Issuer
from tests.integration.gateway_procs import Reply, running_gateway, start_xds_service
from tests.integration.gateway_procs import request as http_request
from tests.integration.recording_upstream import seen, start_recording_upstream
from tests.procs import ENVOY, free_port

pytestmark = pytest.mark.integration

ACME = Issuer(algs=("ES256",))
HOST = "api.example.com"

CONFIG = """regions: [eu-west]
listeners:
  - {{name: public, address: 127.0.0.1, port: {port}}}
services:
  - name: primary
    endpoints: [{{address: 127.0.0.1:{primary}, region: eu-west}}]
  - name: shadow
    endpoints: [{{address: 127.0.0.1:{shadow}, region: eu-west}}]
  - name: gone
    endpoints: [{{address: 127.0.0.1:{gone}, region: eu-west}}]
  - name: extauthz
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:{extauthz}, region: eu-west}}]
extauthz: {{service: extauthz, timeout: 2s}}
tenants:
  - id: acme
    issuer: {issuer}
    audiences: [{audience}]
    algorithms: [ES256]
    jwks: {{inline: {jwks}}}
routes:
  - name: orders
    hosts: [{host}]
    match: {{prefix: /v1/orders}}
    service: primary
    request_headers: {{add: {{x-route: orders}}}}
    mirrors: [{{service: shadow}}]
  - name: quiet
    match: {{prefix: /v1/quiet}}
    service: primary
    auth: none
    mirrors: [{{service: shadow, percent: 0}}]
  - name: half
    match: {{prefix: /v1/half}}
    service: primary
    auth: none
    mirrors: [{{service: shadow, percent: 50}}]
  - name: lost
    match: {{prefix: /v1/lost}}
    service: primary
    auth: none
    mirrors: [{{service: gone}}]
"""


@dataclass
class Stack:
    port: int
    primary: int
    shadow: int

    def send(self, path: str, *, token: bool = True, method: str = "GET", host: str = HOST) -> Reply:
        headers = {"host": host}
        if token:
            headers["authorization"] = f"Bearer {ACME.token('ES256')}"
        return http_request(f"http://127.0.0.1:{self.port}{path}", method=method, headers=headers)

    def shadow_paths(self) -> list[str]:
        return [str(item["path"]) for item in seen(self.shadow)]


def wait_for(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """`check()`'s first truthy value; mirrored copies travel after the client's answer, not with it."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def mark(stack: Stack, name: str) -> None:
    """Send a mirrored request and wait for its copy: copies sent before it have arrived by then (one
    Envoy worker, one connection to the shadow kept alive), so a test can tell what was never copied."""
    assert stack.send(f"/v1/orders/{name}").status == 200
    wait_for(lambda: f"/v1/orders/{name}" in stack.shadow_paths(), f"the copy of {name}")


@pytest.fixture(scope="module", params=[False, True], ids=["sotw", "delta"])
def stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The whole stack with an Envoy on State of the World ADS, then one on Delta ADS (virtual hosts over
    VHDS): the route actions and the listener's upgrade list arrive either way."""
    routes = tmp_path_factory.mktemp("routes")
    port, extauthz_port = free_port(), free_port()
    upstreams = {"primary": start_recording_upstream("primary")}
    try:
        upstreams["shadow"] = start_recording_upstream("shadow")
    except BaseException:
        upstreams["primary"][0].stop()
        raise
    (routes / "gateway.yaml").write_text(CONFIG.format(
        port=port, primary=upstreams["primary"][1], shadow=upstreams["shadow"][1], gone=free_port(),
        extauthz=extauthz_port, issuer=ACME.issuer, audience=ACME.audience, jwks=json.dumps(ACME.jwks()), host=HOST))
    with running_gateway(routes, port, upstreams, delta=request.param) as gateway:
        # What the control plane serves, Envoy itself accepts (`envoy --mode validate`).
        assert check_with_envoy(load_config(routes), ENVOY) == []
        extauthz = start_xds_service("extauthz", gateway.plane, extauthz_port, "extauthz-mirror")
        try:
            result = Stack(port, upstreams["primary"][1], upstreams["shadow"][1])
            # ext_authz takes its tenants over xDS after starting: wait for the first 200 with a token.
            wait_for(lambda: result.send("/v1/orders/warm-up").status == 200, "a token accepted", 20)
            yield result
        finally:
            extauthz.stop()


def test_the_client_gets_the_primarys_answer_and_the_shadow_a_copy(stack: Stack) -> None:
    sent = [f"/v1/orders/{n}?page={n}" for n in range(5)]
    for path in sent:
        reply = stack.send(path)
        assert (reply.status, reply.served_by, reply.body["host"]) == (200, "primary", HOST)

    def all_copies() -> list[dict[str, Any]] | None:
        copies = [c for c in seen(stack.shadow) if c["path"] in sent]
        return copies if len(copies) == len(sent) else None

    copies = wait_for(all_copies, "five copies at the shadow")
    assert sorted(c["path"] for c in copies) == sorted(sent)
    for copy in copies:
        headers = {k.lower(): v for k, v in copy["headers"].items()}
        # Envoy tells the shadow it gets copies: `-shadow` on the authority.
        assert copy["host"] == f"{HOST}-shadow"
        # What the route adds and what ext_authz found in the token travel with the copy: a mirror sees
        # who the caller is, and its token.
        assert headers["x-route"] == "orders"
        assert headers["x-pavilion-tenant"] == "acme"
        assert headers["authorization"].startswith("Bearer ")
    # The primary saw the requests themselves, with the real host.
    primary = [c for c in seen(stack.primary) if c["path"] in sent]
    assert len(primary) == len(sent) and {c["host"] for c in primary} == {HOST}


def test_a_body_is_copied_too(stack: Stack) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=5)
    try:
        connection.request("POST", "/v1/orders/with-body", body=b'{"amount": 42}', headers={
            "host": HOST, "authorization": f"Bearer {ACME.token('ES256')}", "content-type": "application/json"})
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())["name"]) == (200, "primary")
    finally:
        connection.close()
    copy = wait_for(lambda: next((c for c in seen(stack.shadow) if c["path"] == "/v1/orders/with-body"), None),
                    "the copy of the POST")
    assert (copy["method"], copy["body"]) == ("POST", '{"amount": 42}')


def test_a_refused_request_is_not_copied(stack: Stack) -> None:
    reply = stack.send("/v1/orders/refused", token=False)
    assert reply.status == 401
    mark(stack, "after-refused")
    assert "/v1/orders/refused" not in stack.shadow_paths()


def test_percent_zero_copies_nothing(stack: Stack) -> None:
    for n in range(20):
        assert stack.send(f"/v1/quiet/{n}", token=False).served_by == "primary"
    mark(stack, "after-quiet")
    assert not [p for p in stack.shadow_paths() if p.startswith("/v1/quiet/")]


def test_percent_fifty_copies_about_half(stack: Stack) -> None:
    for n in range(100):
        assert stack.send(f"/v1/half/{n}", token=False).served_by == "primary"
    mark(stack, "after-half")
    copied = len([p for p in stack.shadow_paths() if p.startswith("/v1/half/")])
    # Envoy draws per request: outside 10..90 of 100 has a chance below 1e-15.
    assert 10 <= copied <= 90, copied


def test_a_mirror_that_is_down_costs_the_client_nothing(stack: Stack) -> None:
    for n in range(3):
        reply = stack.send(f"/v1/lost/{n}", token=False)
        assert (reply.status, reply.served_by) == (200, "primary")


"""The real Envoy routing traffic as the control plane tells it: one control plane, one Envoy and
echo upstreams shared by the module; each test checks one routing behaviour through the listener."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.gateway_procs import (
    Gateway,
    get_json,
    request,
    restart_echo,
    running_gateway,
    start_envoy,
    start_upstreams,
)
from tests.procs import free_port

pytestmark = pytest.mark.integration

UPSTREAMS = {
    "accounts-eu": "eu-west", "accounts-us": "us-east", "stable": "eu-west", "canary": "eu-west",
    "other": "eu-west", "flaky": "eu-west",
}

CONFIG = """
regions: [eu-west, us-east]
listeners:
  - {{name: public, address: 127.0.0.1, port: {listen}}}
services:
  - name: accounts
    endpoints:
      - {{address: 127.0.0.1:{accounts-eu}, region: eu-west}}
      - {{address: 127.0.0.1:{accounts-us}, region: us-east}}
    health_check: {{path: /healthz, interval: 1s}}
  - name: stable
    endpoints: [{{address: 127.0.0.1:{stable}, region: eu-west}}]
  - name: canary
    endpoints: [{{address: 127.0.0.1:{canary}, region: eu-west}}]
  - name: other
    endpoints: [{{address: 127.0.0.1:{other}, region: eu-west}}]
  - name: flaky
    endpoints: [{{address: 127.0.0.1:{flaky}, region: eu-west}}]
routes:
  - {{name: exact, match: {{path: /exact}}, service: other}}
  - {{name: regex, match: {{regex: "^/items/[0-9]+$"}}, service: canary}}
  - {{name: by-header, match: {{prefix: /team, headers: {{x-team: blue}}}}, service: canary}}
  - {{name: team, match: {{prefix: /team}}, service: stable}}
  - {{name: by-method, match: {{prefix: /submit, methods: [POST]}}, service: canary}}
  - {{name: submit, match: {{prefix: /submit}}, service: stable}}
  - name: split
    match: {{prefix: /split}}
    backends: [{{service: stable, weight: 80}}, {{service: canary, weight: 20}}]
  - {{name: rewrite, match: {{prefix: /old}}, service: other, rewrite: {{prefix: /new}}}}
  - name: retried
    match: {{prefix: /retried}}
    service: flaky
    retries: {{attempts: 3, on: [5xx], backoff: {{base: 10ms, max: 50ms}}}}
  - {{name: unretried, match: {{prefix: /unretried}}, service: flaky}}
  - name: headers
    match: {{prefix: /headers}}
    service: other
    request_headers: {{add: {{x-from: gateway}}, remove: [x-debug]}}
    response_headers: {{add: {{x-gateway: pavilion}}}}
  - {{name: accounts, match: {{prefix: /accounts}}, service: accounts}}
  - {{name: prefix, match: {{prefix: /}}, service: stable}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config_dir: Path = tmp_path_factory.mktemp("routes")
    listen = free_port()
    upstreams = start_upstreams(UPSTREAMS)
    ports = {name: port for name, (_proc, port) in upstreams.items()}
    (config_dir / "gateway.yaml").write_text(CONFIG.format(listen=listen, **ports))
    with running_gateway(config_dir, listen, upstreams) as gw:
        gw.plane.wait_synced(1)
        yield gw


def served(gateway: Gateway, path: str, **kwargs: object) -> str:
    reply = gateway.get(path, **kwargs)  # type: ignore[arg-type]
    assert reply.status == 200, (path, reply)
    return reply.served_by


def test_prefix_exact_regex_header_and_method_pick_their_routes(gateway: Gateway) -> None:
    assert served(gateway, "/exact") == "other"
    assert served(gateway, "/exact/more") == "stable"  # exact is exact; the catch-all prefix takes it
    assert served(gateway, "/items/42") == "canary"
    assert served(gateway, "/items/abc") == "stable"
    assert served(gateway, "/team/x", headers={"x-team": "blue"}) == "canary"
    assert served(gateway, "/team/x", headers={"x-team": "red"}) == "stable"
    assert served(gateway, "/submit", method="POST") == "canary"
    assert served(gateway, "/submit", method="GET") == "stable"


def test_weighted_split_follows_the_weights(gateway: Gateway) -> None:
    counts = collections.Counter(served(gateway, "/split") for _ in range(200))
    share = counts["canary"] / 200
    print(f"split 80/20 over 200 requests: {dict(counts)}")
    assert set(counts) == {"stable", "canary"}
    assert 0.10 <= share <= 0.30


def test_prefix_rewrite(gateway: Gateway) -> None:
    reply = gateway.get("/old/thing?q=1")
    assert reply.served_by == "other"
    assert reply.body["path"] == "/new/thing"
    assert reply.body["query"] == "q=1"


def fail_next(gateway: Gateway, upstream: str, count: int) -> None:
    port = gateway.upstreams[upstream][1]
    reply = request(f"http://127.0.0.1:{port}/_fail?count={count}", method="POST")
    assert reply.body == {"failing": count}


def test_retries_hide_upstream_failures_only_where_configured(gateway: Gateway) -> None:
    fail_next(gateway, "flaky", 2)
    assert gateway.get("/retried").status == 200  # two 503s, then the third attempt succeeds
    fail_next(gateway, "flaky", 1)
    assert gateway.get("/unretried").status == 503
    assert gateway.get("/unretried").status == 200


def test_request_and_response_headers_are_added_and_removed(gateway: Gateway) -> None:
    reply = gateway.get("/headers", headers={"x-debug": "1", "x-keep": "yes"})
    sent = {k.lower(): v for k, v in reply.body["headers"].items()}
    assert sent["x-from"] == "gateway"
    assert "x-debug" not in sent
    assert sent["x-keep"] == "yes"
    assert reply.headers["x-gateway"] == "pavilion"


def test_local_region_is_preferred(gateway: Gateway) -> None:
    assert {served(gateway, "/accounts") for _ in range(20)} == {"accounts-eu"}
    # A us-east Envoy of the same control plane gets the us-east endpoint at priority 0.
    us = start_envoy(gateway.plane, "us-east", "edge-us-east-probe")
    try:
        gateway.plane.wait_synced(2)
        clusters = get_json(f"http://127.0.0.1:{us.admin_port}/clusters?format=json")
        accounts = next(c for c in clusters["cluster_statuses"] if c["name"] == "accounts")
        priorities = {h["address"]["socket_address"]["port_value"]: h.get("priority", 0)
                      for h in accounts["host_statuses"]}
        assert priorities == {gateway.upstreams["accounts-us"][1]: 0, gateway.upstreams["accounts-eu"][1]: 1}
        status = gateway.plane.status()
        assert {node["region"] for node in status["nodes"]} == {"eu-west", "us-east"}
    finally:
        us.proc.stop()


def wait_served_by(gateway: Gateway, path: str, name: str, timeout: float = 20.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        reply = gateway.get(path)
        if reply.status == 200 and reply.served_by == name:
            return time.monotonic() - started
        time.sleep(0.1)
    raise TimeoutError(f"{path} not served by {name} within {timeout}s")


def test_failover_to_the_other_region_and_back(gateway: Gateway) -> None:
    proc, port = gateway.upstreams["accounts-eu"]
    proc.kill()
    proc.stop()
    away = wait_served_by(gateway, "/accounts", "accounts-us")
    revived = restart_echo("accounts-eu", "eu-west", port)
    gateway.upstreams["accounts-eu"] = (revived, port)
    back = wait_served_by(gateway, "/accounts", "accounts-eu")
    print(f"failover to us-east after {away:.2f}s, back to eu-west after {back:.2f}s")
    assert {served(gateway, "/accounts") for _ in range(10)} == {"accounts-eu"}

"""Delegations with the real control plane and Envoy: a team's edit that reaches outside its delegation
(a longer prefix over another team's path) is rejected with its file and line, and Envoy keeps sending
that path where it went; an edit inside the delegation is live as usual."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.gateway_procs import Gateway, running_gateway, start_upstreams
from tests.procs import free_port

pytestmark = pytest.mark.integration

PLATFORM = """
regions: [eu-west]
listeners:
  - {{name: public, address: 127.0.0.1, port: {listen}}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:{accounts}, region: eu-west}}]
routes:
  - {{name: accounts-admin, match: {{prefix: /v1/accounts/admin}}, service: accounts}}
delegations:
  - files: [teams/payments/]
    hosts: ["*"]
    paths: [/v1/payments/]
"""

TEAM = """
services:
  - name: payments
    endpoints: [{{address: 127.0.0.1:{payments}, region: eu-west}}]
routes:
  - {{name: payments, match: {{prefix: {prefix}}}, service: payments}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config_dir: Path = tmp_path_factory.mktemp("routes")
    listen = free_port()
    upstreams = start_upstreams({"accounts": "eu-west", "payments": "eu-west"})
    (config_dir / "platform.yaml").write_text(PLATFORM.format(listen=listen, accounts=upstreams["accounts"][1]))
    (config_dir / "teams" / "payments").mkdir(parents=True)
    (config_dir / "teams" / "payments" / "routes.yaml").write_text(
        TEAM.format(payments=upstreams["payments"][1], prefix="/v1/payments/"))
    with running_gateway(config_dir, listen, upstreams) as gw:
        gw.plane.wait_synced(1)
        yield gw


def served_by(gateway: Gateway, path: str) -> str | None:
    reply = gateway.get(path)
    return reply.served_by if reply.status == 200 else None


def test_an_edit_outside_the_delegation_is_rejected_and_the_path_stays_where_it_was(gateway: Gateway) -> None:
    plane = gateway.plane
    good = plane.wait_current(1)
    assert served_by(gateway, "/v1/payments/1") == "payments"
    assert served_by(gateway, "/v1/accounts/admin/users") == "accounts"
    team_file = plane.config_dir / "teams" / "payments" / "routes.yaml"
    original = team_file.read_text()
    team_file.write_text(original.replace("prefix: /v1/payments/", "prefix: /v1/accounts/admin/users"))
    try:
        deadline = time.monotonic() + 10
        status = plane.status()
        while time.monotonic() < deadline and not status["last_rejected"]:
            time.sleep(0.05)
            status = plane.status()
        rejected = status["last_rejected"]
        assert rejected is not None, status
        assert any("teams/payments/routes.yaml:6:38: routes[payments].match.prefix: '/v1/accounts/admin/users' is "
                   "outside the delegated paths /v1/payments/" in line for line in rejected["errors"]), rejected
        assert status["version"] == good["version"]
        assert served_by(gateway, "/v1/accounts/admin/users") == "accounts"
        assert served_by(gateway, "/v1/payments/1") == "payments"
    finally:
        team_file.write_text(original)
    # An edit inside the delegation goes live.
    team_file.write_text(original.replace("prefix: /v1/payments/", "prefix: /v1/payments/v2/"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and served_by(gateway, "/v1/payments/1") is not None:
        time.sleep(0.05)
    assert served_by(gateway, "/v1/payments/1") is None  # 404: the route now starts at /v1/payments/v2/
    assert served_by(gateway, "/v1/payments/v2/1") == "payments"

"""The route YAML drives ext_authz and ratelimit through the control plane, with real processes:
`pavilion controlplane`, `pavilion extauthz --xds`, `pavilion ratelimit --xds` (in-memory stores).

An edit (a tenant added, a limit changed) reaches both services' answers within 2 s; the three
report one config version on /status and in `pavilion_config_info`; with the control plane killed
both keep serving their last config, and they reconnect when it is back."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as common_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from pavilion.probe import http_ok
from tests.extauthz.issuer import Issuer
from tests.integration.extauthz_stack import check_request
from tests.integration.xds_stack import DOMAIN, Plane, get_json, write_config
from tests.procs import PAVILION, Proc, free_port

pytestmark = pytest.mark.integration

ACME = Issuer(issuer="https://idp.acme.test", algs=("ES256",))
BETA = Issuer(issuer="https://login.beta.test", algs=("ES256",), name="beta")
EDIT_REACH = 2.0  # seconds an edit may take to reach a service's answers


class Service:
    def __init__(self, kind: str, plane: Plane) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.proc = Proc([PAVILION, "--log-format", "console", kind, "--xds", plane.target, "--port", str(self.port),
                          "--admin-port", str(self.admin_port), "--node-id", f"{kind}-test", "--region", "local"],
                         name=kind)
        self.proc.wait_until(lambda: http_ok(f"http://127.0.0.1:{self.admin_port}/readyz"), 30, "ready")
        self.proc.wait_port(self.port)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def status(self) -> dict[str, Any]:
        return get_json(f"http://127.0.0.1:{self.admin_port}/status")

    def stop(self) -> None:
        self.channel.close()
        self.proc.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Plane, Service, Service]]:
    plane = Plane(write_config(tmp_path / "routes", {"acme": ACME}, requests=3)).start()
    started: list[Service] = []
    try:
        started.append(Service("extauthz", plane))
        started.append(Service("ratelimit", plane))
        yield plane, started[0], started[1]
    finally:
        for service in started:
            service.stop()
        plane.stop()


def check(extauthz: Service, issuer: Issuer, tenant: str) -> int:
    """The HTTP status ext_authz decides for a token of `issuer` on a route admitting `tenant` (200: allowed)."""
    stub = external_auth_pb2_grpc.AuthorizationStub(extauthz.channel)
    request = check_request({"authorization": f"Bearer {issuer.token('ES256')}"}, tenant)
    response = stub.Check(request, timeout=5)
    return 200 if response.status.code == 0 else int(response.denied_response.status.code)


def should_rate_limit(ratelimit: Service, tenant: str, hits: int = 1) -> rls_pb2.RateLimitResponse:
    entries = [common_pb2.RateLimitDescriptor.Entry(key=k, value=v)
               for k, v in (("route", "accounts"), ("limit", "0"), ("tenant", tenant))]
    request = rls_pb2.RateLimitRequest(domain=DOMAIN, descriptors=[common_pb2.RateLimitDescriptor(entries=entries)],
                                       hits_addend=hits)
    response: rls_pb2.RateLimitResponse = rls_pb2_grpc.RateLimitServiceStub(ratelimit.channel).ShouldRateLimit(
        request, timeout=5)
    return response


def admitted(ratelimit: Service, tenant: str, attempts: int) -> int:
    return sum(should_rate_limit(ratelimit, tenant).overall_code == rls_pb2.RateLimitResponse.OK
               for _ in range(attempts))


def current_limit(ratelimit: Service) -> int:
    """The limit the service applies now, read without consuming (hits_addend 0)."""
    return int(should_rate_limit(ratelimit, "probe", hits=0).statuses[0].current_limit.requests_per_unit)


def wait_for(what: str, predicate: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} not within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - started


def config_info(admin_port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=2) as response:
        text = response.read().decode()
    return set(re.findall(r'^pavilion_config_info\{version="([^"]+)"\} 1\.0$', text, re.MULTILINE))


def versions(plane: Plane, *services: Service) -> list[str | None]:
    return [plane.status()["version"], *(s.status()["config_version"] for s in services)]


def test_one_route_yaml_drives_both_services_live(stack: tuple[Plane, Service, Service]) -> None:
    plane, extauthz, ratelimit = stack
    first = plane.version()
    assert versions(plane, extauthz, ratelimit) == [first] * 3
    assert config_info(plane.admin_port) == config_info(extauthz.admin_port) == config_info(ratelimit.admin_port) \
        == {first}
    assert [s.status()["source"] for s in (extauthz, ratelimit)] == ["xds", "xds"]
    assert check(extauthz, ACME, "acme") == 200
    assert check(extauthz, BETA, "beta") == 401  # no tenant beta yet
    assert admitted(ratelimit, "acme", 5) == 3

    write_config(plane.config_dir, {"acme": ACME, "beta": BETA}, requests=5)
    second = plane.wait_version_change(first)
    wait_for("tenant beta at ext_authz", lambda: check(extauthz, BETA, "beta") == 200, EDIT_REACH)
    wait_for("the new limit at ratelimit", lambda: current_limit(ratelimit) == 5, EDIT_REACH)
    assert admitted(ratelimit, "beta", 7) == 5
    assert check(extauthz, ACME, "acme") == 200
    wait_for("one version everywhere", lambda: versions(plane, extauthz, ratelimit) == [second] * 3, EDIT_REACH)
    assert config_info(extauthz.admin_port) == config_info(ratelimit.admin_port) == {second}

    # The control plane goes away: both keep serving the last config, then reconnect to a new one.
    plane.kill()
    wait_for("services see the plane gone",
             lambda: not any(s.status()["xds"]["connected"] for s in (extauthz, ratelimit)), 10)
    assert check(extauthz, BETA, "beta") == 200 and current_limit(ratelimit) == 5
    assert [s.status()["config_version"] for s in (extauthz, ratelimit)] == [second] * 2
    plane.start()
    wait_for("services reconnected",
             lambda: all(s.status()["xds"]["connected"] and s.status()["xds"]["streams"] >= 2
                         for s in (extauthz, ratelimit)), 15)
    assert versions(plane, extauthz, ratelimit) == [second] * 3
    assert check(extauthz, BETA, "beta") == 200


def test_an_update_ext_authz_refuses_is_nacked_and_the_last_good_tenants_keep_serving(
        stack: tuple[Plane, Service, Service]) -> None:
    """The control plane accepts a tenant whose inline keys ext_authz finds unusable (an HMAC secret):
    ext_authz NACKs with the reason and keeps its tenants; ratelimit moves on; /status says which is where."""
    plane, extauthz, ratelimit = stack
    first = plane.version()
    routes = plane.config_dir / "routes.yaml"
    gamma = ("  - id: gamma\n    issuer: https://gamma.test\n    audiences: [x]\n"
             '    jwks: {inline: {keys: [{kty: oct, k: c2VjcmV0LXNlY3JldC1zZWNyZXQ}]}}\n')
    routes.write_text(routes.read_text().replace("routes:\n", gamma + "routes:\n", 1))
    refused = plane.wait_version_change(first)
    wait_for("ext_authz refuses it", lambda: extauthz.status()["last_error"] is not None, EDIT_REACH)
    assert "no usable key" in extauthz.status()["last_error"]
    assert extauthz.status()["config_version"] == first
    assert check(extauthz, ACME, "acme") == 200
    wait_for("ratelimit takes it", lambda: ratelimit.status()["config_version"] == refused, EDIT_REACH)

    def nack() -> dict[str, Any]:
        for node in plane.status()["nodes"]:
            if node["node_id"] == "extauthz-test":
                return dict(node["types"]["TenantPolicy"].get("last_nack") or {})
        return {}

    wait_for("the control plane records the NACK", lambda: nack().get("version") == refused, EDIT_REACH)
    assert "no usable key" in nack()["error"] and "gamma" in nack()["error"]

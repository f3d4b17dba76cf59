"""ext_authz through the real Envoy, with two real `pavilion extauthz` processes sharing a real Redis."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.extauthz.issuer import Issuer
from tests.integration.extauthz_stack import (
    check_direct,
    pavilion_revoke,
    start_envoy,
    start_extauthz,
    wait_for,
    write_tenants,
)
from tests.procs import Proc, start_echo, start_redis

pytestmark = pytest.mark.integration

ACME = Issuer()
BETA = Issuer(issuer="https://idp.beta.test", name="beta")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("extauthz")
    config = write_tenants(directory / "tenants.yaml", {"acme": ACME, "beta": BETA})
    procs: list[Proc] = []
    try:
        redis, redis_port = start_redis()
        procs.append(redis)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        echo, echo_port = start_echo("upstream")
        procs.append(echo)
        ports = []
        for index in range(2):
            proc, port = start_extauthz(config, redis_url=redis_url, name=f"extauthz-{index}")
            procs.append(proc)
            ports.append(port)
        envoy, listen_port = start_envoy(directory, ports, echo_port, {"/acme": "acme", "/beta": "beta"})
        procs.append(envoy)
        yield {"listen": listen_port, "redis_url": redis_url, "ports": ports, "procs": procs}
    finally:
        for proc in reversed(procs):
            proc.stop()


def get(port: int, path: str, headers: list[tuple[str, str]]) -> tuple[int, dict[str, str], Any]:
    """GET through Envoy; `headers` may repeat a name (http.client sends each one)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", path)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
        response_headers = {k.lower(): v for k, v in response.getheaders()}
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = body.decode(errors="replace")
        return response.status, response_headers, parsed
    finally:
        connection.close()


def bearer(token: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {token}")


def test_no_token_is_401_with_a_bare_bearer_challenge(stack: dict[str, Any]) -> None:
    status, headers, body = get(stack["listen"], "/acme/orders", [])
    assert status == 401
    assert headers["www-authenticate"] == "Bearer"
    assert body == {"error": "missing"}


def test_a_valid_token_reaches_the_upstream_with_identity_headers_and_spoofs_stripped(
        stack: dict[str, Any]) -> None:
    token = ACME.token(sub="alice", email="alice@acme.test", jti="ok-1")
    status, _, body = get(stack["listen"], "/acme/orders", [
        bearer(token),
        ("x-pavilion-tenant", "beta"), ("x-pavilion-subject", "root"), ("x-pavilion-subject", "root2"),
        ("x-user-email", "mallory@evil.test"), ("x-user-groups", "admin"),
    ])
    assert status == 200, body
    seen = {k.lower(): v for k, v in body["headers"].items()}
    assert body["name"] == "upstream"
    assert seen["x-pavilion-tenant"] == "acme"
    assert seen["x-pavilion-subject"] == "alice"
    assert seen["x-user-email"] == "alice@acme.test"
    assert "x-user-groups" not in seen  # the token has no groups: the client's value is removed
    assert "root" not in json.dumps(body) and "mallory" not in json.dumps(body)


def test_a_tampered_token_is_401_invalid_token(stack: dict[str, Any]) -> None:
    header, _, signature = ACME.token(sub="alice", jti="t-1").split(".")
    forged_payload = ACME.token(sub="admin", jti="t-1").split(".")[1]
    status, headers, body = get(stack["listen"], "/acme/orders", [bearer(f"{header}.{forged_payload}.{signature}")])
    assert status == 401
    assert headers["www-authenticate"].startswith('Bearer error="invalid_token", error_description="')
    assert body == {"error": "bad_signature"}


def test_a_valid_token_of_another_tenant_is_403(stack: dict[str, Any]) -> None:
    status, headers, body = get(stack["listen"], "/acme/orders", [bearer(BETA.token(jti="x-1"))])
    assert status == 403
    assert headers["www-authenticate"].startswith('Bearer error="insufficient_scope"')
    assert body == {"error": "wrong_tenant"}
    assert get(stack["listen"], "/beta/orders", [bearer(BETA.token(jti="x-1"))])[0] == 200


def test_pavilion_revoke_is_refused_within_a_second_by_envoy_and_by_both_replicas(stack: dict[str, Any]) -> None:
    exp = int(time.time()) + 300
    token = ACME.token(sub="erin", jti="revoke-me", exp=exp)
    # Warm both replicas: the verification and the "not revoked" answer are cached in each.
    for port in stack["ports"]:
        response = check_direct(port, {"authorization": f"Bearer {token}"})
        assert response is not None and response.status.code == 0
    assert get(stack["listen"], "/acme/orders", [bearer(token)])[0] == 200

    pavilion_revoke(stack["redis_url"], "acme", ACME.issuer, "--jti", "revoke-me", "--expires", str(exp))

    def refused_everywhere() -> bool:
        direct = [check_direct(port, {"authorization": f"Bearer {token}"}) for port in stack["ports"]]
        through_envoy = [get(stack["listen"], "/acme/orders", [bearer(token)])[0] for _ in range(4)]
        return all(r is not None and r.denied_response.status.code == 401 for r in direct) and \
            through_envoy == [401] * 4

    # Timed from the command's exit (its start-up is not the service's business): within 1 s.
    took = wait_for(refused_everywhere, 5.0, "refused by both replicas")
    assert took < 1.0, f"revocation took {took:.2f} s to reach every replica"
    status, _, body = get(stack["listen"], "/acme/orders", [bearer(token)])
    assert (status, body) == (401, {"error": "revoked"})
    other = ACME.token(sub="erin", jti="another")
    assert get(stack["listen"], "/acme/orders", [bearer(other)])[0] == 200


def test_subject_revocation_reaches_every_replica(stack: dict[str, Any]) -> None:
    token = ACME.token(sub="frank", jti="f-1", iat=int(time.time()) - 5)
    assert get(stack["listen"], "/acme/orders", [bearer(token)])[0] == 200
    pavilion_revoke(stack["redis_url"], "acme", ACME.issuer, "--subject", "frank")
    took = wait_for(lambda: all(
        (r := check_direct(port, {"authorization": f"Bearer {token}"})) is not None
        and r.denied_response.status.code == 401 for port in stack["ports"]), 5.0, "refused")
    assert took < 1.0


def test_redis_down_fails_closed_through_envoy(tmp_path: Path) -> None:
    config = write_tenants(tmp_path / "tenants.yaml", {"acme": ACME})
    redis, redis_port = start_redis()
    echo, echo_port = start_echo("upstream")
    procs = [redis, echo]
    try:
        proc, port = start_extauthz(config, redis_url=f"redis://127.0.0.1:{redis_port}/0")
        procs.append(proc)
        envoy, listen = start_envoy(tmp_path, [port], echo_port, {"/acme": "acme"})
        procs.append(envoy)
        token = ACME.token(jti="r-1")
        assert get(listen, "/acme/x", [bearer(token)])[0] == 200
        redis.kill()
        wait_for(lambda: get(listen, "/acme/x", [bearer(token)])[:3:2] == (503, {"error": "store_unavailable"}),
                 5.0, "503 with Redis down")
    finally:
        for proc in reversed(procs):
            proc.stop()


def test_two_authorization_headers_are_400_through_envoy(stack: dict[str, Any]) -> None:
    token = ACME.token(jti="two-1")
    status, headers, body = get(stack["listen"], "/acme/orders", [bearer(token), bearer(token)])
    assert status == 400
    assert headers["www-authenticate"].startswith('Bearer error="invalid_request"')
    assert body == {"error": "multiple_credentials"}
    status, _, body = get(stack["listen"], f"/acme/orders?access_token={token}", [bearer(token)])
    assert (status, body) == (400, {"error": "multiple_credentials"})
    assert get(stack["listen"], "/acme/orders", [("authorization", "Bearer ")])[0] == 400

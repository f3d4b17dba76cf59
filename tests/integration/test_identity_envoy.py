"""Signed identity for upstreams through the real Envoy: `pavilion extauthz` with an `identity:` section (a
key file, or a key inside a SoftHSM2 token), a hand-written Envoy whose `/orders` route sets the
`identity_audience` context extension and whose `/plain` route does not, and the echo upstream.

The upstream receives `x-pavilion-identity`, and the test verifies it as an upstream must: with the JWKS
fetched from ext_authz's admin port, checking iss, aud, exp and the alg the key names. A client's own
`x-pavilion-identity` never reaches the upstream, on either route. A key file replaced in place is signed
with from then on, while the old key stays published. And the same from the route YAML: the control plane
writes the extension from `auth.identity`, `pavilion extauthz --xds --identity FILE` signs."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.protobuf import duration_pb2, json_format

from extauthz.signing import generate_key, private_key_pem
from tests.extauthz.issuer import Issuer
from tests.integration.extauthz_stack import EXT_AUTHZ_FILTER, check_request, start_extauthz, write_tenants
from tests.integration.gateway_procs import running_gateway, start_upstreams, start_xds_service
from tests.integration.static_envoy import ingress_bootstrap, packed, static_cluster
from tests.procs import ENVOY, PAVILION, Proc, free_port, start_echo

pytestmark = pytest.mark.integration

ACME = Issuer(algs=("ES256",))
GATEWAY = "https://gateway.acme.test"
HEADER = "x-pavilion-identity"
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"


@dataclass
class Stack:
    port: int
    admin_port: int
    directory: Path
    key_file: Path | None

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            return response.status, json.loads(body) if response.status == 200 else {"body": body.decode()}
        finally:
            connection.close()

    def jwks(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/.well-known/jwks.json", timeout=5) as answer:
            keys: dict[str, Any] = json.load(answer)
        return keys


def envoy_config(listen_port: int, admin_port: int, extauthz_port: int, echo_port: int) -> str:
    ext_authz = ext_authz_pb2.ExtAuthz(
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name="extauthz"),
            timeout=duration_pb2.Duration(seconds=2)),
        transport_api_version=config_source_pb2.V3, failure_mode_allow=False)
    routes = []
    for prefix, extensions in (("/orders", {"tenant": "acme", "identity_audience": "orders-api"}),
                               ("/plain", {"tenant": "acme"})):
        route = route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix=prefix))
        route.route.cluster = "echo"
        route.typed_per_filter_config[EXT_AUTHZ_FILTER].CopyFrom(packed(ext_authz_pb2.ExtAuthzPerRoute(
            check_settings=ext_authz_pb2.CheckSettings(context_extensions=extensions))))
        routes.append(route)
    bootstrap = ingress_bootstrap(listen_port, admin_port, routes=routes,
                                  clusters=[static_cluster("extauthz", [extauthz_port], http2=True),
                                            static_cluster("echo", [echo_port], http2=False)],
                                  filters=[hcm_pb2.HttpFilter(name=EXT_AUTHZ_FILTER, typed_config=packed(ext_authz))])
    return json_format.MessageToJson(bootstrap)


def softhsm_token(directory: Path) -> tuple[str, dict[str, str]]:
    """A SoftHSM2 token with a key pair generated inside it by `pavilion identity-key`; its `key:` YAML and env."""
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "gateway", "--pin", "2468",
                    "--so-pin", "1357"], check=True, capture_output=True, env=env, timeout=30)
    (directory / "hsm-pin").write_text("2468\n")
    made = subprocess.run([PAVILION, "identity-key", "--pkcs11-module", SOFTHSM, "--token", "gateway", "--label",
                           "identity-1", "--pin-file", str(directory / "hsm-pin")],
                          capture_output=True, text=True, env=env, timeout=30, check=False)
    assert made.returncode == 0, made.stderr
    return (f"{{pkcs11: {{module: {SOFTHSM}, token: gateway, key: identity-1, pin_file: hsm-pin}}}}",
            {"SOFTHSM2_CONF": str(conf)})


@pytest.fixture(params=["file", "pkcs11"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    key_file: Path | None = None
    env: dict[str, str] = {}
    if request.param == "file":
        key_file = tmp_path / "identity.pem"
        key_file.write_bytes(private_key_pem(generate_key("ES256")[0]))
        key_file.chmod(0o600)
        key = "{file: identity.pem}"
    else:
        if shutil.which("softhsm2-util") is None or not Path(SOFTHSM).exists():
            pytest.skip("softhsm2 is not installed (make test installs it)")
        key, env = softhsm_token(tmp_path)
    config = write_tenants(tmp_path / "extauthz.yaml", {"acme": ACME})
    with config.open("a") as out:
        out.write(f"identity:\n  issuer: {GATEWAY}\n  key: {key}\n  lifetime: 2m\n")
    procs: list[Proc] = []
    try:
        echo, echo_port = start_echo("orders")
        procs.append(echo)
        admin_port = free_port()
        previous = {name: os.environ.get(name) for name in env}
        os.environ.update(env)  # start_extauthz passes the environment on
        try:
            extauthz, extauthz_port = start_extauthz(config, admin_port=admin_port)
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        procs.append(extauthz)
        listen_port, envoy_admin = free_port(), free_port()
        envoy_file = tmp_path / "envoy.json"
        envoy_file.write_text(envoy_config(listen_port, envoy_admin, extauthz_port, echo_port))
        envoy = Proc([ENVOY, "-c", str(envoy_file), "--concurrency", "1", "--log-level", "warn",
                      "--base-id", str(listen_port)], name="envoy")
        procs.append(envoy)
        envoy.wait_http(f"http://127.0.0.1:{envoy_admin}/ready", 60)
        yield Stack(listen_port, admin_port, tmp_path, key_file)
    finally:
        for proc in reversed(procs):
            proc.stop()


def verify(assertion: str, jwks: dict[str, Any], audience: str) -> dict[str, Any]:
    """As an upstream does: the key by kid from the gateway's JWKS, its alg only, iss, aud and exp checked."""
    kid = jwt.get_unverified_header(assertion)["kid"]
    key = next(k for k in jwks["keys"] if k["kid"] == kid)
    claims: dict[str, Any] = jwt.decode(assertion, jwt.PyJWK(key).key, algorithms=[key["alg"]], audience=audience,
                                        issuer=GATEWAY, options={"require": ["exp", "iat", "iss", "aud", "sub"]})
    return claims


def test_the_upstream_gets_a_verifiable_assertion_and_never_a_clients_own(stack: Stack) -> None:
    token = ACME.token("ES256", email="ann@acme.test", client_id="web-app", scope="orders:read")
    forged = jwt.encode({"iss": GATEWAY, "aud": "orders-api", "sub": "admin"}, "a-guessed-secret-of-32-bytes-or-more",
                        algorithm="HS256")
    status, echoed = stack.get("/orders/17", {"authorization": f"Bearer {token}", HEADER: forged})
    assert status == 200, echoed
    received = {name.lower(): value for name, value in echoed["headers"].items()}
    assertion = received[HEADER]
    assert assertion != forged and "," not in assertion  # replaced, not appended
    claims = verify(assertion, stack.jwks(), "orders-api")
    assert (claims["sub"], claims["tenant"], claims["client"], claims["scope"]) == ("user-1", "acme", "web-app",
                                                                                      "orders:read")
    assert 0 < claims["exp"] - time.time() <= 120 and claims["exp"] <= ACME.claims()["exp"]
    with pytest.raises(jwt.InvalidAudienceError):
        verify(assertion, stack.jwks(), "billing-api")
    assert received["x-pavilion-subject"] == "user-1"  # the plain headers still come too
    # The route without identity: no assertion at all, and the client's own is removed.
    status, echoed = stack.get("/plain", {"authorization": f"Bearer {token}", HEADER: forged})
    assert status == 200, echoed
    assert HEADER not in {name.lower() for name in echoed["headers"]}
    # A refused request never reaches the upstream, with or without a forged assertion.
    status, _ = stack.get("/orders/17", {HEADER: forged})
    assert status == 401


@pytest.mark.parametrize("stack", ["file"], indirect=True)  # rotation by file replacement: file keys only
def test_a_key_file_replaced_in_place_signs_from_then_on_and_the_old_key_stays_published(stack: Stack) -> None:
    assert stack.key_file is not None
    old_kid = stack.jwks()["keys"][0]["kid"]
    replacement = stack.directory / "identity.new"
    replacement.write_bytes(private_key_pem(generate_key("ES256")[0]))
    replacement.chmod(0o600)
    replacement.replace(stack.key_file)
    deadline = time.monotonic() + 20
    while [k["kid"] for k in stack.jwks()["keys"]][1:] != [old_kid]:
        assert time.monotonic() < deadline, stack.jwks()
        time.sleep(0.2)
    new_kid = stack.jwks()["keys"][0]["kid"]
    assert new_kid != old_kid
    token = ACME.token("ES256", jti="after-rotation")  # not cached: signed with the new key
    status, echoed = stack.get("/orders", {"authorization": f"Bearer {token}"})
    assert status == 200, echoed
    assertion = {name.lower(): value for name, value in echoed["headers"].items()}[HEADER]
    assert jwt.get_unverified_header(assertion)["kid"] == new_kid
    verify(assertion, stack.jwks(), "orders-api")


GATEWAY_CONFIG = """regions: [eu-west]
listeners:
  - {{name: public, address: 127.0.0.1, port: {port}}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:{accounts}, region: eu-west}}]
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
  - name: accounts
    match: {{prefix: /accounts}}
    service: accounts
    auth: {{tenants: [acme], identity: {{audience: accounts-api}}}}
  - {{name: status, match: {{prefix: /status}}, service: accounts, auth: none}}
"""


def test_from_the_route_yaml_over_xds_with_the_identity_file_beside_extauthz(tmp_path: Path) -> None:
    """The control plane writes `identity_audience` from `auth.identity`; `pavilion extauthz --xds` takes its
    signing settings from `--identity FILE`; a public route drops a client's assertion in Envoy itself."""
    routes = tmp_path / "routes"
    routes.mkdir()
    port, extauthz_port, admin_port = free_port(), free_port(), free_port()
    (tmp_path / "identity.pem").write_bytes(private_key_pem(generate_key("ES256")[0]))
    (tmp_path / "identity.pem").chmod(0o600)
    identity = tmp_path / "identity.yaml"
    identity.write_text(f"identity:\n  issuer: {GATEWAY}\n  key: {{file: identity.pem}}\n")
    upstreams = start_upstreams({"accounts": "eu-west"})
    (routes / "gateway.yaml").write_text(GATEWAY_CONFIG.format(
        port=port, accounts=upstreams["accounts"][1], extauthz=extauthz_port, issuer=ACME.issuer,
        audience=ACME.audience, jwks=json.dumps(ACME.jwks())))
    with running_gateway(routes, port, upstreams) as gateway:
        extauthz = start_xds_service("extauthz", gateway.plane, extauthz_port, "extauthz-identity",
                                     "--identity", str(identity), admin_port=admin_port)
        try:
            gateway.envoys[0].proc.wait_port(port)
            stack = Stack(port, admin_port, tmp_path, tmp_path / "identity.pem")
            token = ACME.token("ES256", client_id="web-app")
            deadline = time.monotonic() + 20
            while (status := stack.get("/accounts", {"authorization": f"Bearer {token}"})[0]) != 200:
                assert time.monotonic() < deadline, status
                time.sleep(0.1)
            status, echoed = stack.get("/accounts", {"authorization": f"Bearer {token}", HEADER: "forged"})
            assert status == 200, echoed
            received = {name.lower(): value for name, value in echoed["headers"].items()}
            claims = verify(received[HEADER], stack.jwks(), "accounts-api")
            assert (claims["sub"], claims["tenant"], claims["client"]) == ("user-1", "acme", "web-app")
            status, echoed = stack.get("/status", {HEADER: "forged"})  # public: ext_authz is not asked
            assert status == 200 and HEADER not in {name.lower() for name in echoed["headers"]}
        finally:
            extauthz.stop()
        assert "BEGIN" not in extauthz.output() and token not in extauthz.output()


def test_with_workers_every_worker_signs_with_the_key_the_parent_publishes(tmp_path: Path) -> None:
    """`--workers 2`: the parent's admin port serves the JWKS; assertions from fresh connections (either worker)
    verify with it."""
    key_file = tmp_path / "identity.pem"
    key_file.write_bytes(private_key_pem(generate_key("ES256")[0]))
    key_file.chmod(0o600)
    config = write_tenants(tmp_path / "extauthz.yaml", {"acme": ACME})
    with config.open("a") as out:
        out.write(f"identity:\n  issuer: {GATEWAY}\n  key: {{file: identity.pem}}\n")
    admin_port = free_port()
    extauthz, port = start_extauthz(config, admin_port=admin_port, workers=2)
    try:
        stack = Stack(0, admin_port, tmp_path, key_file)
        deadline = time.monotonic() + 20
        while True:
            try:
                jwks = stack.jwks()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert len(jwks["keys"]) == 1 and "d" not in jwks["keys"][0]
        for index in range(6):  # a fresh connection each: SO_REUSEPORT spreads them over the workers
            token = ACME.token("ES256", jti=f"workers-{index}")
            request = check_request({"authorization": f"Bearer {token}"}, "acme")
            request.attributes.context_extensions["identity_audience"] = "orders-api"
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                response = external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=5)
            assertion = {h.header.key: h.header.value for h in response.ok_response.headers}[HEADER]
            assert verify(assertion, jwks, "orders-api")["jti"]
    finally:
        extauthz.stop()

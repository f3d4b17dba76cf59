"""The real ext_authz stack for integration tests and the bench: tenant files, `pavilion extauthz`
processes, and a static Envoy bootstrap (built from xds-protos messages) with the ext_authz filter."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import duration_pb2, json_format

from tests.extauthz.issuer import Issuer
from tests.integration.static_envoy import ingress_bootstrap, packed, static_cluster
from tests.procs import ENVOY, PAVILION, Proc, free_port

EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"


def write_tenants(path: Path, issuers: dict[str, Issuer], *, on_store_error: str = "deny") -> Path:
    """A tenant YAML file trusting each issuer's keys inline; `acme` also maps email and groups to headers."""
    lines = ["tenants:"]
    for tenant_id, issuer in issuers.items():
        lines += [f"  - id: {tenant_id}", f"    issuer: {issuer.issuer}", f"    audiences: [{issuer.audience}]",
                  f"    algorithms: [{', '.join(issuer.algs)}]",
                  f"    jwks: {{inline: {json.dumps(issuer.jwks())}}}", f"    on_store_error: {on_store_error}"]
        if tenant_id == "acme":
            lines.append("    claims_to_headers: {email: x-user-email, groups: x-user-groups}")
    path.write_text("\n".join(lines) + "\n")
    return path


def start_extauthz(config: Path, *, port: int | None = None, redis_url: str | None = None, workers: int = 1,
                   admin_port: int | None = None, name: str = "extauthz") -> tuple[Proc, int]:
    port = port or free_port()
    argv = [PAVILION, "--log-level", "warning", "extauthz", "--config", str(config), "--port", str(port),
            "--workers", str(workers)]
    if redis_url:
        argv += ["--redis", redis_url]
    if admin_port:
        argv += ["--admin-port", str(admin_port)]
    proc = Proc(argv, name=name)
    proc.wait_until(lambda: check_direct(port, {}, timeout=0.5) is not None, 30, f"answering Check on {port}")
    return proc, port


def check_request(headers: dict[str, str], tenant: str | None = "acme",
                  path: str = "/") -> external_auth_pb2.CheckRequest:
    attributes = attribute_context_pb2.AttributeContext(
        request=attribute_context_pb2.AttributeContext.Request(
            http=attribute_context_pb2.AttributeContext.HttpRequest(method="GET", path=path, headers=headers)))
    if tenant is not None:
        attributes.context_extensions["tenant"] = tenant
    return external_auth_pb2.CheckRequest(attributes=attributes)


def check_direct(port: int, headers: dict[str, str], tenant: str | None = "acme",
                 timeout: float = 5.0) -> external_auth_pb2.CheckResponse | None:
    """One Check on a fresh connection (so SO_REUSEPORT may pick any worker); None when nobody answers."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        try:
            response: external_auth_pb2.CheckResponse = stub.Check(check_request(headers, tenant), timeout=timeout)
            return response
        except grpc.RpcError:
            return None


def envoy_bootstrap(listen_port: int, admin_port: int, extauthz_ports: Sequence[int], echo_port: int | None,
                    route_tenants: dict[str, str], timeout_ms: int = 1000,
                    max_streams: int = 0) -> bootstrap_pb2.Bootstrap:
    """Envoy with one listener: each `/PREFIX` route goes to the echo upstream (or, without one, answers
    200 itself), checked by ext_authz with `context_extensions{tenant}`; ext_authz fails closed."""
    ext_authz = ext_authz_pb2.ExtAuthz(
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name="extauthz"),
            timeout=duration_pb2.Duration(nanos=timeout_ms * 1_000_000) if timeout_ms < 1000
            else duration_pb2.Duration(seconds=timeout_ms // 1000)),
        transport_api_version=config_source_pb2.V3, failure_mode_allow=False)
    routes = []
    for prefix, tenants in route_tenants.items():
        route = route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix=prefix))
        if echo_port is None:
            route.direct_response.status = 200
            route.direct_response.body.inline_string = "ok\n"
        else:
            route.route.cluster = "echo"
        route.typed_per_filter_config[EXT_AUTHZ_FILTER].CopyFrom(packed(ext_authz_pb2.ExtAuthzPerRoute(
            check_settings=ext_authz_pb2.CheckSettings(context_extensions={"tenant": tenants}))))
        routes.append(route)
    clusters = [static_cluster("extauthz", extauthz_ports, http2=True, max_streams=max_streams)]
    if echo_port is not None:
        clusters.append(static_cluster("echo", [echo_port], http2=False))
    return ingress_bootstrap(listen_port, admin_port, routes=routes, clusters=clusters,
                             filters=[hcm_pb2.HttpFilter(name=EXT_AUTHZ_FILTER, typed_config=packed(ext_authz))])


def start_envoy(directory: Path, extauthz_ports: Sequence[int], echo_port: int | None,
                route_tenants: dict[str, str], concurrency: int = 1, max_streams: int = 0) -> tuple[Proc, int]:
    listen_port, admin_port = free_port(), free_port()
    config = directory / f"envoy-{listen_port}.json"
    config.write_text(json_format.MessageToJson(
        envoy_bootstrap(listen_port, admin_port, extauthz_ports, echo_port, route_tenants, max_streams=max_streams)))
    proc = Proc([ENVOY, "-c", str(config), "--concurrency", str(concurrency), "--log-level", "warn",
                 "--base-id", str(listen_port)], name="envoy")
    proc.wait_http(f"http://127.0.0.1:{admin_port}/ready", 60)
    return proc, listen_port


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `predicate()` held; AssertionError after `timeout`."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not {what} within {timeout}s")
        time.sleep(0.02)


def pavilion_revoke(redis_url: str, tenant: str, issuer: str, *args: str) -> str:
    done = subprocess.run([PAVILION, "revoke", "--redis", redis_url, "--tenant", tenant, "--issuer", issuer, *args],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


"""Processes the rate-limit integration tests start: a Redis Cluster, `pavilion ratelimit`, and Envoy
with the global ratelimit filter."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2
from envoy.config.ratelimit.v3 import rls_pb2 as rls_config_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import duration_pb2, json_format

from pavilion.probe import http_ok
from tests.integration.static_envoy import ingress_bootstrap, packed, static_cluster
from tests.procs import ENVOY, PAVILION, REDIS_SERVER, Proc, free_port

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


@contextmanager
def redis_cluster(size: int = 3, password: str | None = None) -> Iterator[list[int]]:
    """`size` masters on loopback, slots spread by `redis-cli --cluster create`; yields their ports.
    With `password`, every node requires it (requirepass and masterauth)."""
    procs: list[Proc] = []
    auth = ["--requirepass", password, "--masterauth", password] if password else []
    cli_auth = ["--no-auth-warning", "-a", password] if password else []
    try:
        ports = [_cluster_client_port() for _ in range(size)]
        for port in ports:
            workdir = tempfile.mkdtemp(prefix=f"redis-cluster-{port}-")
            procs.append(Proc([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                               "--cluster-port", str(free_port()),
                               "--cluster-config-file", f"{workdir}/nodes.conf", "--save", "", "--appendonly", "no",
                               "--dir", workdir, *auth], name=f"redis-cluster-{port}").wait_port(port))
        subprocess.run([REDIS_CLI, *cli_auth, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 20
        while not all(_cluster_ok(port, cli_auth) for port in ports):
            if time.monotonic() > deadline:
                raise TimeoutError("redis cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield ports
    finally:
        for proc in procs:
            proc.stop()


def _cluster_client_port() -> int:
    # Redis refuses cluster mode on ports above 55535 (it once put the bus at port + 10000).
    while True:
        port = free_port()
        if port <= 55535:
            return port


def _cluster_ok(port: int, cli_auth: Sequence[str] = ()) -> bool:
    result = subprocess.run([REDIS_CLI, *cli_auth, "-p", str(port), "CLUSTER", "INFO"], capture_output=True,
                            text=True, timeout=5)
    return "cluster_state:ok" in result.stdout


def start_ratelimit(config: Path, *, port: int | None = None, extra: Sequence[str] = (),
                    admin_port: int | None = None) -> tuple[Proc, int, int]:
    """`pavilion ratelimit` on loopback, ready when its admin /readyz answers; (proc, grpc port, admin port)."""
    port = port or free_port()
    admin_port = admin_port or free_port()
    proc = Proc([PAVILION, "--log-format", "console", "ratelimit", "--config", str(config), "--port", str(port),
                 "--admin-port", str(admin_port), *extra], name=f"ratelimit-{port}")
    proc.wait_until(lambda: http_ok(f"http://127.0.0.1:{admin_port}/readyz"), 30, "ready")
    proc.wait_port(port)  # with --workers the parent's admin server is up before the workers
    return proc, port, admin_port


def ratelimit_bootstrap(listen_port: int, admin_port: int, ratelimit_port: int, echo_port: int,
                        domain: str) -> bootstrap_pb2.Bootstrap:
    """One listener, one route to the echo upstream with two rate_limits (so two descriptors per
    request): `x-client` header → (client, value), and generic_key `api`. Fails closed on errors so a
    broken service shows as 500s, not as silently passing requests."""
    action = route_components_pb2.RateLimit.Action
    route = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/"),
        route=route_components_pb2.RouteAction(cluster="echo", rate_limits=[
            route_components_pb2.RateLimit(actions=[action(request_headers=action.RequestHeaders(
                header_name="x-client", descriptor_key="client"))]),
            route_components_pb2.RateLimit(actions=[action(generic_key=action.GenericKey(descriptor_value="api"))]),
        ]))
    ratelimit = rate_limit_pb2.RateLimit(
        domain=domain, timeout=duration_pb2.Duration(seconds=1), failure_mode_deny=True,
        rate_limit_service=rls_config_pb2.RateLimitServiceConfig(
            grpc_service=grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name="ratelimit")),
            transport_api_version=config_source_pb2.V3))
    return ingress_bootstrap(
        listen_port, admin_port, routes=[route],
        filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.ratelimit", typed_config=packed(ratelimit))],
        clusters=[static_cluster("ratelimit", [ratelimit_port], http2=True),
                  static_cluster("echo", [echo_port], http2=False)])


def start_envoy(directory: Path, ratelimit_port: int, echo_port: int, domain: str) -> tuple[Proc, int]:
    listen_port, admin_port = free_port(), free_port()
    config = directory / f"envoy-{listen_port}.json"
    config.write_text(json_format.MessageToJson(
        ratelimit_bootstrap(listen_port, admin_port, ratelimit_port, echo_port, domain)))
    proc = Proc([ENVOY, "-c", str(config), "--concurrency", "1", "--log-level", "warn",
                 "--base-id", str(listen_port)], name="envoy")
    proc.wait_http(f"http://127.0.0.1:{admin_port}/ready", 60)
    return proc, listen_port

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
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2, grpc_service_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.ratelimit.v3 import rls_pb2 as rls_config_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2, json_format
from google.protobuf.message import Message

from tests.procs import ENVOY, PAVILION, REDIS_SERVER, Proc, free_port, http_ok

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


@contextmanager
def redis_cluster(size: int = 3) -> Iterator[list[int]]:
    """`size` masters on loopback, slots spread by `redis-cli --cluster create`; yields their ports."""
    procs: list[Proc] = []
    try:
        ports = [_cluster_client_port() for _ in range(size)]
        for port in ports:
            workdir = tempfile.mkdtemp(prefix=f"redis-cluster-{port}-")
            procs.append(Proc([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                               "--cluster-port", str(free_port()),
                               "--cluster-config-file", f"{workdir}/nodes.conf", "--save", "", "--appendonly", "no",
                               "--dir", workdir], name=f"redis-cluster-{port}").wait_port(port))
        subprocess.run([REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 20
        while not all(_cluster_ok(port) for port in ports):
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


def _cluster_ok(port: int) -> bool:
    result = subprocess.run([REDIS_CLI, "-p", str(port), "CLUSTER", "INFO"], capture_output=True, text=True,
                            timeout=5)
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


def _address(port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port))


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _cluster(name: str, port: int, http2: bool) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.STATIC, connect_timeout=duration_pb2.Duration(seconds=1),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(address=_address(port)))])]))
    if http2:
        options = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()))
        cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Pack(options)
    return cluster


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
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix="ingress", codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        route_config=route_pb2.RouteConfiguration(name="local", virtual_hosts=[
            route_components_pb2.VirtualHost(name="all", domains=["*"], routes=[route])]),
        http_filters=[
            hcm_pb2.HttpFilter(name="envoy.filters.http.ratelimit", typed_config=_packed(ratelimit)),
            hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=_packed(router_pb2.Router()))])
    listener = listener_pb2.Listener(
        name="ingress", address=_address(listen_port),
        filter_chains=[listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=_packed(manager))])])
    return bootstrap_pb2.Bootstrap(
        admin=bootstrap_pb2.Admin(address=_address(admin_port)),
        static_resources=bootstrap_pb2.Bootstrap.StaticResources(
            listeners=[listener],
            clusters=[_cluster("ratelimit", ratelimit_port, http2=True), _cluster("echo", echo_port, http2=False)]))


def start_envoy(directory: Path, ratelimit_port: int, echo_port: int, domain: str) -> tuple[Proc, int]:
    listen_port, admin_port = free_port(), free_port()
    config = directory / f"envoy-{listen_port}.json"
    config.write_text(json_format.MessageToJson(
        ratelimit_bootstrap(listen_port, admin_port, ratelimit_port, echo_port, domain)))
    proc = Proc([ENVOY, "-c", str(config), "--concurrency", "1", "--log-level", "warn",
                 "--base-id", str(listen_port)], name="envoy")
    proc.wait_http(f"http://127.0.0.1:{admin_port}/ready", 60)
    return proc, listen_port

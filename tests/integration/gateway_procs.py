"""The whole gateway as real processes for integration tests: echo upstreams, the control plane
and Envoy edges with generated bootstraps, on random loopback ports, always stopped."""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.bootstrap import render_bootstrap
from controlplane.cache import config_version
from controlplane.config.load import load_config
from pavilion.probe import http_ok
from tests.procs import ENVOY, PAVILION, Proc, free_port, start_echo


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: Mapping[str, str]

    @property
    def served_by(self) -> str:
        return str(self.body.get("name", ""))


def request(url: str, *, method: str = "GET", headers: Mapping[str, str] | None = None,
            timeout: float = 5.0) -> Reply:
    req = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            raw, status, got = response.read(), response.status, response.headers
    except urllib.error.HTTPError as exc:
        raw, status, got = exc.read(), exc.code, exc.headers
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {"text": raw.decode(errors="replace")}
    return Reply(status, body if isinstance(body, dict) else {"value": body}, {k.lower(): v for k, v in got.items()})


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return dict(json.loads(response.read()))


@dataclass
class ControlPlane:
    proc: Proc
    xds_port: int
    admin_port: int
    config_dir: Path

    def status(self) -> dict[str, Any]:
        return get_json(f"http://127.0.0.1:{self.admin_port}/status")

    def wait_synced(self, nodes: int, timeout: float = 15.0, version: str | None = None) -> dict[str, Any]:
        """Wait until `nodes` streams are connected and every one holds everything its group is served."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                status = self.status()
            except OSError:  # not listening yet (a restart)
                time.sleep(0.05)
                continue
            if (len(status["nodes"]) >= nodes and status["synced"]
                    and (version is None or status["version"] == version)):
                return status
            time.sleep(0.02)
        raise TimeoutError(f"control plane not synced with {nodes} nodes: {json.dumps(status)[:3000]}")

    def wait_current(self, nodes: int, timeout: float = 15.0) -> dict[str, Any]:
        """Wait until the config now on disk is served and acked (earlier edits have all landed)."""
        return self.wait_synced(nodes, timeout, version=config_version(load_config(self.config_dir)))


@dataclass
class Envoy:
    proc: Proc
    admin_port: int
    region: str


@dataclass
class Gateway:
    plane: ControlPlane
    envoys: list[Envoy]
    listen_port: int
    upstreams: dict[str, tuple[Proc, int]] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.listen_port}{path}"

    def get(self, path: str, **kwargs: Any) -> Reply:
        return request(self.url(path), **kwargs)


def start_controlplane(config_dir: Path, *extra: str, admin_port: int | None = None) -> ControlPlane:
    """`extra`: more flags of `pavilion controlplane`."""
    xds_port, admin_port = free_port(), admin_port or free_port()
    proc = Proc([PAVILION, "--log-format", "console", "controlplane", "--config", str(config_dir),
                 "--xds-port", str(xds_port), "--admin-port", str(admin_port), *extra], name="controlplane")
    try:
        proc.wait_http(f"http://127.0.0.1:{admin_port}/readyz")
    except BaseException:
        proc.stop()
        raise
    return ControlPlane(proc, xds_port, admin_port, config_dir)


def start_envoy(plane: ControlPlane, region: str, node_id: str, listen_port: int | None = None, *,
                delta: bool = False) -> Envoy:
    admin_port = free_port()
    bootstrap = render_bootstrap(node_id=node_id, region=region, xds_address=f"127.0.0.1:{plane.xds_port}",
                                 admin_port=admin_port, delta=delta)
    path = Path(tempfile.mkdtemp(prefix="envoy-")) / "bootstrap.yaml"
    path.write_text(bootstrap)
    # Access log lines reach stdout at each file flush: every 10 s by default, which tests reading the log
    # would wait out.
    proc = Proc([ENVOY, "-c", str(path), "--disable-hot-restart", "--concurrency", "1", "-l", "warning",
                 "--file-flush-interval-msec", "100"], name=f"envoy-{node_id}")
    try:
        proc.wait_http(f"http://127.0.0.1:{admin_port}/ready")
        if listen_port is not None:
            proc.wait_port(listen_port)
    except BaseException:
        proc.stop()
        raise
    return Envoy(proc, admin_port, region)


@contextmanager
def running_gateway(config_dir: Path, listen_port: int, upstreams: dict[str, tuple[Proc, int]],
                    regions: tuple[str, ...] = ("eu-west",), *, delta: bool = False) -> Iterator[Gateway]:
    with ExitStack() as stack:
        # Tests may replace an upstream (kill and restart it): stop whatever is there at the end.
        stack.callback(lambda: [proc.stop() for proc, _port in upstreams.values()])
        plane = start_controlplane(config_dir)
        stack.callback(plane.proc.stop)
        envoys = []
        for index, region in enumerate(regions):
            envoy = start_envoy(plane, region, f"edge-{region}-{index}", listen_port if index == 0 else None,
                                delta=delta)
            stack.callback(envoy.proc.stop)
            envoys.append(envoy)
        yield Gateway(plane, envoys, listen_port, upstreams)


def start_xds_service(role: str, plane: ControlPlane, port: int, node_id: str, *extra: str,
                      region: str = "eu-west", admin_port: int | None = None) -> Proc:
    """`pavilion extauthz` or `pavilion ratelimit` (`role`) fed over xDS by `plane`, serving gRPC on `port`
    (plaintext to the control plane; `extra` adds flags), once ready: its first config arrived."""
    admin_port = admin_port or free_port()
    proc = Proc([PAVILION, "--log-format", "console", role, "--xds", f"127.0.0.1:{plane.xds_port}", "--port",
                 str(port), "--admin-port", str(admin_port), "--node-id", node_id, "--region", region, *extra],
                name=role)
    try:
        proc.wait_http(f"http://127.0.0.1:{admin_port}/readyz")
        proc.wait_port(port)
    except BaseException:
        proc.stop()
        raise
    return proc


def start_upstreams(specs: Mapping[str, str]) -> dict[str, tuple[Proc, int]]:
    """name -> region: one echo upstream each, on a random port."""
    started: dict[str, tuple[Proc, int]] = {}
    try:
        for name, region in specs.items():
            started[name] = start_echo(name, region)
    except BaseException:
        for proc, _port in started.values():
            proc.stop()
        raise
    return started


def restart_echo(name: str, region: str, port: int) -> Proc:
    proc = Proc([sys.executable, "-m", "pavilion.echo", "--port", str(port), "--name", name, "--region", region],
                name=f"echo-{name}")
    try:
        proc.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 15, "answering again")
    except BaseException:
        proc.stop()
        raise
    return proc

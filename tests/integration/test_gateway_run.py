"""`pavilion run`, the bootstrap Envoy accepts, and the control plane's drain, as real processes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from controlplane import resources as urls
from controlplane.bootstrap import render_bootstrap
from pavilion.probe import port_open
from tests.controlplane.ads_client import AdsClient
from tests.integration.gateway_procs import request, start_controlplane
from tests.procs import ENVOY, PAVILION, Proc, free_port

pytestmark = pytest.mark.integration


def test_envoy_accepts_the_bootstrap(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(render_bootstrap(node_id="edge-1", region="eu-west", xds_address="127.0.0.1:18000",
                                     admin_port=0))
    result = subprocess.run([ENVOY, "--mode", "validate", "-c", str(path), "-l", "error", "--disable-hot-restart"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pavilion_run_starts_the_gateway_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    listen, upstream = free_port(), free_port()
    xds, admin, envoy_admin = free_port(), free_port(), free_port()
    (tmp_path / "gateway.yaml").write_text(f"""
regions: [eu-west]
listeners:
  - {{name: public, address: 127.0.0.1, port: {listen}}}
services:
  - name: hello
    endpoints: [{{address: 127.0.0.1:{upstream}, region: eu-west}}]
routes:
  - {{name: hello, match: {{prefix: /hello}}, service: hello}}
""")
    run = Proc([PAVILION, "run", "--config", str(tmp_path), "--xds-port", str(xds), "--admin-port", str(admin),
                "--envoy-admin-port", str(envoy_admin)], name="pavilion-run")
    try:
        run.wait_until(lambda: "Ctrl-C stops everything" in run.output(), 60, "up")
        out = run.output()
        assert f"curl -i http://127.0.0.1:{listen}/hello/example" in out
        reply = request(f"http://127.0.0.1:{listen}/hello/example")
        assert reply.status == 200 and reply.served_by == "hello-eu-west"
        run.popen.send_signal(signal.SIGINT)
        assert run.popen.wait(20) == 0
        deadline = time.monotonic() + 5
        ports = (listen, upstream, xds, admin, envoy_admin)
        while time.monotonic() < deadline and any(port_open(p) for p in ports):
            time.sleep(0.1)
        assert [p for p in ports if port_open(p)] == []
    finally:
        run.stop()


def test_controlplane_ends_streams_and_exits_on_sigterm() -> None:
    config = Path(tempfile.mkdtemp(prefix="routes-"))
    (config / "gateway.yaml").write_text(f"""
regions: [eu-west]
listeners: [{{name: public, address: 127.0.0.1, port: {free_port()}}}]
services: [{{name: s, endpoints: [{{address: 127.0.0.1:1, region: eu-west}}]}}]
routes: [{{name: r, match: {{prefix: /}}, service: s}}]
""")
    plane = start_controlplane(config)

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{plane.xds_port}") as channel:
            client = AdsClient(channel)
            await client.request(urls.CLUSTER)
            response = await client.response()
            assert response.control_plane.identifier.startswith("pavilion-")
            started = time.monotonic()
            plane.proc.signal(signal.SIGTERM)
            end = await asyncio.wait_for(client.responses.get(), 5)  # the stream ends, not waits for a drain
            assert isinstance(end, EOFError), end
            assert time.monotonic() - started < 3
            await client.close()

    try:
        asyncio.run(scenario())
        assert plane.proc.popen.wait(10) == 0
    finally:
        plane.proc.stop()


def test_controlplane_with_a_broken_first_config_is_not_ready_until_fixed(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text("listeners: [{name: public, address: 127.0.0.1, port: nope}]\n")
    xds, admin = free_port(), free_port()
    plane = Proc([PAVILION, "controlplane", "--config", str(tmp_path), "--xds-port", str(xds),
                  "--admin-port", str(admin)], name="controlplane")
    try:
        plane.wait_http(f"http://127.0.0.1:{admin}/healthz")
        assert request(f"http://127.0.0.1:{admin}/readyz").status == 503
        status = request(f"http://127.0.0.1:{admin}/status").body
        assert status["ready"] is False and status["version"] is None
        assert "gateway.yaml:1" in status["last_rejected"]["errors"][0]
        (tmp_path / "gateway.yaml").write_text(f"""
regions: [eu-west]
listeners: [{{name: public, address: 127.0.0.1, port: {free_port()}}}]
services: [{{name: s, endpoints: [{{address: 127.0.0.1:1, region: eu-west}}]}}]
routes: [{{name: r, match: {{prefix: /}}, service: s}}]
""")
        plane.wait_http(f"http://127.0.0.1:{admin}/readyz", timeout=10)
        metrics = request(f"http://127.0.0.1:{admin}/metrics").body["text"]
        assert 'pavilion_controlplane_reloads_total{result="rejected"} 1.0' in metrics
        assert 'pavilion_controlplane_reloads_total{result="applied"} 1.0' in metrics
    finally:
        plane.stop()


def test_envoy_keeps_serving_through_a_control_plane_restart_and_gets_the_same_versions(tmp_path: Path) -> None:
    from tests.integration.gateway_procs import running_gateway, start_upstreams

    listen = free_port()
    upstreams = start_upstreams({"hello": "eu-west"})
    (tmp_path / "gateway.yaml").write_text(f"""
regions: [eu-west]
listeners: [{{name: public, address: 127.0.0.1, port: {listen}}}]
services: [{{name: hello, endpoints: [{{address: 127.0.0.1:{upstreams["hello"][1]}, region: eu-west}}]}}]
routes: [{{name: hello, match: {{prefix: /}}, service: hello}}]
""")
    with running_gateway(tmp_path, listen, upstreams) as gateway:
        before = gateway.plane.wait_synced(1)
        assert gateway.plane.proc.stop() == 0
        assert gateway.get("/while-down").served_by == "hello"  # Envoy keeps its last config
        replica = Proc([PAVILION, "controlplane", "--config", str(tmp_path), "--xds-port", str(gateway.plane.xds_port),
                        "--admin-port", str(gateway.plane.admin_port)], name="controlplane-replica")
        try:
            gateway.plane.proc = replica
            after = gateway.plane.wait_synced(1, timeout=30)  # Envoy's reconnect backoff is up to a few seconds
            assert after["version"] == before["version"]
            def acked(status: dict[str, Any]) -> dict[str, str]:
                return {kind: entry["acked_version"] for kind, entry in status["nodes"][0]["types"].items()}

            assert acked(after) == acked(before)  # a replica serves byte-identical versions
            assert gateway.get("/after").served_by == "hello"
        finally:
            replica.stop()

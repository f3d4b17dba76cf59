"""A staged rollout with real Envoys in two regions: an edit reaches eu-west first, and us-east only once
eu-west's proxy acked it and `bake` has passed; `/status` and `pavilion status` show where it stands."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gateway_procs import ControlPlane, Envoy, start_controlplane, start_envoy, start_upstreams
from tests.procs import PAVILION, Proc, free_port

pytestmark = pytest.mark.integration

BAKE = 3.0
CONFIG = """
regions: [eu-west, us-east]
listeners:
  - {{name: public, address: 127.0.0.1, port: {listen}}}
services:
  - name: blue
    endpoints: [{{address: 127.0.0.1:{blue}, region: eu-west}}]
  - name: green
    endpoints: [{{address: 127.0.0.1:{green}, region: eu-west}}]
routes:
  - {{name: base, listener: public, match: {{prefix: /base}}, service: {service}}}
rollout:
  stages: [eu-west, us-east]
  bake: {bake}s
"""


def route_cluster(envoy: Envoy) -> str:
    """The cluster the Envoy's route `base` sends to now, from its own config dump."""
    url = f"http://127.0.0.1:{envoy.admin_port}/config_dump?resource=dynamic_route_configs"
    with urllib.request.urlopen(url, timeout=5) as response:
        dump = json.loads(response.read())
    for config in dump["configs"]:
        for host in config["route_config"].get("virtual_hosts", []):
            for route in host["routes"]:
                if route["name"] == "base":
                    return str(route["route"]["cluster"])
    return ""


def wait_for_cluster(envoy: Envoy, cluster: str, timeout: float = 20.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if route_cluster(envoy) == cluster:
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"{envoy.region} still sends /base to {route_cluster(envoy)!r}, not {cluster!r}")


@pytest.fixture()
def regions(tmp_path: Path) -> Iterator[tuple[ControlPlane, Envoy, Envoy, str]]:
    upstreams = start_upstreams({"blue": "eu-west", "green": "eu-west"})
    ports = {name: port for name, (_proc, port) in upstreams.items()}
    config = CONFIG.replace("{bake}", str(BAKE)).format(listen=free_port(), service="{service}", **ports)
    (tmp_path / "routes.yaml").write_text(config.replace("{service}", "blue"))
    with ExitStack() as stack:
        stack.callback(lambda: [proc.stop() for proc, _port in upstreams.values()])
        plane = start_controlplane(tmp_path)
        stack.callback(plane.proc.stop)
        # Both bind the listener's port (Envoy sets SO_REUSEPORT); each is looked at through its admin port.
        eu = start_envoy(plane, "eu-west", "edge-eu")
        stack.callback(eu.proc.stop)
        us = start_envoy(plane, "us-east", "edge-us")
        stack.callback(us.proc.stop)
        plane.wait_synced(2)
        yield plane, eu, us, config


def test_an_edit_reaches_the_second_region_only_after_the_first_acked_it_and_baked(
        regions: tuple[ControlPlane, Envoy, Envoy, str], tmp_path: Path) -> None:
    plane, eu, us, config = regions
    assert route_cluster(eu) == route_cluster(us) == "blue"
    assert plane.status()["rollout"] is None  # the first config went everywhere

    (tmp_path / "routes.yaml").write_text(config.replace("{service}", "green"))
    eu_at = wait_for_cluster(eu, "green")
    assert route_cluster(us) == "blue"
    rollout = plane.status()["rollout"]
    assert rollout is not None and [stage["released"] for stage in rollout["stages"]] == [True, False, False]
    shown = subprocess.run([PAVILION, "status", "--admin", f"127.0.0.1:{plane.admin_port}"], capture_output=True,
                           text=True, timeout=30, check=False)
    assert shown.returncode == 2, shown.stdout + shown.stderr
    assert f"rollout of version {rollout['version']}: released to eu-west; next us-east" in shown.stdout

    us_at = wait_for_cluster(us, "green")
    # eu-west acked before this test saw it: the bake ran from then, so allow the polling's lag.
    assert us_at - eu_at >= BAKE - 0.5
    deadline = time.monotonic() + 10
    while plane.status()["rollout"] is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert plane.status()["rollout"] is None
    plane.wait_synced(2)


@pytest.fixture()
def replicas(tmp_path: Path) -> Iterator[tuple[ControlPlane, ControlPlane, Envoy, Envoy, str]]:
    upstreams = start_upstreams({"blue": "eu-west", "green": "eu-west"})
    ports = {name: port for name, (_proc, port) in upstreams.items()}
    config = CONFIG.replace("{bake}", "1").format(listen=free_port(), service="{service}", **ports)
    (tmp_path / "routes.yaml").write_text(config.replace("{service}", "blue"))
    admins = free_port(), free_port()
    with ExitStack() as stack:
        stack.callback(lambda: [proc.stop() for proc, _port in upstreams.values()])
        planes = []
        for admin, other in (admins, admins[::-1]):
            plane = start_controlplane(tmp_path, "--peers", f"127.0.0.1:{other}", admin_port=admin)
            stack.callback(plane.proc.stop)
            planes.append(plane)
        first, second = planes
        eu = start_envoy(first, "eu-west", "edge-eu")  # eu-west's proxy speaks to the first replica only,
        stack.callback(eu.proc.stop)
        us = start_envoy(second, "us-east", "edge-us")  # us-east's to the second
        stack.callback(us.proc.stop)
        first.wait_synced(1)
        second.wait_synced(1)
        yield first, second, eu, us, config


def test_a_replica_without_the_first_stage_waits_for_the_replica_whose_proxy_has_not_taken_it(
        replicas: tuple[ControlPlane, ControlPlane, Envoy, Envoy, str], tmp_path: Path) -> None:
    first, second, eu, us, config = replicas
    with ExitStack() as stack:
        eu.proc.popen.send_signal(signal.SIGSTOP)  # eu-west's proxy stops answering: it will not ack the edit
        stack.callback(eu.proc.popen.send_signal, signal.SIGCONT)
        (tmp_path / "routes.yaml").write_text(config.replace("{service}", "green"))
        waited = wait_until(lambda: (second.status()["rollout"] or {}).get("waiting_for_replicas"),
                            "the second replica holding us-east for the first")
        assert waited == [first.status()["control_plane"]]
        assert first.status()["rollout"]["waiting_for"] == ["edge-eu"]
        # The second replica has no eu-west proxy, and baked long ago: only its peer holds it back.
        time.sleep(2.0)
        assert route_cluster(us) == "blue"
        # A replica starting now would serve the edit everywhere: it stays unready, so no Envoy comes to it.
        admin = free_port()
        third = Proc([PAVILION, "--log-format", "console", "controlplane", "--config", str(tmp_path),
                      "--xds-port", str(free_port()), "--admin-port", str(admin),
                      "--peers", f"127.0.0.1:{first.admin_port},127.0.0.1:{second.admin_port}"], name="third")
        stack.callback(third.stop)
        third.wait_http(f"http://127.0.0.1:{admin}/healthz")
        time.sleep(1.5)
        assert readyz(admin) == 503
        eu.proc.popen.send_signal(signal.SIGCONT)
        wait_for_cluster(eu, "green")
        wait_for_cluster(us, "green")
        wait_until(lambda: first.status()["rollout"] is None and second.status()["rollout"] is None,
                   "both rollouts over")
        wait_until(lambda: readyz(admin) == 200, "the third replica ready once no peer rolls out")


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"not {what} after {timeout}s")

"""`pavilion status` over several control plane replicas, each with its own real Envoy: one merged view,
and what a replica out of step (another config version, or gone) looks like to the operator.

The two replicas read two copies of the route files, as two pods see a ConfigMap: the kubelet updates
each pod's copy on its own schedule, so for a while one replica serves the edit and the other does not.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.integration.gateway_procs import ControlPlane, start_controlplane, start_envoy, start_upstreams
from tests.integration.test_gateway_reload import BASE
from tests.procs import PAVILION, free_port

pytestmark = pytest.mark.integration

EXTRA = "routes:\n  - {name: extra, listener: public, match: {prefix: /extra}, service: green}\n"


@pytest.fixture()
def replicas(tmp_path: Path) -> Iterator[list[ControlPlane]]:
    upstreams = start_upstreams({"blue": "eu-west", "green": "eu-west"})
    ports = {name: port for name, (_proc, port) in upstreams.items()}
    with ExitStack() as stack:
        stack.callback(lambda: [proc.stop() for proc, _port in upstreams.values()])
        planes = []
        listen = free_port()  # both Envoys bind it: Envoy's listeners set SO_REUSEPORT
        for index in (1, 2):
            config_dir = tmp_path / f"pod-{index}"
            config_dir.mkdir()
            (config_dir / "base.yaml").write_text(BASE.format(listen=listen, **ports))
            plane = start_controlplane(config_dir)
            stack.callback(plane.proc.stop)
            envoy = start_envoy(plane, "eu-west", f"edge-{index}")
            stack.callback(envoy.proc.stop)
            plane.wait_synced(1)
            planes.append(plane)
        yield planes


def status(*planes: ControlPlane, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    admins = [arg for plane in planes for arg in ("--admin", f"127.0.0.1:{plane.admin_port}")]
    return subprocess.run([PAVILION, "status", *admins, *extra], capture_output=True, text=True, timeout=30,
                          check=False)


def line_of(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def test_status_of_replicas_merges_their_proxies_and_names_a_replica_out_of_step(
        replicas: list[ControlPlane]) -> None:
    one, two = replicas
    both = status(one, two)
    assert both.returncode == 0, both.stdout + both.stderr
    assert "eu-west 2/2" in line_of(both.stdout, "base ")
    names = [plane.status()["control_plane"] for plane in replicas]
    assert names[0] in line_of(both.stdout, "edge-1") and names[1] in line_of(both.stdout, "edge-2")
    # Asked alone, either replica sees half the fleet, and calls it healthy.
    alone = status(one)
    assert alone.returncode == 0 and "edge-2" not in alone.stdout and "eu-west 1/1" in alone.stdout

    parsed = json.loads(status(one, two, extra=("--json",)).stdout)
    assert [entry["status"]["nodes"][0]["node_id"] for entry in parsed["replicas"]] == ["edge-1", "edge-2"]

    # The edit reaches the second pod's copy first: that replica serves it, the first does not yet.
    base = (two.config_dir / "base.yaml").read_text()
    (two.config_dir / "base.yaml").write_text(base.replace("routes:\n", EXTRA, 1))
    two.wait_current(1)
    moving = status(one, two)
    assert moving.returncode == 2, moving.stdout + moving.stderr
    versions = {plane.status()["version"] for plane in replicas}
    assert len(versions) == 2 and "replicas serve different config versions" in moving.stdout
    assert " no " in line_of(moving.stdout, "extra ")  # the first replica's proxies do not have it

    first = (one.config_dir / "base.yaml").read_text()
    (one.config_dir / "base.yaml").write_text(first.replace("routes:\n", EXTRA, 1))
    one.wait_current(1)
    settled = status(one, two)
    assert settled.returncode == 0, settled.stdout + settled.stderr
    assert "eu-west 2/2" in line_of(settled.stdout, "extra ")

    two.proc.stop()
    gone = status(one, two)
    assert gone.returncode == 1
    assert f"127.0.0.1:{two.admin_port}" in gone.stderr and "cannot read" in gone.stderr
    assert "edge-1" in gone.stdout


def test_a_deploy_waits_until_every_replica_serves_the_version_validate_printed(
        replicas: list[ControlPlane]) -> None:
    one, two = replicas
    for plane in replicas:  # the edit, as a ConfigMap update reaches both pods
        base = (plane.config_dir / "base.yaml").read_text()
        (plane.config_dir / "base.yaml").write_text(base.replace("routes:\n", EXTRA, 1))
    validated = subprocess.run([PAVILION, "validate", "--no-envoy", str(one.config_dir)], capture_output=True,
                               text=True, timeout=60, check=True).stdout
    version = validated.rsplit("config version ", 1)[1].strip()
    waited = status(one, two, extra=("--version", version, "--wait", "20s"))
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert {plane.status()["version"] for plane in replicas} == {version}
    assert "eu-west 2/2" in line_of(waited.stdout, "extra ")

    never = status(one, two, extra=("--version", "0000000000000000", "--wait", "2s"))
    assert never.returncode == 2
    assert "not every replica serves config version 0000000000000000 after 2s" in never.stderr

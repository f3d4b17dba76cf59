"""Hot reload with the real Envoy: an edit to the route directory is live within about a second,
and a broken edit is rejected while the last good config keeps serving traffic."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gateway_procs import Gateway, running_gateway, start_upstreams
from tests.procs import free_port

pytestmark = pytest.mark.integration

BASE = """
regions: [eu-west]
listeners:
  - {{name: public, address: 127.0.0.1, port: {listen}}}
services:
  - name: blue
    endpoints: [{{address: 127.0.0.1:{blue}, region: eu-west}}]
  - name: green
    endpoints: [{{address: 127.0.0.1:{green}, region: eu-west}}]
routes:
  - {{name: base, listener: public, match: {{prefix: /base}}, service: blue}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config_dir: Path = tmp_path_factory.mktemp("routes")
    listen = free_port()
    upstreams = start_upstreams({"blue": "eu-west", "green": "eu-west"})
    ports = {name: port for name, (_proc, port) in upstreams.items()}
    (config_dir / "base.yaml").write_text(BASE.format(listen=listen, **ports))
    with running_gateway(config_dir, listen, upstreams) as gw:
        gw.plane.wait_synced(1)
        yield gw


def seconds_until_served(gateway: Gateway, path: str, name: str, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        reply = gateway.get(path)
        if reply.status == 200 and reply.served_by == name:
            return time.monotonic() - started
        time.sleep(0.005)
    raise TimeoutError(f"{path} not served by {name} {timeout}s after the edit")


def test_new_route_file_is_live_within_a_second(gateway: Gateway) -> None:
    before = gateway.plane.wait_current(1)["version"]
    assert gateway.get("/late").status == 404
    path = gateway.plane.config_dir / "late.yaml"
    started = time.monotonic()
    path.write_text("routes:\n  - {name: late, match: {prefix: /late}, service: green}\n")
    seconds_until_served(gateway, "/late", "green")
    took = time.monotonic() - started  # from the write, not from the first poll
    print(f"new route served {took * 1000:.0f} ms after the file was written")
    assert took < 5.0
    status = gateway.plane.wait_synced(1)
    assert status["version"] != before
    path.unlink()


def test_changed_route_switches_service_within_a_second(gateway: Gateway) -> None:
    path = gateway.plane.config_dir / "switch.yaml"
    path.write_text("routes:\n  - {name: switch, match: {prefix: /switch}, service: blue}\n")
    seconds_until_served(gateway, "/switch", "blue")
    started = time.monotonic()
    path.write_text("routes:\n  - {name: switch, match: {prefix: /switch}, service: green}\n")
    seconds_until_served(gateway, "/switch", "green")
    took = time.monotonic() - started
    print(f"changed route served by its new service {took * 1000:.0f} ms after the write")
    assert took < 5.0
    path.unlink()


def test_broken_edit_is_rejected_and_traffic_is_untouched(gateway: Gateway) -> None:
    plane = gateway.plane
    good = plane.wait_current(1)
    failures: list[int] = []
    sent = 0
    stop = threading.Event()

    def traffic() -> None:
        nonlocal sent
        while not stop.is_set() and sent < 2000:
            reply = gateway.get("/base")
            sent += 1
            if reply.status != 200 or reply.served_by != "blue":
                failures.append(reply.status)
            time.sleep(0.005)

    worker = threading.Thread(target=traffic)
    worker.start()
    broken = plane.config_dir / "broken.yaml"
    try:
        time.sleep(0.2)
        broken.write_text("routes:\n  - name: broken\n    match: {prefix: /base}\n    service: nowhere\n")
        deadline = time.monotonic() + 10
        status = plane.status()
        while time.monotonic() < deadline and not status["last_rejected"]:
            time.sleep(0.05)
            status = plane.status()
        time.sleep(0.5)  # traffic keeps flowing after the rejection
    finally:
        stop.set()
        worker.join()
        broken.unlink()
    rejected = status["last_rejected"]
    assert rejected is not None, status
    assert any("broken.yaml:4" in line and "nowhere" in line for line in rejected["errors"]), rejected
    assert status["version"] == good["version"]
    assert sent > 20 and failures == []
    assert all("last_nack" not in t for node in status["nodes"] for t in node["types"].values())
    # the fix is applied as usual
    broken.write_text("routes:\n  - {name: fixed, match: {prefix: /fixed}, service: green}\n")
    try:
        seconds_until_served(gateway, "/fixed", "green")
    finally:
        broken.unlink()


def pushes(gateway: Gateway, kind: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{gateway.plane.admin_port}/metrics", timeout=5).read().decode()
    prefix = f'pavilion_xds_pushes_total{{type="{kind}"}} '
    return sum(float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix))


def check_refused_listener_is_shown_and_never_resent(gateway: Gateway) -> None:
    """Add a listener Envoy cannot bind: the NACK shows on /status, the refused version is never sent
    again, traffic goes on, and removing the file is a new version that is acked."""
    plane = gateway.plane
    good = plane.wait_current(1)
    acked = good["nodes"][0]["types"]["Listener"]["acked_version"]
    bad = plane.config_dir / "remote.yaml"
    # Valid YAML, but Envoy cannot bind an address this machine does not have: it NACKs the listeners.
    bad.write_text(f"listeners:\n  - {{name: remote, address: 192.0.2.10, port: {free_port()}}}\n")
    try:
        deadline = time.monotonic() + 10
        listener: dict[str, Any] = {}
        while time.monotonic() < deadline and "last_nack" not in listener:
            time.sleep(0.05)
            listener = plane.status()["nodes"][0]["types"]["Listener"]
        assert "cannot bind '192.0.2.10" in listener["last_nack"]["error"], listener
        assert listener["acked_version"] == acked
        while time.monotonic() < deadline and listener["sent_version"] != acked:
            time.sleep(0.05)  # the refused listener is left out (never accepted): one push of the fallback
            listener = plane.status()["nodes"][0]["types"]["Listener"]
        assert listener["sent_version"] == listener["acked_version"] == acked, listener
        sent = pushes(gateway, "Listener")
        time.sleep(1.0)
        assert pushes(gateway, "Listener") == sent  # the rejected version is not sent again
        assert gateway.get("/base").served_by == "blue"
    finally:
        bad.unlink()
    # the fix (here: the file removed) is a different version, so it is sent and acked
    status = plane.wait_current(1)
    fixed = status["nodes"][0]["types"]["Listener"]
    assert fixed["acked_version"] not in (None, listener["last_nack"]["version"])


def test_a_change_envoy_rejects_is_shown_and_never_resent(gateway: Gateway) -> None:
    check_refused_listener_is_shown_and_never_resent(gateway)


def envoy_stat(gateway: Gateway, name: str) -> int:
    url = f"http://127.0.0.1:{gateway.envoys[0].admin_port}/stats?filter=^{name}$"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return int(text.split(":")[1]) if ":" in text else -1


def changed_cluster_warm_seconds(gateway: Gateway) -> float:
    """Change one cluster (its connect timeout) and return how long Envoy took to update and warm it;
    checks the cluster was modified and still serves."""
    plane = gateway.plane
    plane.wait_current(1)
    base = plane.config_dir / "base.yaml"
    original = base.read_text()
    changed = original.replace("  - name: blue\n", "  - name: blue\n    connect_timeout: 3s\n")
    assert changed != original
    updates = envoy_stat(gateway, "cluster_manager.cluster_modified")
    started = time.monotonic()
    base.write_text(changed)
    try:
        plane.wait_current(1)
        while envoy_stat(gateway, "cluster_manager.cluster_modified") == updates and time.monotonic() - started < 5:
            time.sleep(0.01)
        while envoy_stat(gateway, "cluster_manager.warming_clusters") != 0 and time.monotonic() - started < 10:
            time.sleep(0.01)
        took = time.monotonic() - started
        assert envoy_stat(gateway, "cluster_manager.cluster_modified") > updates
        assert gateway.get("/base").served_by == "blue"
    finally:
        base.write_text(original)
    plane.wait_current(1)  # the original config is back before the next test
    return took


def test_a_changed_cluster_warms_at_once_and_traffic_continues(gateway: Gateway) -> None:
    took = changed_cluster_warm_seconds(gateway)
    print(f"changed cluster updated and warmed {took * 1000:.0f} ms after the write")
    assert took < 4.0  # without fresh endpoints it would stay warming until a timeout (5 s or more)


def switch_route_under_load(gateway: Gateway, switches: int, max_requests: int) -> tuple[int, list[int]]:
    """Switch route /switching to a new service `switches` times while a client sends requests;
    returns (requests sent, statuses of the failed ones)."""
    plane = gateway.plane
    plane.wait_current(1)
    ports = {name: port for name, (_proc, port) in gateway.upstreams.items()}
    path = plane.config_dir / "switching.yaml"

    def write(step: int) -> str:
        # Each step's service exists only in that step: the switch adds one cluster and removes another.
        upstream = ("blue", "green")[step % 2]
        path.write_text(f"services:\n  - name: switch-{step}\n    endpoints: [{{address: 127.0.0.1:{ports[upstream]},"
                        f" region: eu-west}}]\nroutes:\n  - {{name: switching, listener: public,"
                        f" match: {{prefix: /switching}}, service: switch-{step}}}\n")
        return upstream

    seconds_until_served(gateway, "/switching", write(0))
    failures: list[int] = []
    sent = 0
    stop = threading.Event()

    def traffic() -> None:
        nonlocal sent
        while not stop.is_set() and sent < max_requests:
            reply = gateway.get("/switching")
            sent += 1
            if reply.status != 200:
                failures.append(reply.status)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        for step in range(1, switches + 1):
            seconds_until_served(gateway, "/switching", write(step))
        plane.wait_current(1)
    finally:
        stop.set()
        worker.join()
        path.unlink()
    return sent, failures


def test_switching_a_route_to_a_new_service_twenty_times_loses_no_request(gateway: Gateway) -> None:
    sent, failures = switch_route_under_load(gateway, switches=20, max_requests=5000)
    print(f"20 switches under load: {sent} requests, {len(failures)} failed")
    assert sent > 100
    assert failures == []

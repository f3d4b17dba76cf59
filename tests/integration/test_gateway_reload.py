"""Hot reload with the real Envoy: an edit to the route directory is live within about a second,
and a broken edit is rejected while the last good config keeps serving traffic."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

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
  - {{name: base, match: {{prefix: /base}}, service: blue}}
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
    assert gateway.get("/late").status == 404
    before = gateway.plane.status()["version"]
    path = gateway.plane.config_dir / "late.yaml"
    started = time.monotonic()
    path.write_text("routes:\n  - {name: late, match: {prefix: /late}, service: green}\n")
    seconds_until_served(gateway, "/late", "green")
    took = time.monotonic() - started  # from the write, not from the first poll
    print(f"new route served {took * 1000:.0f} ms after the file was written")
    assert took < 5.0
    status = gateway.plane.wait_synced(1)
    assert status["version"] != before


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


def test_broken_edit_is_rejected_and_traffic_is_untouched(gateway: Gateway) -> None:
    plane = gateway.plane
    good = plane.wait_synced(1)
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

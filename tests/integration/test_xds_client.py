"""pavilion.xds_client against the real control plane process: ACK, NACK with the error text, and a
control plane that goes away and comes back while the client keeps its last good config."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane import resources as urls
from pavilion.errors import ConfigError
from pavilion.v1 import tenant_pb2
from pavilion.xds_client import Subscription, XdsClient
from tests.extauthz.issuer import Issuer
from tests.integration.xds_stack import Plane, write_config

pytestmark = pytest.mark.integration

ACME = Issuer(issuer="https://idp.acme.test")
BETA = Issuer(issuer="https://login.beta.test", name="beta")


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    plane = Plane(write_config(tmp_path / "routes", {"acme": ACME})).start()
    try:
        yield plane
    finally:
        plane.stop()


class Recorder:
    """The service side: keeps what it applied; refuses any update holding a tenant named `refuse`."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, list[str]]] = []

    async def apply(self, type_url: str, resources: dict[str, Any], version: str) -> None:
        if "refuse" in resources:
            raise ConfigError("tenant refuse: refused by the test", path="tenants.refuse")
        self.applied.append((version, sorted(resources)))


async def until(predicate: Any, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


async def plane_node(plane: Plane, predicate: Any, seconds: float = 10.0) -> dict[str, Any]:
    """The TenantPolicy state of the one node, once `predicate` holds for it."""
    deadline = asyncio.get_running_loop().time() + seconds
    state: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        nodes = (await asyncio.to_thread(plane.status))["nodes"]
        if nodes:
            state = nodes[0]["types"].get("TenantPolicy", {})
            if predicate(state):
                return state
        await asyncio.sleep(0.05)
    raise TimeoutError(f"control plane node state: {state}")


def client(plane: Plane, recorder: Recorder) -> XdsClient:
    return XdsClient(plane.target, [Subscription(tenant_pb2.TenantPolicy, "id")], recorder.apply,
                     node_id="extauthz-test", role="extauthz", region="local", backoff_base=0.05, backoff_max=0.3)


async def test_ack_then_nack_keeps_the_last_good_version(plane: Plane, tmp_path: Path) -> None:
    recorder = Recorder()
    xds = client(plane, recorder)
    stop = asyncio.Event()
    task = asyncio.create_task(xds.run(stop))
    try:
        await asyncio.wait_for(xds.wait_ready(), 10)
        first = plane.version()
        assert xds.version == first and recorder.applied == [(first, ["acme"])]
        acked = await plane_node(plane, lambda s: s.get("acked_version") == first)
        assert acked["subscription"] == "*"

        write_config(plane.config_dir, {"acme": ACME, "refuse": BETA})
        refused = await asyncio.to_thread(plane.wait_version_change, first)
        state = await plane_node(plane, lambda s: s.get("last_nack", {}).get("version") == refused)
        assert "refused by the test" in state["last_nack"]["error"]
        assert state["acked_version"] == first
        assert xds.version == first and "refused by the test" in (xds.last_error or "")
        assert recorder.applied == [(first, ["acme"])]

        write_config(plane.config_dir, {"acme": ACME, "beta": BETA})
        fixed = await asyncio.to_thread(plane.wait_version_change, refused)
        await until(lambda: xds.version == fixed)
        assert recorder.applied[-1] == (fixed, ["acme", "beta"]) and xds.last_error is None
        await plane_node(plane, lambda s: s.get("acked_version") == fixed)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_reconnects_and_keeps_the_last_good_config_while_the_plane_is_away(plane: Plane) -> None:
    recorder = Recorder()
    xds = client(plane, recorder)
    stop = asyncio.Event()
    task = asyncio.create_task(xds.run(stop))
    try:
        await asyncio.wait_for(xds.wait_ready(), 10)
        version = xds.version
        await asyncio.to_thread(plane.kill)
        await until(lambda: not xds.connected)
        await asyncio.sleep(0.5)  # several failed reconnections
        assert xds.version == version and xds.ready and len(recorder.applied) == 1
        await asyncio.to_thread(plane.start)
        await until(lambda: xds.connected and xds.streams >= 2)
        await plane_node(plane, lambda s: s.get("acked_version") == version)
        assert xds.version == version
        assert len(recorder.applied) == 1, "the same content after a reconnect is ACKed, not applied again"
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert task.done() and urls.TENANT_POLICY in xds.versions

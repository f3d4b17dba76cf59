"""A service's xDS client follows a certificate rotation without a restart, with the real control plane over
mTLS: `pavilion ratelimit --xds` starts with a client certificate of CA 1, which the control plane's
`--xds-client-ca` accepts. Then the rotation: the service's Secret volume gets a certificate of CA 2
(kubelet's `..data` swap), and the control plane's client CA file is replaced by CA 2 alone (it rotates
that in process, pavilion.tls_rotation). The open ADS stream keeps its TLS session. The connection is
then cut (a TCP proxy between the two, as a network blip or a load balancer would), and the service syncs
again, with the new certificate (the only one the control plane now accepts), neither process restarted:
it takes a new version, and its expiry gauge shows the new certificate."""

from __future__ import annotations

import asyncio
import datetime
import re
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.configmap import ConfigMapVolume
from tests.controlplane.certs import DAY, Ca, cert_pem, key_pem, make_ca, write_pair
from tests.extauthz.issuer import Issuer
from tests.integration.xds_stack import get_json, write_config
from tests.procs import PAVILION, Proc, free_port

pytestmark = pytest.mark.integration

ACME = Issuer(issuer="https://idp.acme.test", algs=("ES256",))
NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


class Proxy:
    """A TCP relay on loopback that can cut every connection it carries."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def client_files(client_ca: Ca, server_ca: Ca, not_after: datetime.datetime) -> dict[str, str]:
    cert, key = client_ca.issue("ratelimit", server=False, not_after=not_after)
    return {"tls.crt": cert_pem(cert).decode(), "tls.key": key_pem(key).decode(), "ca.crt": server_ca.pem.decode()}


def replace(path: Path, data: bytes) -> None:
    """Written beside and moved into place, as a Secret volume swap is atomic for the reader."""
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def metric(admin_port: int, name: str, file: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf'^{name}{{file="{re.escape(file)}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else None


async def until(what: str, predicate: Any, seconds: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await asyncio.to_thread(predicate):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"not {what} after {seconds}s")
        await asyncio.sleep(0.1)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    cas = {name: make_ca(name) for name in ("xDS CA", "client CA 1", "client CA 2")}
    plane_dir = tmp_path / "plane"
    plane_dir.mkdir()
    write_pair(plane_dir, *cas["xDS CA"].issue("controlplane"), stem="controlplane")
    (plane_dir / "client-ca.pem").write_bytes(cas["client CA 1"].pem)
    routes = write_config(tmp_path / "routes", {"acme": ACME}, requests=3)
    secret = ConfigMapVolume(tmp_path / "secret", client_files(cas["client CA 1"], cas["xDS CA"], NOW + 30 * DAY))
    xds_port, plane_admin, admin_port = free_port(), free_port(), free_port()
    started: list[Proc] = []
    proxy = await Proxy(xds_port).start()
    try:
        plane = Proc([PAVILION, "--log-format", "console", "controlplane", "--config", str(routes),
                      "--xds-port", str(xds_port), "--admin-port", str(plane_admin),
                      "--xds-tls-cert", str(plane_dir / "controlplane.pem"),
                      "--xds-tls-key", str(plane_dir / "controlplane-key.pem"),
                      "--xds-client-ca", str(plane_dir / "client-ca.pem")], name="controlplane-rotation")
        started.append(plane)
        await asyncio.to_thread(plane.wait_http, f"http://127.0.0.1:{plane_admin}/readyz")
        service = Proc([PAVILION, "--log-format", "console", "ratelimit", "--xds", f"127.0.0.1:{proxy.port}",
                        "--port", str(free_port()), "--admin-port", str(admin_port), "--node-id", "ratelimit-rotation",
                        "--region", "local", "--xds-ca", str(secret.path("ca.crt")),
                        "--xds-client-cert", str(secret.path("tls.crt")),
                        "--xds-client-key", str(secret.path("tls.key"))], name="ratelimit-rotation")
        started.append(service)
        await asyncio.to_thread(service.wait_http, f"http://127.0.0.1:{admin_port}/readyz")
        yield {"cas": cas, "plane": plane, "plane_admin": plane_admin, "plane_dir": plane_dir, "routes": routes,
               "secret": secret, "service": service, "admin_port": admin_port, "proxy": proxy}
    finally:
        await proxy.stop()
        for proc in reversed(started):
            await asyncio.to_thread(proc.stop)


async def test_the_service_syncs_again_with_a_rotated_certificate_without_a_restart(stack: dict[str, Any]) -> None:
    cas, secret, proxy, admin_port = stack["cas"], stack["secret"], stack["proxy"], stack["admin_port"]
    service, plane = stack["service"], stack["plane"]
    crt = str(secret.path("tls.crt"))

    def status() -> dict[str, Any]:
        return get_json(f"http://127.0.0.1:{admin_port}/status")

    def plane_version() -> str:
        return str(get_json(f"http://127.0.0.1:{stack['plane_admin']}/status")["version"])

    first = await asyncio.to_thread(status)
    assert first["config_version"] == await asyncio.to_thread(plane_version), first
    assert first["xds"]["streams"] == 1 and first["xds"]["connected"] is True
    gauge = "pavilion_xds_client_certificate_expiry_timestamp_seconds"
    assert await asyncio.to_thread(metric, admin_port, gauge, crt) == (NOW + 30 * DAY).timestamp()

    # The rotation: the plane accepts only CA 2 from now on; the service's Secret holds a CA 2 certificate.
    replace(stack["plane_dir"] / "client-ca.pem", cas["client CA 2"].pem)
    secret.update(client_files(cas["client CA 2"], cas["xDS CA"], NOW + 90 * DAY))
    await asyncio.sleep(1.5)  # more than CHECK_SECONDS: the next stream looks at the files again
    still = await asyncio.to_thread(status)
    assert still["xds"]["connected"] is True and still["xds"]["streams"] == 1, still  # the open stream is kept

    proxy.cut()  # the control plane and the service both stay up: only the connection goes
    await until("reconnected with the new certificate",
                lambda: (lambda s: s["xds"]["connected"] is True and s["xds"]["streams"] >= 2)(status()))
    assert (await asyncio.to_thread(status))["xds"]["tls_reloads"] == 1
    assert await asyncio.to_thread(metric, admin_port, gauge, crt) == (NOW + 90 * DAY).timestamp()

    # Synced again, on the new stream: a new version reaches the service.
    old = await asyncio.to_thread(plane_version)
    write_config(stack["routes"], {"acme": ACME}, requests=5)
    await until("a new version at the plane", lambda: plane_version() != old, 15)
    new = await asyncio.to_thread(plane_version)
    await until(f"version {new} applied", lambda: status()["config_version"] == new, 15)
    assert service.alive() and plane.alive()
    output = service.output()
    assert "xds_client_tls_reloaded" in output and "PRIVATE KEY" not in output

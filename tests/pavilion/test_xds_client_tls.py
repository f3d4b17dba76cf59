"""A service's xDS client TLS (`--xds-ca/--xds-client-cert/--xds-client-key`, pavilion.xds_client_tls): the
files are checked at start naming the flag; a renewal (kubelet's `..data` swap of a Secret volume) makes new
channel credentials, measured by the expiry gauge, used by the next channel the xDS client opens; a
half-written pair is refused, logged without key bytes, and the credentials in use are kept."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from pavilion.certificate_expiry import XDS_CLIENT_CERTIFICATE_EXPIRY
from pavilion.errors import ConfigError
from pavilion.grpc_server import GrpcServer
from pavilion.server_tls import load_server_tls
from pavilion.v1 import tenant_pb2
from pavilion.xds_client import Subscription, XdsClient
from pavilion.xds_client_tls import CHECK_SECONDS, XdsClientCredentials, xds_credentials
from tests.configmap import ConfigMapVolume
from tests.controlplane.certs import DAY, Ca, cert_pem, key_pem, make_ca

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def client_files(client_ca: Ca, server_ca: Ca, not_after: datetime.datetime = NOW + 30 * DAY) -> dict[str, str]:
    """A Secret's keys as cert-manager writes them: the client's chain and key, and the CA to trust."""
    cert, key = client_ca.issue("ratelimit", server=False, not_after=not_after)
    return {"tls.crt": cert_pem(cert).decode(), "tls.key": key_pem(key).decode(), "ca.crt": server_ca.pem.decode()}


def gauge(path: Path) -> float | None:
    return REGISTRY.get_sample_value("pavilion_xds_client_certificate_expiry_timestamp_seconds", {"file": str(path)})


class Site:
    def __init__(self, root: Path, files: dict[str, str]) -> None:
        self.volume = ConfigMapVolume(root, files)
        self.ca, self.cert, self.key = (str(self.volume.path(n)) for n in ("ca.crt", "tls.crt", "tls.key"))

    def credentials(self, clock: Callable[[], float] = time.monotonic) -> XdsClientCredentials:
        return XdsClientCredentials(self.ca, self.cert, self.key, clock=clock)


@pytest.fixture
def cas() -> dict[str, Ca]:
    return {name: make_ca(name) for name in ("server", "client-1", "client-2")}


@pytest.fixture
def site(tmp_path: Path, cas: dict[str, Ca]) -> Iterator[Site]:
    site = Site(tmp_path / "secret", client_files(cas["client-1"], cas["server"]))
    try:
        yield site
    finally:
        if gauge(Path(site.cert)) is not None:
            XDS_CLIENT_CERTIFICATE_EXPIRY.remove(site.cert)


def test_flags_are_checked_at_start_naming_the_flag_never_the_key(site: Site, tmp_path: Path) -> None:
    assert xds_credentials("") is None
    assert isinstance(xds_credentials(site.ca), XdsClientCredentials)  # TLS without a client certificate
    with pytest.raises(ConfigError, match="need --xds-ca"):
        xds_credentials("", site.cert, site.key)
    with pytest.raises(ConfigError, match="go together"):
        xds_credentials(site.ca, site.cert)
    with pytest.raises(ConfigError, match=r"^--xds-ca: cannot read"):
        xds_credentials(str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match=r"^--xds-ca: .* holds no PEM certificate"):
        xds_credentials(site.key)
    other_key = key_pem(make_ca("x").issue("other")[1])
    (tmp_path / "other-key.pem").write_bytes(other_key)
    with pytest.raises(ConfigError, match=r"^--xds-client-key: .* is not the key of the certificate") as refused:
        xds_credentials(site.ca, site.cert, str(tmp_path / "other-key.pem"))
    assert "PRIVATE KEY" not in str(refused.value)


def test_a_renewal_makes_new_credentials_once_and_the_gauge_follows_it(site: Site, cas: dict[str, Ca]) -> None:
    credentials = site.credentials()
    first = credentials.credentials
    assert credentials.check() is False and credentials.reloads == 0  # nothing changed since start
    site.volume.update(client_files(cas["client-2"], cas["server"], NOW + 90 * DAY))
    assert credentials.check() is True and credentials.reloads == 1
    assert credentials.credentials is not first
    assert gauge(Path(site.cert)) == (NOW + 90 * DAY).timestamp()
    assert credentials.check() is False  # read once per change
    same = {"tls.crt": Path(site.cert).read_text(), "tls.key": Path(site.key).read_text(),
            "ca.crt": Path(site.ca).read_text()}
    site.volume.update(same)  # relinked to the same content: nothing new
    assert credentials.check() is False and credentials.reloads == 1


def test_a_half_written_pair_is_refused_and_the_credentials_in_use_kept(
        site: Site, cas: dict[str, Ca], capsys: pytest.CaptureFixture[str]) -> None:
    credentials = site.credentials()
    first, before = credentials.credentials, credentials.current
    renewed = client_files(cas["client-2"], cas["server"], NOW + 90 * DAY)
    half = {**renewed, "tls.key": Path(site.key).read_text()}  # the new certificate, still the old key
    site.volume.update(half)
    assert credentials.check() is False and credentials.reloads == 0
    assert credentials.credentials is first and credentials.current == before
    logged = capsys.readouterr()
    text = logged.out + logged.err
    assert "xds_client_tls_reload_refused" in text and "--xds-client-key" in text
    assert "PRIVATE KEY" not in text and renewed["tls.key"].splitlines()[1] not in text
    assert half["tls.key"].splitlines()[1] not in text
    site.volume.update(renewed)  # the copy is finished: taken at the next look
    assert credentials.check() is True and credentials.reloads == 1
    assert credentials.current.cert_chain == renewed["tls.crt"].encode()


async def test_a_new_channel_looks_at_the_files_at_most_once_a_second(site: Site, cas: dict[str, Ca]) -> None:
    now = [100.0]
    credentials = site.credentials(clock=lambda: now[0])
    first = credentials.credentials
    site.volume.update(client_files(cas["client-2"], cas["server"]))
    now[0] += CHECK_SECONDS / 2
    assert await credentials.for_new_channel() is first  # reconnecting in a tight loop: no new look yet
    now[0] += CHECK_SECONDS
    renewed = await credentials.for_new_channel()
    assert renewed is not first and credentials.reloads == 1


async def health(channel: grpc.aio.Channel) -> str:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.aio.AioRpcError as exc:
        return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def test_the_xds_clients_next_channel_presents_the_renewed_certificate(
        tmp_path: Path, site: Site, cas: dict[str, Ca], monkeypatch: pytest.MonkeyPatch) -> None:
    """A server (as the control plane's xDS port) that accepts only client-1's CA, then only client-2's: a channel
    made before the renewal keeps its session; the client's next channel is made with client-2's certificate."""
    server_cert, server_key = cas["server"].issue("localhost")
    plane = ConfigMapVolume(tmp_path / "plane", {"tls.crt": cert_pem(server_cert).decode(),
                                                 "tls.key": key_pem(server_key).decode(),
                                                 "ca.crt": cas["client-1"].pem.decode()})
    tls = load_server_tls(str(plane.path("tls.crt")), str(plane.path("tls.key")), str(plane.path("ca.crt")))
    server = GrpcServer("127.0.0.1", 0, register=lambda _s: None, service_names=["pavilion.Test"], tls=tls)
    port = await server.start()
    xds = XdsClient(f"localhost:{port}", [Subscription(tenant_pb2.TenantPolicy, "id")], _ignore, node_id="test",
                    role="ratelimit", credentials=site.credentials())
    try:
        async with await xds._channel() as before:
            assert await health(before) == "SERVING"
            plane.update({"tls.crt": cert_pem(server_cert).decode(), "tls.key": key_pem(server_key).decode(),
                          "ca.crt": cas["client-2"].pem.decode()})  # the plane's client CA rotated first
            site.volume.update(client_files(cas["client-2"], cas["server"]))
            assert await health(before) == "SERVING"  # the open channel keeps its TLS session
            monkeypatch.setattr("pavilion.xds_client_tls.CHECK_SECONDS", 0.0)
            async with await xds._channel() as after:
                assert await health(after) == "SERVING"
        assert xds.status()["tls_reloads"] == 1
    finally:
        await server.stop(0)


async def _ignore(_type_url: str, _resources: dict[str, object], _version: str) -> None:
    return None

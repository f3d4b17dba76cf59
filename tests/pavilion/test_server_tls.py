"""A service's gRPC port over TLS (`--tls-cert/--tls-key/--tls-client-ca`, pavilion.server_tls): the files
are checked before anything starts, a problem exits 2 naming the flag and never quoting the key; the
port serves health over TLS, requires client certificates with a client CA, and serves renewed files
(kubelet's `..data` symlink swap of a Secret volume, tests.configmap) to new connections without a restart."""

from __future__ import annotations

import asyncio
import datetime
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from pavilion import tls_rotation
from pavilion.certificate_expiry import GRPC_SERVER_CERTIFICATE_EXPIRY
from pavilion.errors import ConfigError
from pavilion.grpc_server import GrpcServer
from pavilion.server_tls import SERVICE_FLAGS, XDS_FLAGS, ServerTLS, load_server_tls
from pavilion.service import ServiceSettings
from pavilion.tls_rotation import RotatingCertificates
from tests.configmap import ConfigMapVolume
from tests.controlplane.certs import DAY, Ca, cert_pem, key_pem, make_ca, write_pair
from tests.procs import PAVILION

# An EC key on prime239v1, a curve `cryptography` cannot load (UnsupportedAlgorithm, not ValueError).
ODD_CURVE_KEY = """-----BEGIN EC PRIVATE KEY-----
MHECAQEEHmaPd6ftSr3PI2WtG3grPQk5xt5LJARlm417/DTN2KAKBggqhkjOPQMB
BKFAAz4ABCYXOwtBokUe6Et+tjGNuNqcGaa4Zc5k5XiQa3jJlm7kVqpHmsTpop2i
7Rr+rPouAKKTGwOoBIkfisF+qQ==
-----END EC PRIVATE KEY-----
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    ca = make_ca()
    cert, key = write_pair(tmp_path, *ca.issue("extauthz"), stem="server")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    _other_cert, other_key = write_pair(tmp_path, *ca.issue("other"), stem="other")
    (tmp_path / "odd-key.pem").write_text(ODD_CURVE_KEY)
    return {"cert": cert, "key": key, "ca": tmp_path / "ca.pem", "other_key": other_key, "dir": tmp_path,
            "odd_key": tmp_path / "odd-key.pem"}


def test_neither_flag_is_plaintext_and_both_give_server_tls(files: dict[str, Path]) -> None:
    assert ServiceSettings().server_tls() is None
    tls = ServiceSettings(tls_cert=str(files["cert"]), tls_key=str(files["key"])).server_tls()
    assert tls is not None and tls.client_ca is None
    assert tls.cert_chain == files["cert"].read_bytes() and tls.private_key == files["key"].read_bytes()
    assert tls.source is not None and tls.source.cert == str(files["cert"])
    mtls = ServiceSettings(tls_cert=str(files["cert"]), tls_key=str(files["key"]),
                           tls_client_ca=str(files["ca"])).server_tls()
    assert mtls is not None and mtls.client_ca == files["ca"].read_bytes()
    assert files["key"].read_bytes().decode()[40:80] not in repr(mtls)  # a repr never shows the key


def test_refusals_name_the_service_flags(files: dict[str, Path]) -> None:
    cert, key, ca = str(files["cert"]), str(files["key"]), str(files["ca"])
    cases = [
        ((cert, ""), "--tls-cert: needs --tls-key"),
        (("", key), "--tls-key: needs --tls-cert"),
        (("", "", ca), "--tls-client-ca: needs --tls-cert"),
        ((str(files["dir"] / "missing.pem"), key), "--tls-cert: cannot read"),
        ((cert, str(files["dir"])), "--tls-key: " + str(files["dir"]) + " is not a regular file"),
        ((key, key), "--tls-cert: " + key + " holds no PEM certificate"),
        ((cert, cert), "--tls-key: " + cert + " holds no readable"),
        ((cert, str(files["other_key"])), "--tls-key: " + str(files["other_key"]) + " is not the key of"),
        ((cert, str(files["odd_key"])), "--tls-key: " + str(files["odd_key"]) + " holds a key of a kind or curve"),
        ((cert, key, key), "--tls-client-ca: " + key + " holds no PEM certificate"),
        ((cert, key, str(files["dir"] / "nope.pem")), "--tls-client-ca: cannot read"),
    ]
    for args, message in cases:
        cert_arg, key_arg, *rest = args
        ca_arg = rest[0] if rest else None
        with pytest.raises(ConfigError) as raised:
            load_server_tls(cert_arg, key_arg, ca_arg)
        assert str(raised.value).startswith(message), (args, str(raised.value))
        # The same checks, under the control plane's names.
        with pytest.raises(ConfigError) as raised:
            load_server_tls(cert_arg, key_arg, ca_arg, XDS_FLAGS)
        xds = message.replace("--tls-client-ca", XDS_FLAGS.client_ca).replace("--tls-", "--xds-tls-")
        assert str(raised.value).startswith(xds), (args, str(raised.value))
    assert SERVICE_FLAGS.cert == "--tls-cert"


@pytest.mark.parametrize("role", ["extauthz", "ratelimit"])
def test_the_services_exit_2_before_serving_naming_the_flag_never_the_key(files: dict[str, Path], role: str) -> None:
    config = files["dir"] / "config.yaml"
    config.write_text("tenants: []\n" if role == "extauthz" else "domain: d\ndescriptors: []\n")
    secret = files["other_key"].read_text()
    body = "".join(secret.splitlines()[1:-1])
    cases = ((["--tls-cert", str(files["cert"]), "--tls-key", str(files["other_key"])], "--tls-key: "),
             (["--tls-cert", str(files["other_key"]), "--tls-key", str(files["key"])], "--tls-cert: "),
             (["--tls-key", str(files["key"])], "--tls-key: needs --tls-cert"),
             (["--tls-client-ca", str(files["ca"])], "--tls-client-ca: needs"),
             (["--tls-cert", str(files["cert"]), "--tls-key", str(files["key"]), "--tls-client-ca",
               str(files["other_key"])], "--tls-client-ca: "))
    for flags, flag in cases:
        done = subprocess.run([PAVILION, "--log-format", "console", role, "--config", str(config), "--port", "0",
                               "--workers", "2", *flags], capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, (flags, done.stdout, done.stderr)
        out = done.stdout + done.stderr
        assert "server_tls_rejected" in out and flag in out, out
        assert body[:40] not in out and body[-40:] not in out


def server_files(ca: Ca, client_ca: Ca, dns_name: str = "localhost") -> dict[str, str]:
    """A Secret's keys as cert-manager writes them: the server's chain and key, and the client CA."""
    cert, key = ca.issue(dns_name, dns_names=(dns_name,))
    return {"tls.crt": cert_pem(cert).decode(), "tls.key": key_pem(key).decode(), "ca.crt": client_ca.pem.decode()}


async def health_over_tls(port: int, ca: Ca, client: tuple[bytes, bytes] | None = None) -> str:
    """`SERVING`, or the gRPC status code's name of a refused call, on a new connection."""
    credentials = grpc.ssl_channel_credentials(ca.pem, *(client or (None, None)))
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials,
                                       options=[("grpc.ssl_target_name_override", "localhost")]) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def client_pair(ca: Ca) -> tuple[bytes, bytes]:
    cert, key = ca.issue("envoy", server=False)
    return key_pem(key), cert_pem(cert)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[int, ConfigMapVolume, dict[str, Ca], RotatingCertificates]]:
    cas = {name: make_ca(name) for name in ("server-1", "server-2", "client-1", "client-2")}
    site = ConfigMapVolume(tmp_path / "secret", server_files(cas["server-1"], cas["client-1"]))
    tls = load_server_tls(str(site.path("tls.crt")), str(site.path("tls.key")), str(site.path("ca.crt")))
    assert tls is not None and tls.source is not None
    server = GrpcServer("127.0.0.1", 0, register=lambda _s: None, service_names=["pavilion.Test"], tls=tls)
    port = await server.start()
    rotating = server_rotation(tls)
    try:
        yield port, site, cas, rotating
    finally:
        await server.stop(0)


def server_rotation(tls: ServerTLS) -> RotatingCertificates:
    """The fetcher grpc calls is made inside GrpcServer; a twin on the same files tells what a reload does."""
    assert tls.source is not None
    return RotatingCertificates(tls, tls.source)


async def test_health_is_served_over_mtls_and_refused_without_a_client_certificate(
        served: tuple[int, ConfigMapVolume, dict[str, Ca], RotatingCertificates]) -> None:
    port, _site, cas, _rotating = served
    assert await health_over_tls(port, cas["server-1"], client_pair(cas["client-1"])) == "SERVING"
    assert await health_over_tls(port, cas["server-1"]) == "UNAVAILABLE"  # no client certificate
    assert await health_over_tls(port, cas["server-1"], client_pair(cas["client-2"])) == "UNAVAILABLE"
    assert await health_over_tls(port, cas["server-2"], client_pair(cas["client-1"])) == "UNAVAILABLE"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_renewed_files_are_served_to_new_connections_without_a_restart(
        served: tuple[int, ConfigMapVolume, dict[str, Ca], RotatingCertificates]) -> None:
    port, site, cas, rotating = served
    client_1, client_2 = client_pair(cas["client-1"]), client_pair(cas["client-2"])
    assert rotating() is None  # nothing changed since start
    site.update(server_files(cas["server-2"], cas["client-2"]))
    assert await health_over_tls(port, cas["server-2"], client_2) == "SERVING"
    assert await health_over_tls(port, cas["server-1"], client_2) == "UNAVAILABLE"  # the old certificate is gone
    assert await health_over_tls(port, cas["server-2"], client_1) == "UNAVAILABLE"  # so is the old client CA
    assert rotating() is not None and rotating.reloads == 1
    assert rotating() is None  # read once per change, not per connection


async def test_a_renewal_that_fails_the_checks_keeps_the_certificate_in_use(
        served: tuple[int, ConfigMapVolume, dict[str, Ca], RotatingCertificates]) -> None:
    port, site, cas, rotating = served
    client_1 = client_pair(cas["client-1"])
    broken = server_files(cas["server-2"], cas["client-1"])
    broken["tls.key"] = key_pem(cas["server-2"].issue("other")[1]).decode()  # not the certificate's key
    site.update(broken)
    assert await health_over_tls(port, cas["server-1"], client_1) == "SERVING"
    assert rotating() is None and rotating.reloads == 0
    site.update(server_files(cas["server-2"], cas["client-1"]))  # the fixed files are taken
    assert await health_over_tls(port, cas["server-2"], client_1) == "SERVING"
    assert rotating() is not None and rotating.reloads == 1


def served_expiry(path: Path) -> float | None:
    return REGISTRY.get_sample_value("pavilion_grpc_server_certificate_expiry_timestamp_seconds",
                                     {"file": str(path)})


def expiring_files(ca: Ca, client_ca: Ca, not_after: datetime.datetime) -> dict[str, str]:
    cert, key = ca.issue("localhost", not_after=not_after)
    return {"tls.crt": cert_pem(cert).decode(), "tls.key": key_pem(key).decode(), "ca.crt": client_ca.pem.decode()}


async def test_the_expiry_gauge_is_the_certificate_served_renewals_included(tmp_path: Path) -> None:
    """Set when the port starts; moved by a renewal at the next handshake, and told to on_certificate."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    server_ca, client_ca = make_ca("server"), make_ca("client")
    site = ConfigMapVolume(tmp_path / "secret", expiring_files(server_ca, client_ca, now + 20 * DAY))
    tls = load_server_tls(str(site.path("tls.crt")), str(site.path("tls.key")), str(site.path("ca.crt")))
    assert tls is not None
    told: list[tuple[str, datetime.datetime]] = []
    server = GrpcServer("127.0.0.1", 0, register=lambda _s: None, service_names=["pavilion.Test"], tls=tls,
                        on_certificate=lambda path, expiry: told.append((path, expiry)))
    crt = site.path("tls.crt")
    try:
        assert served_expiry(crt) == (now + 20 * DAY).timestamp() and told == [(str(crt), now + 20 * DAY)]
        port = await server.start()
        site.update(expiring_files(server_ca, client_ca, now + 80 * DAY))
        assert served_expiry(crt) == (now + 20 * DAY).timestamp()  # nothing read yet: no handshake, no poll
        assert await health_over_tls(port, server_ca, client_pair(client_ca)) == "SERVING"
        assert served_expiry(crt) == (now + 80 * DAY).timestamp()
        assert told[-1] == (str(crt), now + 80 * DAY)
    finally:
        await server.stop(0)
        GRPC_SERVER_CERTIFICATE_EXPIRY.remove(str(crt))


async def test_a_renewal_is_measured_without_a_new_connection_and_served_to_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long-lived connection (Envoy's ADS stream) may outlive a renewal: the poll reads and measures it, and
    grpc is handed it at the next handshake (the poll must not swallow it)."""
    monkeypatch.setattr(tls_rotation, "POLL_SECONDS", 0.05)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    cas = {name: make_ca(name) for name in ("server-1", "server-2", "client")}
    site = ConfigMapVolume(tmp_path / "secret", expiring_files(cas["server-1"], cas["client"], now + 20 * DAY))
    tls = load_server_tls(str(site.path("tls.crt")), str(site.path("tls.key")), str(site.path("ca.crt")))
    assert tls is not None
    server = GrpcServer("127.0.0.1", 0, register=lambda _s: None, service_names=["pavilion.Test"], tls=tls)
    crt = site.path("tls.crt")
    try:
        port = await server.start()
        site.update(expiring_files(cas["server-2"], cas["client"], now + 80 * DAY))
        deadline = asyncio.get_running_loop().time() + 10
        while served_expiry(crt) != (now + 80 * DAY).timestamp():
            assert asyncio.get_running_loop().time() < deadline, "the poll did not measure the renewal"
            await asyncio.sleep(0.02)
        assert await health_over_tls(port, cas["server-2"], client_pair(cas["client"])) == "SERVING"
        assert await health_over_tls(port, cas["server-1"], client_pair(cas["client"])) == "UNAVAILABLE"
    finally:
        await server.stop(0)
        GRPC_SERVER_CERTIFICATE_EXPIRY.remove(str(crt))

"""Certificate expiry: the earliest notAfter of each served SDS secret as a gauge (labels follow the
config), the xDS port's certificate as served (told by GrpcServer), /status listing what expires within
30 days, and the services' xDS client certificate gauge. (The serving gauge of every gRPC port is tested
with a real server in tests/pavilion/test_server_tls.py.)"""

from __future__ import annotations

import asyncio
import datetime
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from google.protobuf.message import Message
from prometheus_client import REGISTRY

from controlplane import resources as urls
from controlplane.cache import Group, SnapshotCache
from controlplane.cert_expiry import SECRET_EXPIRY, CertificateExpiry, secret_expiries
from controlplane.config.listener_tls import referenced_files
from controlplane.config.load import load_config
from controlplane.status import StatusBoard
from controlplane.translate import translate, translate_regional
from controlplane.watch import Reloader
from pavilion import certificate_expiry
from pavilion.certificate_expiry import (
    GRPC_SERVER_CERTIFICATE_EXPIRY,
    XDS_CLIENT_CERTIFICATE_EXPIRY,
    observe_served_certificate,
    observe_xds_client_certificate,
)
from pavilion.log import configure_logging
from pavilion.pem_files import earliest_not_after
from tests.controlplane.certs import DAY, Ca, cert_pem, key_pem, make_ca

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)

CONFIG = """regions: [eu-west]
listeners:
  - name: public
    address: 127.0.0.1
    port: 8443
    tls: {{certificate: tls/edge.pem, key: tls/edge-key.pem{client_ca}}}
services:
  - name: accounts
    endpoints: [{{address: 127.0.0.1:9001, region: eu-west}}]
routes:
  - {{name: accounts, match: {{prefix: /}}, service: accounts}}
"""


@pytest.fixture(autouse=True)
def _clean_gauges() -> Iterator[None]:
    configure_logging("warning", "console", io.StringIO())  # not pytest's stderr, closed after other tests
    for gauge in (SECRET_EXPIRY, GRPC_SERVER_CERTIFICATE_EXPIRY, XDS_CLIENT_CERTIFICATE_EXPIRY):
        gauge.clear()
    yield
    for gauge in (SECRET_EXPIRY, GRPC_SERVER_CERTIFICATE_EXPIRY, XDS_CLIENT_CERTIFICATE_EXPIRY):
        gauge.clear()


@pytest.fixture(scope="module")
def ca() -> Ca:
    return make_ca()


def pem_expiring(ca: Ca, days: float, name: str = "edge") -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a leaf expiring `days` from NOW."""
    cert, key = ca.issue(name, not_after=NOW + days * DAY)
    return cert_pem(cert), key_pem(key)


def secret_value(name: str) -> float | None:
    return REGISTRY.get_sample_value("pavilion_controlplane_certificate_expiry_timestamp_seconds", {"secret": name})


def test_earliest_not_after_is_the_first_member_to_expire_of_a_chain_or_bundle(ca: Ca) -> None:
    leaf, _ = pem_expiring(ca, 40)
    intermediate, _ = pem_expiring(ca, 10, "intermediate")
    assert earliest_not_after(leaf) == NOW + 40 * DAY
    assert earliest_not_after(leaf + intermediate) == NOW + 10 * DAY
    assert earliest_not_after(intermediate + leaf) == NOW + 10 * DAY
    assert earliest_not_after(b"") is None
    assert earliest_not_after(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n") is None


def test_secret_expiries_read_certificate_chains_and_trusted_cas(ca: Ca) -> None:
    chain, key = pem_expiring(ca, 20)
    bundle = pem_expiring(ca, 90, "ca-a")[0] + pem_expiring(ca, 5, "ca-b")[0]
    secrets: list[Message] = [
        secret_pb2.Secret(name="a/certificate", tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=chain),
            private_key=base_pb2.DataSource(inline_bytes=key))),
        secret_pb2.Secret(name="a/client-ca", validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_string=bundle.decode()))),
        secret_pb2.Secret(name="by-file", tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(filename="/etc/tls.crt"))),
        secret_pb2.Secret(name="session-keys"),
    ]
    memo: dict[bytes, datetime.datetime | None] = {}
    assert secret_expiries(secrets, memo) == {"a/certificate": NOW + 20 * DAY, "a/client-ca": NOW + 5 * DAY}
    assert set(memo) == {chain, bundle}


def write_config(root: Path, ca: Ca, *, cert_days: float, client_ca: bytes | None = None) -> Path:
    (root / "tls").mkdir(parents=True, exist_ok=True)
    chain, key = pem_expiring(ca, cert_days)
    (root / "tls" / "edge.pem").write_bytes(chain)
    (root / "tls" / "edge-key.pem").write_bytes(key)
    extra = ""
    if client_ca is not None:
        (root / "tls" / "clients.pem").write_bytes(client_ca)
        extra = ", client_ca: tls/clients.pem"
    (root / "gateway.yaml").write_text(CONFIG.format(client_ca=extra))
    return root


def plane(root: Path) -> tuple[SnapshotCache, StatusBoard, Reloader, CertificateExpiry]:
    cache = SnapshotCache(translate, regional=translate_regional)
    board = StatusBoard(cache, identifier="test")
    reloader = Reloader(str(root), cache, board, loader=load_config, files=referenced_files)
    expiry = CertificateExpiry(cache, lambda config: translate(config, "", "edge")[urls.SECRET])
    board.expiring_certificates = expiry.expiring
    return cache, board, reloader, expiry


async def wait_for(condition: object, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_each_load_sets_the_gauge_per_secret_and_a_secret_removed_leaves_it(tmp_path: Path, ca: Ca) -> None:
    client_ca = pem_expiring(ca, 200, "clients-old")[0] + pem_expiring(ca, 12, "clients-new")[0]
    root = write_config(tmp_path / "routes", ca, cert_days=45, client_ca=client_ca)
    _cache, _board, reloader, expiry = plane(root)
    following = asyncio.create_task(expiry.follow())
    try:
        assert await reloader.reload()
        await wait_for(lambda: secret_value("public/client-ca") is not None)
        assert secret_value("public/certificate") == (NOW + 45 * DAY).timestamp()
        assert secret_value("public/client-ca") == (NOW + 12 * DAY).timestamp()  # the bundle's first to expire

        write_config(root, ca, cert_days=60)  # no client_ca any more; a renewed certificate
        assert await reloader.reload()
        await wait_for(lambda: secret_value("public/client-ca") is None)
        assert secret_value("public/certificate") == (NOW + 60 * DAY).timestamp()
        assert set(expiry.secrets) == {"public/certificate"}
    finally:
        following.cancel()


async def test_the_secrets_of_connected_envoys_are_read_without_translating_again(tmp_path: Path, ca: Ca) -> None:
    root = write_config(tmp_path / "routes", ca, cert_days=25)
    cache, _board, reloader, _ = plane(root)

    def never(_config: object) -> list[Message]:
        raise AssertionError("translated although an Envoy group's snapshot holds the secrets")

    expiry = CertificateExpiry(cache, never)
    assert await reloader.reload()
    await cache.snapshot(Group("eu-west", "edge"))  # an Envoy of eu-west connected
    await cache.snapshot(Group("eu-west", "extauthz"))  # a Pavilion service: holds no Envoy resources
    await expiry.refresh()
    assert secret_value("public/certificate") == (NOW + 25 * DAY).timestamp()


async def test_status_lists_what_expires_within_30_days_soonest_first(tmp_path: Path, ca: Ca) -> None:
    client_ca = pem_expiring(ca, 300, "clients")[0]
    root = write_config(tmp_path / "routes", ca, cert_days=29.5, client_ca=client_ca)
    _cache, board, reloader, expiry = plane(root)
    assert await reloader.reload()
    await expiry.refresh()
    assert board.render()["certificates_expiring"] == [
        {"secret": "public/certificate", "not_after": (NOW + 29.5 * DAY).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
         "days_left": 29.5}]

    expiry.observe_xds_certificate("/etc/pavilion/xds/tls.crt", NOW + 2 * DAY)  # as GrpcServer tells it
    shown = board.render()["certificates_expiring"]
    assert [entry.get("xds_certificate") or entry["secret"] for entry in shown] == [
        "/etc/pavilion/xds/tls.crt", "public/certificate"]
    assert shown[0]["days_left"] == 2.0
    expiry.observe_xds_certificate("/etc/pavilion/xds/tls.crt", NOW + 90 * DAY)  # renewed: served now
    assert [entry.get("xds_certificate") or entry["secret"] for entry in board.render()["certificates_expiring"]] == [
        "public/certificate"]
    expiry.observe_xds_certificate("/etc/pavilion/xds/tls.crt", NOW + 2 * DAY)

    write_config(root, ca, cert_days=31, client_ca=client_ca)
    assert await reloader.reload()
    await expiry.refresh()
    assert [entry.get("secret") for entry in board.render()["certificates_expiring"]] == [None]


class Warnings:
    """Stands in for a module's logger (structlog caches loggers on first use: capture_logs misses them)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


def test_the_served_certificate_gauge_is_the_chains_earliest_and_warns_within_30_days(
        ca: Ca, monkeypatch: pytest.MonkeyPatch) -> None:
    logs = Warnings()
    monkeypatch.setattr(certificate_expiry, "log", logs)
    chain = pem_expiring(ca, 50, "extauthz")[0] + pem_expiring(ca, 20, "intermediate")[0]
    assert observe_served_certificate("/tls/tls.crt", chain) == NOW + 20 * DAY
    assert REGISTRY.get_sample_value("pavilion_grpc_server_certificate_expiry_timestamp_seconds",
                                     {"file": "/tls/tls.crt"}) == (NOW + 20 * DAY).timestamp()
    assert [(event, fields["file"]) for event, fields in logs.events] == [
        ("grpc_server_certificate_expires_soon", "/tls/tls.crt")]
    logs.events.clear()
    assert observe_served_certificate("/tls/tls.crt", pem_expiring(ca, 31)[0]) == NOW + 31 * DAY
    assert logs.events == []
    assert REGISTRY.get_sample_value("pavilion_grpc_server_certificate_expiry_timestamp_seconds",
                                     {"file": "/tls/tls.crt"}) == (NOW + 31 * DAY).timestamp()
    assert observe_served_certificate("/tls/other.crt", b"no certificate") is None
    assert REGISTRY.get_sample_value("pavilion_grpc_server_certificate_expiry_timestamp_seconds",
                                     {"file": "/tls/other.crt"}) is None


def test_a_service_shows_its_xds_client_certificate_expiry(tmp_path: Path, ca: Ca) -> None:
    chain = pem_expiring(ca, 50, "extauthz")[0] + pem_expiring(ca, 20, "intermediate")[0]
    path = tmp_path / "client.pem"
    path.write_bytes(chain)
    assert observe_xds_client_certificate("") is None
    assert not [s for m in REGISTRY.collect() if m.name == "pavilion_xds_client_certificate_expiry_timestamp_seconds"
                for s in m.samples]  # absent, not 0 (which would read as expired)
    assert observe_xds_client_certificate(str(path)) == NOW + 20 * DAY
    assert REGISTRY.get_sample_value("pavilion_xds_client_certificate_expiry_timestamp_seconds",
                                     {"file": str(path)}) == (NOW + 20 * DAY).timestamp()
    assert observe_xds_client_certificate(str(tmp_path / "missing.pem")) is None


async def test_every_secret_translation_makes_is_measured_upstream_tls_included(tmp_path: Path, ca: Ca) -> None:
    """Nothing here knows the upstream secrets' names: the gauge follows whatever Secrets are served."""
    root = write_config(tmp_path / "routes", ca, cert_days=45)
    chain, key = pem_expiring(ca, 8, "gateway-client")
    (root / "tls" / "gateway.pem").write_bytes(chain)
    (root / "tls" / "gateway-key.pem").write_bytes(key)
    (root / "tls" / "internal-ca.pem").write_bytes(pem_expiring(ca, 100, "internal-ca")[0])
    (root / "gateway.yaml").write_text((root / "gateway.yaml").read_text().replace(
        "    endpoints: [{address: 127.0.0.1:9001, region: eu-west}]\n",
        "    endpoints: [{address: 127.0.0.1:9001, region: eu-west}]\n"
        "    tls: {ca: tls/internal-ca.pem, server_name: accounts.internal, certificate: tls/gateway.pem,"
        " key: tls/gateway-key.pem}\n"))
    cache, _board, reloader, expiry = plane(root)
    assert await reloader.reload()
    await expiry.refresh()
    served = {secret.name for secret in translate(cache.config, "eu-west", "edge")[urls.SECRET]}  # type: ignore[attr-defined]
    assert len(served) == 3 and set(expiry.secrets) == served
    assert sorted(expiry.secrets.values()) == [NOW + 8 * DAY, NOW + 45 * DAY, NOW + 100 * DAY]
    assert {secret_value(name) for name in served} == {(NOW + days * DAY).timestamp() for days in (8, 45, 100)}

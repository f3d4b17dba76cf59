"""A cluster with upstream TLS warms on its secrets, and Envoy acks CDS only once its clusters warmed:
the secrets a new cluster asks for must go out while CDS is unacked, not after the CDS hold."""

from __future__ import annotations

import io
from dataclasses import replace

import grpc
import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from controlplane import resources as urls
from controlplane.cache import SnapshotCache, config_version
from controlplane.config.model import UpstreamTls
from controlplane.server.ads import SERVICE, AdsServer
from controlplane.status import StatusBoard
from controlplane.translate import translate, translate_regional
from pavilion.grpc_server import GrpcServer
from pavilion.log import configure_logging
from tests.controlplane.ads_client import AdsClient
from tests.controlplane.translate.sample import sample_config

HOLD = 5.0  # the CDS hold: far longer than the wait below

CA = b"-----BEGIN CERTIFICATE-----\nupstream ca\n-----END CERTIFICATE-----\n"


@pytest.fixture(autouse=True)
def _log_to_a_stream_that_stays_open() -> None:
    configure_logging("warning", "console", io.StringIO())


async def test_a_new_clusters_secret_goes_out_before_cds_is_acked() -> None:
    config = sample_config()
    config = replace(config, services=tuple(replace(s, tls=UpstreamTls(CA, "accounts.internal"))
                                            if s.name == "accounts" else s for s in config.services))
    cache = SnapshotCache(translate, regional=translate_regional)
    board = StatusBoard(cache, identifier="pavilion-test")
    ads = AdsServer(cache, board, identifier="pavilion-test", hold_seconds=HOLD)
    server = GrpcServer("127.0.0.1", 0, register=ads.register, service_names=[SERVICE])
    port = await server.start()
    await cache.install(config, config_version(config))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    client = AdsClient(channel)
    try:
        await client.request(urls.CLUSTER)
        cds = await client.response()
        assert cds.type_url == urls.CLUSTER  # not acked: Envoy is warming the clusters
        await client.request(urls.SECRET, ("accounts/upstream-ca",))
        sds = await client.response(wait=HOLD / 2)
        assert sds.type_url == urls.SECRET
        (secret,) = [secret_pb2.Secret.FromString(item.value) for item in sds.resources]
        assert secret.name == "accounts/upstream-ca" and secret.validation_context.trusted_ca.inline_bytes == CA
    finally:
        await client.close()
        await channel.close()
        await server.stop(0)

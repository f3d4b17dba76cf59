"""An in-process control plane (toy translator, both ADS variants) on a random loopback port."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc

from controlplane.cache import SnapshotCache
from controlplane.server.ads import SERVICE, AdsServer
from controlplane.status import StatusBoard
from pavilion.grpc_server import GrpcServer
from pavilion.log import configure_logging
from tests.controlplane.xds_fixtures import ToyConfig, toy_translate

CONFIG = ToyConfig(services={"accounts": 9001, "billing": 9002}, offset={"us-east": 100})
IDENTIFIER = "pavilion-test"


@dataclass
class Plane:
    cache: SnapshotCache
    board: StatusBoard
    ads: AdsServer
    channel: grpc.aio.Channel


@asynccontextmanager
async def running_plane(hold_seconds: float = 1.0, config: ToyConfig = CONFIG) -> AsyncIterator[Plane]:
    # Other tests run `pavilion.cli.main`, which points structlog at pytest's captured stderr; that file is
    # closed once they end, and a logger first used afterwards would write to it.
    configure_logging("warning", "console", io.StringIO())
    cache = SnapshotCache(toy_translate)
    board = StatusBoard(cache, identifier=IDENTIFIER)
    ads = AdsServer(cache, board, identifier=IDENTIFIER, hold_seconds=hold_seconds)
    server = GrpcServer("127.0.0.1", 0, register=ads.register, service_names=[SERVICE])
    port = await server.start()
    await cache.install(config, "v1")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Plane(cache, board, ads, channel)
    finally:
        await channel.close()
        await server.stop(0)

"""Pavilion's own types on the real ADS server, SotW and Delta: wildcard, full state, and Delta sending
only the tenant that changed while every response carries the config version."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from controlplane import resources as urls
from controlplane.cache import SnapshotCache, config_version
from controlplane.config.load import load_config
from controlplane.config.model import Config
from controlplane.server.ads import SERVICE, AdsServer
from controlplane.status import StatusBoard
from controlplane.translate import translate, translate_regional
from pavilion.grpc_server import GrpcServer
from pavilion.log import configure_logging
from pavilion.v1 import tenant_pb2

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "protected"


@asynccontextmanager
async def serving(config: Config) -> AsyncIterator[tuple[SnapshotCache, grpc.aio.Channel]]:
    configure_logging("warning", "console", io.StringIO())
    cache = SnapshotCache(translate, regional=translate_regional)
    board = StatusBoard(cache, identifier="test")
    ads = AdsServer(cache, board, identifier="test")
    server = GrpcServer("127.0.0.1", 0, register=ads.register, service_names=[SERVICE])
    port = await server.start()
    await cache.install(config, config_version(config))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield cache, channel
    finally:
        await channel.close()
        await ads.close()
        await server.stop(0)


def with_node(request: Any, role: str) -> Any:
    request.node.id = f"{role}-1"
    request.node.locality.region = "local"
    request.node.metadata.fields["role"].string_value = role
    return request


def edited(config: Config, *, route_timeout: float | None = None, beta_audience: str | None = None) -> Config:
    if route_timeout is not None:
        config = dataclasses.replace(config, routes=(dataclasses.replace(config.routes[0], timeout=route_timeout),
                                                     *config.routes[1:]))
    if beta_audience is not None:
        tenants = tuple(dataclasses.replace(t, audiences=(beta_audience,)) if t.id == "beta" else t
                        for t in config.tenants)
        config = dataclasses.replace(config, tenants=tenants)
    return config


class Responses:
    """Reads a stream in the background: a timed-out read must not cancel the call."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while (response := await self.call.read()) is not grpc.aio.EOF:
            await self.queue.put(response)

    async def next(self, seconds: float = 3.0) -> Any:
        return await asyncio.wait_for(self.queue.get(), seconds)

    async def silent(self, seconds: float = 0.3) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.queue.get(), seconds)

    def close(self) -> None:
        self.call.cancel()
        self.task.cancel()


async def test_delta_sends_only_the_changed_tenant_under_the_new_config_version() -> None:
    config = load_config(str(EXAMPLE))
    async with serving(config) as (cache, channel):
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources()
        responses = Responses(call)
        await call.write(with_node(discovery_pb2.DeltaDiscoveryRequest(
            type_url=urls.TENANT_POLICY, resource_names_subscribe=["*"]), "extauthz"))
        first = await responses.next()
        assert first.system_version_info == config_version(config)
        assert sorted(r.name for r in first.resources) == ["acme", "beta"]
        await call.write(discovery_pb2.DeltaDiscoveryRequest(type_url=urls.TENANT_POLICY, response_nonce=first.nonce))

        route_edit = edited(config, route_timeout=9.0)
        await cache.install(route_edit, config_version(route_edit))
        await responses.silent()  # no tenant changed: nothing is re-sent

        tenant_edit = edited(route_edit, beta_audience="other-api")
        await cache.install(tenant_edit, config_version(tenant_edit))
        second = await responses.next()
        assert second.system_version_info == config_version(tenant_edit)
        assert [r.name for r in second.resources] == ["beta"]
        beta = tenant_pb2.TenantPolicy.FromString(second.resources[0].resource.value)
        assert list(beta.audiences) == ["other-api"]
        responses.close()


async def test_sotw_sends_the_full_state_under_each_config_version_and_nothing_to_envoy() -> None:
    config = load_config(str(EXAMPLE))
    async with serving(config) as (cache, channel):
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        responses = Responses(call)
        await call.write(with_node(discovery_pb2.DiscoveryRequest(
            type_url=urls.RATE_LIMIT_POLICY, resource_names=["*"]), "ratelimit"))
        first = await responses.next()
        assert first.version_info == config_version(config) and len(first.resources) == 1
        await call.write(discovery_pb2.DiscoveryRequest(type_url=urls.RATE_LIMIT_POLICY, resource_names=["*"],
                                                        version_info=first.version_info, response_nonce=first.nonce))
        route_edit = edited(config, route_timeout=9.0)
        await cache.install(route_edit, config_version(route_edit))
        second = await responses.next()
        assert second.version_info == config_version(route_edit)
        assert [r.value for r in second.resources] == [r.value for r in first.resources]
        responses.close()

        edge = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        edge_responses = Responses(edge)
        await edge.write(with_node(discovery_pb2.DiscoveryRequest(type_url=urls.TENANT_POLICY), "edge"))
        await edge_responses.silent()  # an Envoy node has no such type in its snapshot
        edge_responses.close()

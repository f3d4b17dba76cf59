"""A scripted Delta ADS client (grpcio stub) that plays Envoy's part one request at a time."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from tests.controlplane.ads_client import ScriptedStream


class DeltaClient(ScriptedStream[discovery_pb2.DeltaDiscoveryResponse]):
    def __init__(self, channel: grpc.aio.Channel, *, node_id: str = "envoy-1", region: str = "eu-west") -> None:
        super().__init__(ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources())
        self.node_id, self.region = node_id, region
        self._sent_node = False

    async def request(self, type_url: str, subscribe: tuple[str, ...] = (), unsubscribe: tuple[str, ...] = (), *,
                      nonce: str = "", error: str | None = None,
                      initial: Mapping[str, str] | None = None) -> None:
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url, resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe), response_nonce=nonce,
            initial_resource_versions=dict(initial or {}))
        if not self._sent_node:
            request.node.id = self.node_id
            request.node.locality.region = self.region
            self._sent_node = True
        if error is not None:
            request.error_detail.code = 3
            request.error_detail.message = error
        await self.call.write(request)

    async def ack(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        await self.request(response.type_url, nonce=response.nonce)

    async def nack(self, response: discovery_pb2.DeltaDiscoveryResponse, error: str) -> None:
        await self.request(response.type_url, nonce=response.nonce, error=error)


def names(response: discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
    return [resource.name for resource in response.resources]


def versions(response: discovery_pb2.DeltaDiscoveryResponse) -> dict[str, str]:
    return {resource.name: resource.version for resource in response.resources}

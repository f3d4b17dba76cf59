"""A scripted Delta ADS client (grpcio stub) that plays Envoy's part one request at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2


class DeltaClient:
    def __init__(self, channel: grpc.aio.Channel, *, node_id: str = "envoy-1", region: str = "eu-west") -> None:
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources()
        self.node_id, self.region = node_id, region
        self.responses: asyncio.Queue[discovery_pb2.DeltaDiscoveryResponse | BaseException] = asyncio.Queue()
        self._sent_node = False
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                response = await self.call.read()
                if response is grpc.aio.EOF:
                    await self.responses.put(EOFError("the server ended the stream"))
                    return
                await self.responses.put(response)
        except grpc.aio.AioRpcError as exc:
            await self.responses.put(exc)

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

    async def response(self, wait: float = 3.0) -> discovery_pb2.DeltaDiscoveryResponse:
        item = await asyncio.wait_for(self.responses.get(), wait)
        if isinstance(item, BaseException):
            raise item
        return item

    async def silence(self, seconds: float = 0.3) -> None:
        """Fail when a response arrives within `seconds`."""
        try:
            item = await asyncio.wait_for(self.responses.get(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"expected no response, got {item}")

    async def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()


def names(response: discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
    return [resource.name for resource in response.resources]


def versions(response: discovery_pb2.DeltaDiscoveryResponse) -> dict[str, str]:
    return {resource.name: resource.version for resource in response.resources}

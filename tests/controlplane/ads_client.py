"""A scripted ADS client (grpcio stub) that plays Envoy's part one request at a time."""

from __future__ import annotations

import asyncio
from typing import Any, Generic, TypeVar

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

R = TypeVar("R")


class ScriptedStream(Generic[R]):
    """One bidirectional xDS stream: responses are queued as they arrive (an error or the stream's end
    is queued too), so a test reads them one at a time, or checks that none comes."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.responses: asyncio.Queue[R | BaseException] = asyncio.Queue()
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

    async def response(self, wait: float = 3.0) -> R:
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


class AdsClient(ScriptedStream[discovery_pb2.DiscoveryResponse]):
    def __init__(self, channel: grpc.aio.Channel, *, node_id: str = "envoy-1", region: str = "eu-west",
                 role: str = "") -> None:
        super().__init__(ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources())
        self.node_id, self.region, self.role = node_id, region, role
        self._sent_node = False

    async def request(self, type_url: str, names: tuple[str, ...] = (), *, version: str = "", nonce: str = "",
                      error: str | None = None, with_node: bool | None = None) -> None:
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names),
                                                 version_info=version, response_nonce=nonce)
        if with_node or (with_node is None and not self._sent_node):
            request.node.id = self.node_id
            request.node.locality.region = self.region
            if self.role:
                request.node.metadata.fields["role"].string_value = self.role
            self._sent_node = True
        if error is not None:
            request.error_detail.code = 3
            request.error_detail.message = error
        await self.call.write(request)

    async def ack(self, response: discovery_pb2.DiscoveryResponse, names: tuple[str, ...] = ()) -> None:
        await self.request(response.type_url, names, version=response.version_info, nonce=response.nonce)

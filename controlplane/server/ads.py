"""The ADS service: both variants on one gRPC service, chosen by the proxy's bootstrap
(`api_type: GRPC` calls StreamAggregatedResources, `DELTA_GRPC` calls DeltaAggregatedResources)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.cache import SnapshotCache
from controlplane.server.base import HOLD_SECONDS, SERVICE, AdsStream
from controlplane.server.delta import DeltaStream
from controlplane.server.sotw import SotwStream
from controlplane.server.stream import StreamState, TypeState
from controlplane.status import StatusBoard

__all__ = ["HOLD_SECONDS", "SERVICE", "AdsServer"]

NackListener = Callable[[StreamState, TypeState], None]  # called on the event loop: must not block


def _raw(response: bytes) -> bytes:
    return response


class AdsServer:
    """Registers both ADS methods on a grpc.aio server. Responses are pre-serialized bytes."""

    def __init__(self, cache: SnapshotCache, board: StatusBoard, *, identifier: str,
                 hold_seconds: float = HOLD_SECONDS) -> None:
        self.cache = cache
        self.hold_seconds = hold_seconds
        self.board = board
        self.identifier = identifier
        self.ack_listeners: list[NackListener] = []
        self.nack_listeners: list[NackListener] = []
        self._streams: set[AdsStream] = set()

    def register(self, server: grpc.aio.Server) -> None:
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.stream_aggregated_resources,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=_raw),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.delta_aggregated_resources,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=_raw),
        })
        server.add_generic_rpc_handlers((handler,))

    async def stream_aggregated_resources(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest],
                                          context: grpc.aio.ServicerContext) -> None:
        await self._serve(SotwStream(self, StreamState(peer=context.peer(), kind="sotw"), context), requests)

    async def delta_aggregated_resources(self, requests: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
                                         context: grpc.aio.ServicerContext) -> None:
        await self._serve(DeltaStream(self, StreamState(peer=context.peer(), kind="delta"), context), requests)

    async def _serve(self, stream: AdsStream, requests: AsyncIterator[object]) -> None:
        self._streams.add(stream)
        try:
            await stream.run(requests)
        finally:
            self._streams.discard(stream)

    def on_ack(self, stream: StreamState, type_state: TypeState) -> None:
        for listener in self.ack_listeners:
            listener(stream, type_state)

    def on_nack(self, stream: StreamState, type_state: TypeState) -> None:
        for listener in self.nack_listeners:
            listener(stream, type_state)

    async def close(self) -> None:
        """End every stream, so proxies reconnect to another replica instead of waiting for a drain."""
        for stream in list(self._streams):
            await stream.events.put(("end", None))

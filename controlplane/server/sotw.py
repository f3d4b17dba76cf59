"""ADS in State of the World: `AggregatedDiscoveryService/StreamAggregatedResources`.

Stream I/O only: what to send comes from the cache's snapshot for the stream's node group, what was
sent and acked lives in `StreamState`. The rules (docs/root/api-docs/xds_protocol.rst):
- nonces are per stream; a request echoing an older nonce is stale and ignored;
- a request echoing the latest nonce is an ACK, or a NACK when it carries `error_detail`; neither is
  answered, and a NACKed version is never sent again: only a new version is;
- a first request for a type is served whatever version or nonce it carries (it may come from
  another replica);
- LDS and CDS responses carry the full state; EDS and RDS carry the names asked for, and a name
  newly asked for is sent even when its version did not change;
- CDS being full state, a cluster removed by a change is still sent until this stream acked the
  listeners and routes of the change, so no route points at a deleted cluster;
- on a change, clusters go first, then endpoints (a changed cluster gets its endpoints again, even
  unchanged: Envoy warms it only on a fresh ClusterLoadAssignment); listeners and routes wait until
  this stream acked the clusters, which Envoy does once they warmed (or `HOLD_SECONDS` passed), so
  nothing points at a cluster Envoy cannot use yet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
from envoy.service.discovery.v3 import ads_pb2, discovery_pb2

from controlplane import resources as urls
from controlplane.cache import SnapshotCache, group_of
from controlplane.server.stream import Nack, StreamState, TypeState
from controlplane.snapshot import Snapshot, content_hash, response_head
from controlplane.status import ACKS, NACKS, PUSH_BYTES, PUSHES, StatusBoard, short_type
from pavilion.log import get_logger

log = get_logger(__name__)

SERVICE = ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name
HOLD_SECONDS = 5.0  # longest wait for a CDS ACK before listeners and routes go anyway
# Endpoints are not held: Envoy acks CDS only once the new clusters warmed, and they warm on endpoints.
_WAIT_FOR_CLUSTERS = frozenset({urls.SECRET, urls.LISTENER, urls.ROUTE})


def _raw(response: bytes) -> bytes:
    return response


class AdsServer:
    """Registers the ADS method on a grpc.aio server. Responses are pre-serialized bytes."""

    def __init__(self, cache: SnapshotCache, board: StatusBoard, *, identifier: str,
                 hold_seconds: float = HOLD_SECONDS) -> None:
        self.cache = cache
        self.hold_seconds = hold_seconds
        self.board = board
        self.identifier = identifier
        self._streams: set[SotwStream] = set()

    def register(self, server: grpc.aio.Server) -> None:
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.stream_aggregated_resources,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=_raw),
        })
        server.add_generic_rpc_handlers((handler,))

    async def stream_aggregated_resources(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest],
                                          context: grpc.aio.ServicerContext) -> None:
        stream = SotwStream(self, StreamState(peer=context.peer()), context)
        self._streams.add(stream)
        try:
            await stream.run(requests)
        finally:
            self._streams.discard(stream)

    async def close(self) -> None:
        """End every stream, so proxies reconnect to another replica instead of waiting for a drain."""
        for stream in list(self._streams):
            await stream.events.put(("end", None))


class SotwStream:
    def __init__(self, server: AdsServer, state: StreamState, context: grpc.aio.ServicerContext) -> None:
        self.server = server
        self.state = state
        self.context = context
        self.snapshot: Snapshot | None = None
        self.events: asyncio.Queue[tuple[str, discovery_pb2.DiscoveryRequest | None]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest]) -> None:
        self._tasks.append(asyncio.create_task(self._read(requests)))
        try:
            while True:
                try:
                    kind, request = await asyncio.wait_for(self.events.get(), self._hold_remaining())
                except TimeoutError:
                    kind, request = "tick", None
                if kind == "end":
                    return
                if kind == "request" and request is not None:
                    await self._on_request(request)
                elif kind == "change" and self.state.group is not None:
                    self.snapshot = await self.server.cache.snapshot(self.state.group)
                await self._push_due()
        finally:
            for task in self._tasks:
                task.cancel()
            self.server.board.stream_left(self.state)
            log.info("xds_stream_closed", stream=self.state.stream_id, node=self.state.node_id)

    async def _read(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest]) -> None:
        try:
            async for request in requests:
                await self.events.put(("request", request))
        finally:
            await self.events.put(("end", None))

    async def _watch(self, generation: int) -> None:
        while True:
            generation = await self.server.cache.wait_newer(generation)
            await self.events.put(("change", None))

    async def _on_request(self, request: discovery_pb2.DiscoveryRequest) -> None:
        state = self.state
        state.last_seen = time.time()
        if state.group is None:
            await self._join(request)
        if not request.type_url:
            await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an ADS request must carry type_url")
        type_state = state.type(request.type_url)
        if type_state.sent_nonce and request.response_nonce:
            if request.response_nonce != type_state.sent_nonce:
                return  # stale: an answer to a response we have since replaced
            if request.HasField("error_detail"):
                self._on_nack(type_state, request)
            else:
                self._on_ack(type_state, request)
        added = type_state.subscribe(list(request.resource_names),
                                     legacy_wildcard_allowed=request.type_url in urls.FULL_STATE_TYPES)
        snap = self.snapshot.types.get(request.type_url) if self.snapshot else None
        if snap is not None and any(name in snap.resources for name in added - type_state.sent_names):
            type_state.resend = True  # a newly subscribed name is sent even if its version did not change

    async def _join(self, request: discovery_pb2.DiscoveryRequest) -> None:
        if not request.HasField("node") or not request.node.id:
            await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                     "the first request of a stream must carry node with an id")
        state = self.state
        state.node_id, state.node_cluster = request.node.id, request.node.cluster
        state.group = group_of(request.node)
        generation = self.server.cache.generation
        self.snapshot = await self.server.cache.snapshot(state.group)
        self._tasks.append(asyncio.create_task(self._watch(generation)))
        self.server.board.stream_joined(state)
        log.info("xds_stream_opened", stream=state.stream_id, node=state.node_id, region=state.group.region,
                 role=state.group.role, peer=state.peer)

    def _on_ack(self, type_state: TypeState, request: discovery_pb2.DiscoveryRequest) -> None:
        type_state.awaiting_ack = False
        type_state.acked_version = request.version_info
        type_state.acked_at = time.time()
        ACKS.labels(short_type(type_state.type_url)).inc()
        log.debug("xds_ack", stream=self.state.stream_id, node=self.state.node_id,
                  type=short_type(type_state.type_url), version=request.version_info)

    def _on_nack(self, type_state: TypeState, request: discovery_pb2.DiscoveryRequest) -> None:
        type_state.awaiting_ack = False
        type_state.resend = False
        error = request.error_detail.message
        type_state.nack = Nack(version=type_state.sent_version, error=error, at=time.time())
        NACKS.labels(short_type(type_state.type_url)).inc()
        log.warning("xds_nack", stream=self.state.stream_id, node=self.state.node_id,
                    type=short_type(type_state.type_url), rejected_version=type_state.sent_version,
                    kept_version=request.version_info, error=error)

    def _cds_pending(self) -> bool:
        cds = self.state.types.get(urls.CLUSTER)
        return (cds is not None and cds.awaiting_ack
                and time.monotonic() - cds.sent_at < self.server.hold_seconds)

    def _hold_remaining(self) -> float | None:
        """Seconds until a CDS hold times out, when one is in place and something waits behind it."""
        cds = self.state.types.get(urls.CLUSTER)
        if cds is None or not cds.awaiting_ack:
            return None
        remaining = self.server.hold_seconds - (time.monotonic() - cds.sent_at)
        return remaining + 0.01 if remaining > 0 else None  # expired: the push that followed it went out

    def _due(self, type_state: TypeState) -> bool:
        if not type_state.subscribed or self.snapshot is None or type_state.type_url not in self.snapshot.types:
            return False
        if type_state.resend or not type_state.sent_nonce:
            return True
        target = self.snapshot.type(type_state.type_url).version
        if type_state.lingering and type_state.sent_target == target:
            return not self._routes_behind()  # drop the removed clusters once no route names them
        return type_state.sent_target != target

    def _routes_behind(self) -> bool:
        """Listeners or routes of this stream are not yet at the snapshot's version: they may name old clusters."""
        if self.snapshot is None:
            return False
        for type_url in (urls.LISTENER, urls.ROUTE):
            state = self.state.types.get(type_url)
            if state is not None and state.subscribed and state.acked_version != self.snapshot.type(type_url).version:
                return True
        return False

    def _next_due(self) -> TypeState | None:
        for type_url in urls.ADS_ORDER:
            type_state = self.state.types.get(type_url)
            if type_state is None or not self._due(type_state):
                continue
            if type_url in _WAIT_FOR_CLUSTERS and self._cds_pending():
                return None  # make before break: wait for this stream to take the clusters
            return type_state
        return None

    async def _push_due(self) -> None:
        while (type_state := self._next_due()) is not None:
            await self._send(type_state)

    async def _send(self, type_state: TypeState) -> None:
        if self.snapshot is None:
            return
        snap = self.snapshot.type(type_state.type_url)
        chosen = list(snap.resources.values()) if type_state.wildcard else snap.select(type_state.names)
        body = snap.response_fields if type_state.wildcard else b"".join(r.response_field for r in chosen)
        version, lingering = snap.version, {}
        if type_state.type_url == urls.CLUSTER and type_state.sent_nonce:
            changed = {r.name for r in chosen if type_state.sent_hashes().get(r.name) != r.hash}
            eds = self.state.types.get(urls.ENDPOINT)
            if changed and eds is not None and eds.subscribed:
                eds.resend = True  # Envoy warms a changed cluster only when fresh endpoints arrive
            if self._routes_behind():
                # CDS is full state: a cluster left out is deleted at once, while the proxy's routes may
                # still send to it. Keep removed clusters until its listeners and routes caught up.
                lingering = {name: resource for name, resource in type_state.sent_resources.items()
                             if name not in snap.resources and type_state.wants(name)}
        if lingering:
            chosen = sorted([*chosen, *lingering.values()], key=lambda r: r.name)
            body = b"".join(r.response_field for r in chosen)
            version = f"{snap.version}+{content_hash(''.join(sorted(lingering)).encode())[:8]}"
        nonce = self.state.next_nonce()
        response = response_head(type_url=type_state.type_url, version=version, nonce=nonce,
                                 identifier=self.server.identifier) + body
        await self.context.write(response)
        type_state.sent_version, type_state.sent_target, type_state.sent_nonce = version, snap.version, nonce
        type_state.sent_names = frozenset(r.name for r in chosen)
        type_state.sent_resources = {r.name: r for r in chosen}
        type_state.lingering = frozenset(lingering)
        type_state.sent_at = time.monotonic()
        type_state.awaiting_ack, type_state.resend = True, False
        kind = short_type(type_state.type_url)
        PUSHES.labels(kind).inc()
        PUSH_BYTES.labels(kind).inc(len(response))
        log.debug("xds_push", stream=self.state.stream_id, node=self.state.node_id, type=kind,
                  version=version, resources=len(chosen), lingering=sorted(lingering), bytes=len(response))

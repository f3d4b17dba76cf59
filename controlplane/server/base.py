"""What SotW and Delta ADS streams share: the event loop of a stream, joining a node group, and
the push order (make before break), so both variants send in the same order for the same reasons.

The order (docs/root/api-docs/xds_protocol.rst, "eventual consistency considerations"):
- on a change, clusters go first, then endpoints (a changed cluster gets its endpoints again, even
  unchanged: Envoy warms it only on a fresh ClusterLoadAssignment);
- secrets, listeners and routes wait until this stream acked the clusters, which Envoy does once
  they warmed (or `hold_seconds` passed), so nothing points at a cluster Envoy cannot use yet;
- a cluster removed by a change stays on the proxy until this stream acked the listeners and routes
  of the change, so no route points at a deleted cluster.
A subclass decides what a request means (`on_request`), whether a type is due, and how to send it.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Collection, Mapping
from typing import TYPE_CHECKING, Any

import grpc
from envoy.service.discovery.v3 import ads_pb2

from controlplane import resources as urls
from controlplane.cache import group_of
from controlplane.resources import short_type
from controlplane.server.stream import Nack, StreamState, TypeState
from controlplane.snapshot import Resource, Snapshot, content_hash
from controlplane.status import ACKS, NACKS, PUSH_BYTES, PUSHES
from pavilion.log import get_logger

if TYPE_CHECKING:
    from controlplane.server.ads import AdsServer

log = get_logger(__name__)

SERVICE = ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name
HOLD_SECONDS = 5.0  # longest wait for a CDS ACK before listeners and routes go anyway
# Endpoints are not held: Envoy acks CDS only once the new clusters warmed, and they warm on endpoints.
# Nor are secrets: a cluster with upstream TLS warms on its secrets too (a listener's are asked for only
# once Envoy has the listener, which is held).
WAIT_FOR_CLUSTERS = frozenset({urls.LISTENER, urls.ROUTE, urls.VIRTUAL_HOST})


class AdsStream(ABC):
    """One ADS stream of either variant. Events (requests, config changes, ends) are handled one at a
    time, so the state needs no lock."""

    def __init__(self, server: AdsServer, state: StreamState, context: grpc.aio.ServicerContext) -> None:
        self.server = server
        self.state = state
        self.context = context
        self.snapshot: Snapshot | None = None
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self, requests: AsyncIterator[Any]) -> None:
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
                    self.state.last_seen = time.time()
                    if self.state.group is None:
                        await self._join(request)
                    if not request.type_url:
                        await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                                 "an ADS request must carry type_url")
                    await self.on_request(request)
                elif kind == "change" and self.state.group is not None:
                    self.snapshot = await self.server.cache.snapshot(self.state.group)
                await self._push_due()
        finally:
            for task in self._tasks:
                task.cancel()
            self.server.board.stream_left(self.state)
            log.info("xds_stream_closed", stream=self.state.stream_id, node=self.state.node_id)

    async def _read(self, requests: AsyncIterator[Any]) -> None:
        try:
            async for request in requests:
                await self.events.put(("request", request))
        finally:
            await self.events.put(("end", None))

    async def _watch(self, generation: int) -> None:
        while True:
            generation = await self.server.cache.wait_newer(generation)
            await self.events.put(("change", None))

    async def _join(self, request: Any) -> None:
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
        log.info("xds_stream_opened", stream=state.stream_id, kind=state.kind, node=state.node_id,
                 region=state.group.region, role=state.group.role, peer=state.peer)

    # what a subclass decides

    @abstractmethod
    async def on_request(self, request: Any) -> None:
        """Apply one request: ACK or NACK bookkeeping and subscription changes."""

    @abstractmethod
    def due(self, type_state: TypeState) -> bool:
        """Whether the type has something to send now, make-before-break holds aside."""

    @abstractmethod
    async def send(self, type_state: TypeState) -> None:
        """Write one response for the type and record it as sent."""

    # ACK and NACK bookkeeping, the same in both variants

    def record_ack(self, type_state: TypeState) -> None:
        type_state.awaiting_ack = False
        type_state.acked_version = type_state.sent_version
        # Shared, not copied (thousands of entries per stream with Delta virtual hosts): a stream never
        # changes its `sent_resources` dict in place, it records a new one with each response.
        type_state.acked_resources = type_state.sent_resources
        type_state.acked_at = time.time()
        ACKS.labels(short_type(type_state.type_url)).inc()
        log.debug("xds_ack", stream=self.state.stream_id, node=self.state.node_id,
                  type=short_type(type_state.type_url), version=type_state.sent_version)
        if self.state.group is not None:
            self.server.on_ack(self.state, type_state)

    def record_nack(self, type_state: TypeState, error: str, kept_version: str = "", *,
                    refused_version: str | None = None) -> None:
        """`refused_version`: when an earlier response than the latest is refused (Delta)."""
        if refused_version is None:
            type_state.awaiting_ack = False
            type_state.resend = False
        refused = type_state.sent_version if refused_version is None else refused_version
        type_state.nack = Nack(version=refused, error=error, at=time.time())
        NACKS.labels(short_type(type_state.type_url)).inc()
        log.warning("xds_nack", stream=self.state.stream_id, node=self.state.node_id,
                    type=short_type(type_state.type_url), rejected_version=refused,
                    kept_version=kept_version or type_state.acked_version, error=error)
        if self.state.group is not None:
            self.server.on_nack(self.state, type_state)

    def record_sent(self, type_state: TypeState, *, version: str, target: str, nonce: str,
                    held: Mapping[str, Resource], lingering: frozenset[str], size: int, count: int,
                    names: frozenset[str] | None = None) -> None:
        """`names`: `held`'s names when the caller has them (shared by Delta streams in step)."""
        type_state.sent_version, type_state.sent_target, type_state.sent_nonce = version, target, nonce
        type_state.sent_names = frozenset(held) if names is None else names
        type_state.sent_resources = held
        type_state.lingering = lingering
        type_state.sent_at = time.monotonic()
        type_state.awaiting_ack, type_state.resend = True, False
        kind = short_type(type_state.type_url)
        PUSHES.labels(kind).inc()
        PUSH_BYTES.labels(kind).inc(size)
        log.debug("xds_push", stream=self.state.stream_id, node=self.state.node_id, kind=self.state.kind,
                  type=kind, version=version, resources=count, lingering=sorted(lingering), bytes=size)

    # make before break

    def cds_pending(self) -> bool:
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

    def routes_behind(self) -> bool:
        """Listeners or routes of this stream are not yet at the snapshot's version: they may name old clusters."""
        if self.snapshot is None:
            return False
        for type_url in (urls.LISTENER, urls.ROUTE, urls.VIRTUAL_HOST):
            state = self.state.types.get(type_url)
            if state is not None and state.subscribed and state.acked_version != self.snapshot.type(type_url).version:
                return True
        return False

    def lingering_clusters(self, type_state: TypeState) -> dict[str, Resource]:
        """Clusters the proxy holds that the snapshot removed, kept while its routes may still name them."""
        if type_state.type_url != urls.CLUSTER or self.snapshot is None or not self.routes_behind():
            return {}
        current = self.snapshot.type(urls.CLUSTER).resources
        return {name: resource for name, resource in type_state.sent_resources.items()
                if name not in current and type_state.wants(name)}

    def refresh_endpoints_of(self, changed: set[str]) -> None:
        """Envoy warms a changed cluster only when fresh endpoints arrive: send them again."""
        eds = self.state.types.get(urls.ENDPOINT)
        if changed and eds is not None and eds.subscribed:
            eds.resend = True
            eds.refresh |= {name for name in changed if eds.wants(name)}

    def _next_due(self) -> TypeState | None:
        if self.snapshot is None:
            return None
        for type_url in self.snapshot.types:  # a snapshot holds its types in push order (Envoy's ADS order first)
            type_state = self.state.types.get(type_url)
            if type_state is None or not type_state.subscribed or not self.due(type_state):
                continue
            if type_url in WAIT_FOR_CLUSTERS and self.cds_pending():
                return None  # make before break: wait for this stream to take the clusters
            return type_state
        return None

    async def _push_due(self) -> None:
        while (type_state := self._next_due()) is not None:
            await self.send(type_state)


def lingering_version(version: str, lingering: Collection[str]) -> str:
    """A transitional version: the target's, marked by the removed clusters still sent with it."""
    if not lingering:
        return version
    return f"{version}+{content_hash(''.join(sorted(lingering)).encode())[:8]}"

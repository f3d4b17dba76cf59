"""A reusable ADS client (State of the World, grpc.aio) for Pavilion services that take their settings
from the control plane: ext_authz (tenants) and ratelimit (rules).

It plays the proxy's part of docs/root/api-docs/xds_protocol.rst:
- the node (id, cluster, locality region, metadata `role`) goes on the first request of each stream;
- every type is a wildcard subscription (`*`): each response is the type's full state;
- a response is decoded, handed to `apply`, then ACKed (its version and nonce); when `apply` raises
  ConfigError it is NACKed: the last accepted version, the response's nonce, and `error_detail`
  (google.rpc.Status) carrying the error text; the previous config keeps serving;
- when the stream ends or the control plane is unreachable, it reconnects with jittered exponential
  backoff and asks again with the versions it holds; what was applied keeps serving meanwhile;
- over TLS, each new stream gets a new channel made with the credentials of the files as they are then
  (pavilion.xds_client_tls: renewed files are used from the next reconnection on, not by cutting the
  open stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, status_pb2

from pavilion.errors import ConfigError
from pavilion.log import get_logger
from pavilion.xds_client_tls import XdsClientCredentials, xds_credentials

log = get_logger(__name__)

__all__ = ["Apply", "Subscription", "XdsClient", "xds_credentials"]

# apply(type URL, {resource name: message}, version_info); raises ConfigError to refuse the update.
Apply = Callable[[str, dict[str, Any], str], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """One type to subscribe to: its message class and the field that names a resource."""

    message: type[Message]
    name_field: str = "name"

    @property
    def type_url(self) -> str:
        return f"type.googleapis.com/{self.message.DESCRIPTOR.full_name}"


class XdsClient:
    def __init__(self, target: str, subscriptions: list[Subscription], apply: Apply, *, node_id: str,
                 role: str, cluster: str = "", region: str = "", backoff_base: float = 0.2,
                 backoff_max: float = 5.0,
                 credentials: XdsClientCredentials | grpc.ChannelCredentials | None = None) -> None:
        self.target = target
        # None: plaintext (a control plane on loopback or a trusted network); XdsClientCredentials follow
        # their files, fixed grpc.ChannelCredentials do not.
        self._credentials = credentials
        self.subscriptions = {s.type_url: s for s in subscriptions}
        self._apply = apply
        self.node = base_pb2.Node(id=node_id, cluster=cluster, user_agent_name="pavilion")
        self.node.locality.region = region
        self.node.metadata.fields["role"].string_value = role
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.versions: dict[str, str] = {}  # type URL -> last accepted version_info
        # type URL -> the bytes of what was last applied: a reconnect that brings the same content
        # again is ACKed without applying it, so services see no churn when the control plane restarts.
        self._applied: dict[str, tuple[bytes, ...]] = {}
        self.applies = 0  # updates handed to `apply` so far
        self.version = ""  # version_info of the last accepted response
        self.last_error: str | None = None  # the last refused update's error, cleared by an accepted one
        self.connected = False
        self.streams = 0  # streams opened so far (1 + reconnections)
        self._ready = asyncio.Event()

    @property
    def ready(self) -> bool:
        """Every subscribed type was applied once."""
        return self._ready.is_set()

    async def wait_ready(self, stop: asyncio.Event | None = None) -> bool:
        """Wait for the first config of every type; False when `stop` was set first."""
        if stop is None:
            await self._ready.wait()
            return True
        waits = [asyncio.create_task(self._ready.wait()), asyncio.create_task(stop.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        return self.ready

    async def run(self, stop: asyncio.Event) -> None:
        """Keep a stream open until `stop` is set, reconnecting with jittered backoff."""
        poll = (asyncio.create_task(self._credentials.poll(), name="xds-client-tls-poll")
                if isinstance(self._credentials, XdsClientCredentials) else None)
        try:
            await self._run(stop)
        finally:
            if poll is not None:
                poll.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poll

    async def _run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            stream = asyncio.create_task(self._stream())
            stopper = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({stream, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                if not stream.done():
                    stream.cancel()
                    await asyncio.wait({stream})
            received = _received(stream)
            self.connected = False
            if stop.is_set():
                return
            failures = 1 if received else failures + 1
            delay = min(self.backoff_max, self.backoff_base * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
            log.warning("xds_reconnecting", target=self.target, in_seconds=round(delay, 3), holding=self.version)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                continue

    async def _stream(self) -> bool:
        """One stream, until it ends; True when it got at least one response."""
        received = False
        async with await self._channel() as channel:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            self.streams += 1
            try:
                for index, type_url in enumerate(self.subscriptions):
                    request = self._request(type_url, version=self.versions.get(type_url, ""))
                    if index == 0:
                        request.node.CopyFrom(self.node)
                    await call.write(request)
                while True:
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        log.warning("xds_stream_ended", target=self.target)
                        return received
                    if not received:
                        received, self.connected = True, True
                        log.info("xds_connected", target=self.target, node=self.node.id)
                    await call.write(await self._answer(response))
            except grpc.aio.AioRpcError as exc:
                log.warning("xds_stream_failed", target=self.target, code=exc.code().name, detail=exc.details())
                return received
            finally:
                call.cancel()

    async def _channel(self) -> grpc.aio.Channel:
        credentials = self._credentials
        if credentials is None:
            return grpc.aio.insecure_channel(self.target)
        if isinstance(credentials, XdsClientCredentials):
            return grpc.aio.secure_channel(self.target, await credentials.for_new_channel())
        return grpc.aio.secure_channel(self.target, credentials)

    def _request(self, type_url: str, *, version: str, nonce: str = "") -> discovery_pb2.DiscoveryRequest:
        return discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=["*"], version_info=version,
                                              response_nonce=nonce)

    async def _answer(self, response: discovery_pb2.DiscoveryResponse) -> discovery_pb2.DiscoveryRequest:
        """Apply one response; the ACK or NACK to send for it."""
        type_url = response.type_url
        kept = self.versions.get(type_url, "")
        content = tuple(sorted(packed.value for packed in response.resources))
        try:
            resources = self._decode(response)
            if self._applied.get(type_url) != content or kept != response.version_info:
                await self._apply(type_url, resources, response.version_info)
                self._applied[type_url] = content
                self.applies += 1
        except ConfigError as exc:
            self.last_error = str(exc)
            log.error("xds_update_refused", type=type_url.rsplit(".", 1)[-1], version=response.version_info,
                      kept=kept or None, errors=str(exc).splitlines())
            nack = self._request(type_url, version=kept, nonce=response.nonce)
            nack.error_detail.CopyFrom(status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(exc)))
            return nack
        self.versions[type_url] = self.version = response.version_info
        self.last_error = None
        if all(url in self.versions for url in self.subscriptions):
            self._ready.set()
        log.info("xds_update_applied", type=type_url.rsplit(".", 1)[-1], version=response.version_info,
                 resources=len(resources))
        return self._request(type_url, version=response.version_info, nonce=response.nonce)

    def _decode(self, response: discovery_pb2.DiscoveryResponse) -> dict[str, Any]:
        subscription = self.subscriptions.get(response.type_url)
        if subscription is None:
            raise ConfigError(f"not subscribed to {response.type_url}")
        found: dict[str, Any] = {}
        for packed in response.resources:
            if packed.type_url != response.type_url:
                raise ConfigError(f"a {packed.type_url} resource in a {response.type_url} response")
            try:
                message = subscription.message.FromString(packed.value)
            except DecodeError as exc:
                raise ConfigError(f"a resource does not decode: {exc}") from None
            name = str(getattr(message, subscription.name_field))
            if name in found:
                raise ConfigError(f"two resources are named {name!r}")
            found[name] = message
        return found

    def status(self) -> Mapping[str, Any]:
        shown = {"target": self.target, "connected": self.connected, "streams": self.streams,
                 "versions": {url.rsplit(".", 1)[-1]: v for url, v in self.versions.items()}}
        if isinstance(self._credentials, XdsClientCredentials):
            shown["tls_reloads"] = self._credentials.reloads  # renewed files taken since start
        return shown


def _received(stream: asyncio.Task[bool]) -> bool:
    if stream.cancelled():
        return False
    error = stream.exception()
    if error is not None:
        # The channel or an apply that failed outside ConfigError: start over on a new stream.
        log.warning("xds_stream_failed", error=f"{type(error).__name__}: {error}")
        return False
    return stream.result()


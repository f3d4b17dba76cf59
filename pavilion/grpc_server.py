"""The grpc.aio server bootstrap shared by every Pavilion gRPC service.

It adds grpc.health.v1 and reflection, binds (optionally with TLS, pavilion.server_tls: then health and
reflection too are served over TLS, on the one port), and drains gracefully: health flips to
NOT_SERVING first so load balancers stop sending, then in-flight RPCs get `grace` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from pavilion.log import get_logger
from pavilion.metrics import GRPC_SERVING
from pavilion.server_tls import ServerTLS
from pavilion.tls_rotation import OnServed, RotatingCertificates, server_credentials

log = get_logger(__name__)

__all__ = ["MAX_MESSAGE_BYTES", "GrpcServer", "ServerTLS", "add_method_handlers"]

# Large enough for a full xDS snapshot of 10,000 routes in one response.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def add_method_handlers(server: grpc.aio.Server, service_name: str,
                        handlers: dict[str, grpc.RpcMethodHandler]) -> None:
    """Add hand-built method handlers (a service's own (de)serializers) as the generated
    `add_*Servicer_to_server` does: generic for lookup by name, and registered, so gRPC matches the
    method once rather than by name on every call."""
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name, handlers),))
    server.add_registered_method_handlers(service_name, handlers)


class GrpcServer:
    """One grpc.aio server: `register` adds the service's servicers; `service_names` feed health/reflection."""

    def __init__(self, host: str, port: int, *, register: Callable[[grpc.aio.Server], None],
                 service_names: Sequence[str], tls: ServerTLS | None = None,
                 options: Sequence[tuple[str, int | str]] = (), on_certificate: OnServed | None = None) -> None:
        """`on_certificate(file, not_after)`: told the served certificate at once and after each renewal
        (on a grpc or worker thread), beside the expiry gauge that pavilion.tls_rotation sets itself."""
        self.host = host
        self.port = port
        self.service_names = list(service_names)
        self.health = HealthServicer()
        self._server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 1),
            *options,
        ])
        register(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            [*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME], self._server)
        address = f"{host}:{port}"
        self._rotation: RotatingCertificates | None = None
        self._polling: asyncio.Task[None] | None = None
        if tls is None:
            self.port = self._server.add_insecure_port(address)
        else:
            credentials, self._rotation = server_credentials(tls, on_certificate)
            self.port = self._server.add_secure_port(address, credentials)

    async def start(self) -> int:
        await self._server.start()
        if self._rotation is not None:  # renewals measured even while no client reconnects
            self._polling = asyncio.create_task(self._rotation.poll(), name="server-tls-poll")
        GRPC_SERVING.set(1)
        await self.set_serving("", True)
        for name in self.service_names:
            await self.set_serving(name, True)
        log.info("grpc_server_started", host=self.host, port=self.port, services=self.service_names)
        return self.port

    async def set_serving(self, service: str, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(service, status)

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, then let in-flight RPCs finish for up to `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        if self._polling is not None:
            self._polling.cancel()
        GRPC_SERVING.set(0)
        await self._server.stop(grace)
        log.info("grpc_server_stopped", port=self.port)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()

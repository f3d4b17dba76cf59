from __future__ import annotations

import asyncio
import json
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pavilion.admin import AdminServer
from pavilion.grpc_server import GrpcServer


async def test_grpc_server_reports_health_then_drains() -> None:
    server = GrpcServer("127.0.0.1", 0, register=lambda _s: None, service_names=["pavilion.Test"])
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="pavilion.Test"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await server.set_serving("pavilion.Test", False)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="pavilion.Test"))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await server.stop(grace=0.5)


async def test_admin_server_serves_health_readiness_metrics_and_extra_routes() -> None:
    from aiohttp import web

    ready = {"now": False}

    async def status(_request: web.Request) -> web.Response:
        return web.json_response({"version": "abc"})

    admin = AdminServer("127.0.0.1", 0, ready=lambda: ready["now"], routes=[web.get("/status", status)])
    port = await admin.start()

    def fetch(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    try:
        assert (await asyncio.to_thread(fetch, "/healthz"))[0] == 200
        assert (await asyncio.to_thread(fetch, "/readyz"))[0] == 503
        ready["now"] = True
        assert (await asyncio.to_thread(fetch, "/readyz"))[0] == 200
        code, body = await asyncio.to_thread(fetch, "/metrics")
        assert code == 200 and b"python_info" in body
        assert json.loads((await asyncio.to_thread(fetch, "/status"))[1]) == {"version": "abc"}
    finally:
        await admin.stop()

"""An upstream for integration tests that remembers what it received and speaks websocket.

    python -m tests.integration.recording_upstream --port P --name N

Every request but `GET /_seen` and `GET /healthz` is answered with JSON naming the server
(`{"name": N, "path": ..., "host": ...}`) and kept; `GET /_seen` returns the kept ones (method, path,
host, headers, body) as a JSON list, so a test sees what a mirror received. A websocket upgrade (any
path) is accepted (choosing the subprotocol `chat.v1` when offered) and every text message is echoed
back as `N: message`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import urllib.request
from typing import Any

from aiohttp import WSMsgType, web

from pavilion.echo import serve_app
from pavilion.probe import http_ok
from tests.procs import Proc, free_port

__all__ = ["SUBPROTOCOL", "seen", "start_recording_upstream"]

SUBPROTOCOL = "chat.v1"


def build_app(name: str) -> web.Application:
    kept: list[dict[str, Any]] = []

    async def seen(_request: web.Request) -> web.Response:
        return web.json_response(kept)

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        kept.append({"method": request.method, "path": request.path_qs, "host": request.host,
                     "headers": dict(request.headers), "body": body.decode(errors="replace")})
        if request.headers.get("upgrade", "").lower() == "websocket":
            return await _echo(request, name)
        return web.json_response({"name": name, "path": request.path_qs, "host": request.host})

    app = web.Application()
    app.add_routes([web.get("/_seen", seen), web.get("/healthz", healthz), web.route("*", "/{tail:.*}", answer)])
    return app


async def _echo(request: web.Request, name: str) -> web.WebSocketResponse:
    # Picks `chat.v1` when the client offers it (as a service chooses among real subprotocols); else none.
    socket = web.WebSocketResponse(protocols=(SUBPROTOCOL,))
    await socket.prepare(request)
    async for message in socket:
        if message.type == WSMsgType.TEXT:
            await socket.send_str(f"{name}: {message.data}")
    return socket


async def serve(port: int, name: str) -> None:
    await serve_app(build_app(name), "127.0.0.1", port)


def start_recording_upstream(name: str) -> tuple[Proc, int]:
    port = free_port()
    proc = Proc([sys.executable, "-m", "tests.integration.recording_upstream", "--port", str(port), "--name", name],
                name=f"recording-{name}")
    try:
        proc.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 15, "answering")
    except BaseException:
        proc.stop()
        raise
    return proc, port


def seen(port: int) -> list[dict[str, Any]]:
    """The requests the upstream on `port` has kept so far."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_seen", timeout=5) as response:
        return list(json.loads(response.read()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="recording")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.name))


if __name__ == "__main__":
    main()

"""An in-process OAuth 2.0 introspection endpoint (RFC 7662) on 127.0.0.1 (random port), run in the test's
event loop, or in a thread of its own (`in_thread`) for tests that run real processes.

Tokens it knows answer their registered JSON object; any other token answers `{"active": false}`. It checks
client_secret_basic against its one client and answers 401 otherwise, as an IdP does. Behaviour switches per
test: a status, a delay, a redirect, a body override, an oversize streamed body; every request is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web

PATH = "/oauth2/introspect"


@dataclass
class IntrospectionServer:
    client_id: str = "pavilion-gateway"
    client_secret: str = "s3cret: with spaces+plus"
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: int = 200
    delay: float = 0.0
    redirect_to: str | None = None
    body_override: bytes | None = None
    stream_bytes: int = 0            # answer this many bytes, chunked without a Content-Length
    requests: list[dict[str, Any]] = field(default_factory=list)
    most_at_once: int = 0            # the most requests it was answering at the same time
    _at_once: int = 0
    port: int = 0
    issuer: str = ""                 # discovery `issuer`
    discovered: str | None = ""      # discovery `introspection_endpoint`: "" this server's, None left out
    _runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base + PATH

    @property
    def calls(self) -> int:
        return len(self.requests)

    def _authenticated(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except ValueError:
            return False
        return (unquote_plus(user), unquote_plus(password)) == (self.client_id, self.client_secret)

    async def _introspect(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        self.requests.append({"headers": dict(request.headers), "form": {k: str(v) for k, v in form.items()},
                              "method": request.method})
        if self.delay:
            self._at_once += 1
            self.most_at_once = max(self.most_at_once, self._at_once)
            try:
                await asyncio.sleep(self.delay)
            finally:
                self._at_once -= 1
        if self.redirect_to is not None:
            raise web.HTTPTemporaryRedirect(self.redirect_to)
        if not self._authenticated(request):
            return web.json_response({"error": "invalid_client"}, status=401,
                                     headers={"WWW-Authenticate": 'Basic realm="idp"'})
        if self.status != 200:
            return web.Response(status=self.status, text="unavailable")
        if self.stream_bytes:
            stream = web.StreamResponse(headers={"Content-Type": "application/json"})
            stream.enable_chunked_encoding()
            await stream.prepare(request)
            body = b'{"active": true, "pad": "' + b"x" * self.stream_bytes + b'"}'
            for start in range(0, len(body), 4096):
                await stream.write(body[start:start + 4096])
            await stream.write_eof()
            return stream
        if self.body_override is not None:
            return web.Response(body=self.body_override, content_type="application/json")
        answer = self.answers.get(str(form.get("token", "")), {"active": False})
        return web.Response(text=json.dumps(answer), content_type="application/json")

    async def _discovery(self, _request: web.Request) -> web.Response:
        doc = {"issuer": self.issuer or self.base, "jwks_uri": self.base + "/jwks.json"}
        if self.discovered is not None:
            doc["introspection_endpoint"] = self.discovered or self.url
        return web.json_response(doc)

    async def _jwks(self, _request: web.Request) -> web.Response:
        return web.json_response({"keys": []})

    async def start(self) -> IntrospectionServer:
        app = web.Application()
        app.router.add_post(PATH, self._introspect)
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks.json", self._jwks)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextmanager
def in_thread(server: IntrospectionServer) -> Iterator[IntrospectionServer]:
    """The server running on an event loop of its own thread (for tests that drive real processes)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="introspection-server", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the introspection server did not start")
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

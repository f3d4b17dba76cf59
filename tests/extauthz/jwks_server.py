"""An in-process JWKS / OIDC discovery server on 127.0.0.1 (random port), run in the test's event loop.

Its behaviour is switched per test: the JWK Set served, an HTTP status, a delay, a redirect,
an oversize body, Cache-Control; every hit is counted per path.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class JwksServer:
    jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    issuer: str = ""                 # discovery `issuer`; "" means the server's own base URL
    status: int = 200
    delay: float = 0.0
    redirect_to: str | None = None
    body_override: bytes | None = None
    cache_control: str | None = None
    chunked: bool = False            # stream the body without a Content-Length
    declared_length: int | None = None   # announce this Content-Length, send a little, then stall
    jwks_uri: str | None = None      # discovery `jwks_uri`; None means this server's /jwks.json
    hits: Counter[str] = field(default_factory=Counter)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.base}/jwks.json"

    @property
    def discovery_url(self) -> str:
        return f"{self.base}/.well-known/openid-configuration"

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        self.hits["jwks"] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.redirect_to is not None:
            raise web.HTTPFound(self.redirect_to)
        if self.status != 200:
            return web.Response(status=self.status, text="unavailable")
        body = self.body_override if self.body_override is not None else json.dumps(self.jwks).encode()
        headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
        if self.declared_length is not None:
            stream = web.StreamResponse(headers={"Content-Type": "application/json"})
            stream.content_length = self.declared_length
            await stream.prepare(request)
            await stream.write(body[:100])
            await asyncio.sleep(2.0)
            return stream
        if self.chunked:
            stream = web.StreamResponse(headers={"Content-Type": "application/json", **headers})
            stream.enable_chunked_encoding()
            await stream.prepare(request)
            for start in range(0, len(body), 1024):
                await stream.write(body[start:start + 1024])
            await stream.write_eof()
            return stream
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def _discovery(self, request: web.Request) -> web.Response:
        self.hits["discovery"] += 1
        doc = {"issuer": self.issuer or self.base, "jwks_uri": self.jwks_uri or self.jwks_url}
        return web.Response(text=json.dumps(doc), content_type="application/json")

    async def start(self) -> JwksServer:
        app = web.Application()
        app.router.add_get("/jwks.json", self._jwks)
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

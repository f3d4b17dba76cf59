"""The admin HTTP server every Pavilion process runs: /healthz, /readyz, /metrics, plus service routes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiohttp import web

from pavilion.metrics import CONTENT_TYPE_LATEST, render_metrics


class AdminServer:
    """aiohttp on one port. `ready` decides /readyz; `routes` adds service pages such as /status."""

    def __init__(self, host: str, port: int, *, ready: Callable[[], bool] = lambda: True,
                 routes: Sequence[web.RouteDef] = ()) -> None:
        self.host = host
        self.port = port
        self._ready = ready
        self._app = web.Application()
        self._app.add_routes([
            web.get("/healthz", self._healthz),
            web.get("/readyz", self._readyz),
            web.get("/metrics", self._metrics),
            *routes,
        ])
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Start serving; returns the bound port (useful when asked for port 0)."""
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_port=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    async def _metrics(self, _request: web.Request) -> web.Response:
        response = web.Response(body=render_metrics())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

"""A tiny upstream HTTP service that answers with what it received, for `make run` and the tests.

Every answer is JSON: the server's name and region, the method, path, query and request headers, so
a test can see which endpoint served a request and what Envoy changed on the way.
`GET /healthz` answers 200 while healthy; `POST /_fail?count=N` makes the next N requests answer 503.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

from aiohttp import web


def build_app(name: str, region: str) -> web.Application:
    state = {"fail": 0}

    async def fail(request: web.Request) -> web.Response:
        state["fail"] = int(request.query.get("count", "1"))
        return web.json_response({"failing": state["fail"]})

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def echo(request: web.Request) -> web.Response:
        body = {
            "name": name, "region": region, "method": request.method, "path": request.path,
            "query": request.query_string, "headers": dict(request.headers),
        }
        if state["fail"] > 0:
            state["fail"] -= 1
            return web.json_response(body, status=503)
        return web.Response(text=json.dumps(body), content_type="application/json",
                            headers={"x-served-by": name})

    app = web.Application()
    app.add_routes([web.post("/_fail", fail), web.get("/healthz", healthz), web.route("*", "/{tail:.*}", echo)])
    return app


async def serve(host: str, port: int, name: str, region: str) -> None:
    await serve_app(build_app(name, region), host, port)


async def serve_app(app: web.Application, host: str, port: int) -> None:
    """Serve `app` on host:port until cancelled (the process stopped); the tests' upstreams use it too."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="echo")
    parser.add_argument("--region", default="")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.name, args.region))


if __name__ == "__main__":
    main()

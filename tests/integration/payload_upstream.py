"""An upstream for compression tests and the compression bench: bodies of a size asked for.

    python -m tests.integration.payload_upstream --port P

`GET /<anything>?bytes=N&type=json|text|binary` answers `payload(N, type)` with its Content-Length and the
content type of `type` (application/json, text/plain, application/octet-stream); `&encoded=gzip` answers
the same JSON already gzip-encoded by the upstream itself (Content-Encoding: gzip), and `&stream=1` sends it in
chunks, without a Content-Length (Transfer-Encoding: chunked). Every answer says in
`x-upstream-accept-encoding` what Accept-Encoding reached the upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gzip
import json
import random
import sys

from aiohttp import web

from pavilion.echo import serve_app
from tests.procs import Proc, free_port

__all__ = ["CONTENT_TYPES", "payload", "start_payload_upstream"]

CONTENT_TYPES = {"json": "application/json", "text": "text/plain", "binary": "application/octet-stream"}
_WORDS = ("account", "tenant", "issuer", "subject", "scope", "read", "write", "active", "eu-west", "us-east")


@functools.lru_cache(maxsize=64)
def payload(size: int, kind: str = "json") -> bytes:
    """`size` bytes of `kind`, the same on every call: JSON records like an API's (compressible), or
    random bytes (incompressible) for `binary`."""
    rng = random.Random(size)
    if kind == "binary":
        return rng.randbytes(size)
    records: list[bytes] = []
    length = len(b'{"items": [], "pad": ""}')
    while length < size:
        record = json.dumps({"id": len(records), "name": rng.choice(_WORDS) + str(rng.randrange(10_000)),
                             "scopes": rng.sample(_WORDS, 3), "balance": rng.randrange(1_000_000)}).encode()
        records.append(record)
        length += len(record) + 2
    if kind == "text":
        return (b'{"items": [' + b", ".join(records) + b"]}")[:size]
    # Pad inside a string so the body stays valid JSON of exactly `size` bytes.
    while records:
        shell = b'{"items": [' + b", ".join(records) + b'], "pad": ""}'
        if len(shell) <= size:
            break
        records.pop()
    else:
        shell = b'{"pad": ""}'
    return shell[:-2] + b" " * (size - len(shell)) + b'"}'


async def answer(request: web.Request) -> web.StreamResponse:
    size = int(request.query.get("bytes", "4096"))
    kind = request.query.get("type", "json")
    headers = {"x-upstream-accept-encoding": request.headers.get("accept-encoding", "")}
    body = payload(size, kind)
    if request.query.get("encoded") == "gzip":
        body = gzip.compress(body, mtime=0)
        headers["content-encoding"] = "gzip"
    if request.query.get("stream") == "1":
        streamed = web.StreamResponse(headers={**headers, "content-type": CONTENT_TYPES[kind]})
        streamed.enable_chunked_encoding()
        await streamed.prepare(request)
        for start in range(0, len(body), 1000):
            await streamed.write(body[start:start + 1000])
        await streamed.write_eof()
        return streamed
    return web.Response(body=body, content_type=CONTENT_TYPES[kind], headers=headers)


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def serve(port: int) -> None:
    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/{tail:.*}", answer)])
    await serve_app(app, "127.0.0.1", port)


def start_payload_upstream(port: int | None = None) -> tuple[Proc, int]:
    port = port or free_port()
    proc = Proc([sys.executable, "-m", "tests.integration.payload_upstream", "--port", str(port)],
                name="payload-upstream")
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/healthz")
    except BaseException:
        proc.stop()
        raise
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()

"""What compression saves on the wire and costs in latency, against the same route uncompressed.

    .venv/bin/python -m bench.compression [--requests 200] [--sizes 2000,20000,200000]

One stack from the route YAML (the control plane, one Envoy with 1 worker thread, the payload upstream
of tests/integration/payload_upstream.py), one listener with `compression: {algorithms: [zstd, br, gzip]}`
and two routes to the same service that differ only in `compression: off`. For each JSON body size and
each encoding, `--requests` sequential GETs on one kept-alive connection, alternating between the
compressed route (Accept-Encoding: that encoding) and the `compression: off` route (the baseline, same
body, same run). Printed per cell: bytes on the wire (status line, headers and body as received), p50
and p99 of the client's time to the last byte, and ratios to the baseline. The difference of the p50s
is what Envoy's compressor adds (or saves: fewer bytes to write) on loopback, where the wire is free;
on a slow link the bytes dominate. No asserts.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import tempfile
import time
from pathlib import Path

from tests.integration.gateway_procs import running_gateway
from tests.integration.payload_upstream import start_payload_upstream
from tests.procs import free_port

ENCODINGS = ("gzip", "br", "zstd")
CONFIG = """regions: [eu-west]
listeners:
  - name: edge
    address: 127.0.0.1
    port: {port}
    compression: {{algorithms: [zstd, br, gzip]}}
services:
  - name: payload
    endpoints: [{{address: 127.0.0.1:{upstream}, region: eu-west}}]
routes:
  - name: compressed
    match: {{prefix: /c}}
    service: payload
  - name: plain
    match: {{prefix: /p}}
    service: payload
    compression: off
"""


def timed_get(connection: http.client.HTTPConnection, path: str, accept: str) -> tuple[float, int, str]:
    """(seconds to the last byte, bytes received: status line, headers and body, content-encoding)."""
    start = time.perf_counter()
    connection.request("GET", path, headers={"accept-encoding": accept})
    response = connection.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - start
    head = len(f"HTTP/1.1 {response.status} {response.reason}\r\n") + 2
    head += sum(len(f"{name}: {value}\r\n") for name, value in response.getheaders())
    return elapsed, head + len(body), response.headers.get("content-encoding", "identity")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(port: int, size: int, encoding: str, requests: int) -> dict[str, tuple[float, float, int, str]]:
    """route → (p50 ms, p99 ms, bytes on the wire, content-encoding), the two routes alternating."""
    times: dict[str, list[float]] = {"compressed": [], "plain": []}
    wire: dict[str, tuple[int, str]] = {}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for index in range(requests * 2 + 20):
            route = "compressed" if index % 2 == 0 else "plain"
            path = f"/{route[0]}/items?bytes={size}"
            seconds, received, used = timed_get(connection, path, encoding)
            if index >= 20:  # the first few warm the connection pools and the upstream
                times[route].append(seconds * 1000)
            wire[route] = (received, used)
    finally:
        connection.close()
    return {route: (statistics.median(values), percentile(values, 0.99), *wire[route])
            for route, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200, help="requests per route and cell")
    parser.add_argument("--sizes", default="2000,20000,200000", help="JSON body sizes in bytes")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    port = free_port()
    upstream = start_payload_upstream()
    routes = Path(tempfile.mkdtemp(prefix="bench-compression-"))
    (routes / "gateway.yaml").write_text(CONFIG.format(port=port, upstream=upstream[1]))
    with running_gateway(routes, port, {"payload": upstream}):
        print(f"{args.requests} requests per route and cell, sequential, one connection, loopback; "
              "baseline: the same body through the compression: off route")
        print(f"{'body':>8} {'enc':>5} {'wire B':>8} {'base B':>8} {'ratio':>6}  {'p50 ms':>7} {'base':>7} "
              f"{'+p50 ms':>8}  {'p99 ms':>7} {'base':>7}")
        for size in sizes:
            for encoding in ENCODINGS:
                found = measure(port, size, encoding, args.requests)
                c50, c99, c_bytes, used = found["compressed"]
                p50, p99, p_bytes, _ = found["plain"]
                print(f"{size:>8} {used:>5} {c_bytes:>8} {p_bytes:>8} {c_bytes / p_bytes:>6.3f}  {c50:>7.3f} "
                      f"{p50:>7.3f} {c50 - p50:>+8.3f}  {c99:>7.3f} {p99:>7.3f}")


if __name__ == "__main__":
    main()

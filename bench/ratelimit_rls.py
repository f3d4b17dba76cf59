"""ShouldRateLimit throughput and latency: `pavilion ratelimit` on Redis against a do-nothing server.

Run: .venv/bin/python -m bench.ratelimit_rls [--seconds 3] [--clients 2] [--concurrency 32]

For 1 and 10 descriptors per request, and for one process and `--workers 2`, it measures requests
per second and p50/p99 latency (seen by the client) of:
- a do-nothing grpc.aio RateLimitService (same GrpcServer bootstrap, answers OK with one status per
  descriptor, no config, no Redis): the baseline, measured in the same run;
- `pavilion ratelimit --redis ...`, every descriptor matching a rule counted in Redis (one EVALSHA).
Throughput: `--clients` separate load processes, each with `--concurrency` requests in flight over 4
connections, for `--seconds` after a 1 s warm-up. Latency: one load process with a few requests in
flight, so queueing does not hide the cost of a request. It prints figures and ratios, and how many
requests Pavilion answered by a fallback (a Redis timeout); it asserts nothing.
The machine's cores are shared by the servers, Redis and the load generators, so absolute figures
say little; the ratios against the baseline are the result.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

DOMAIN = "bench"
CONFIG = "domain: bench\ndescriptors:\n" + "".join(
    f"  - key: d{i}\n    rate_limit: {{unit: hour, requests_per_unit: 1000000000}}\n" for i in range(10))


# ---- the do-nothing server -------------------------------------------------------------------------

class NullService(rls_pb2_grpc.RateLimitServiceServicer):
    async def ShouldRateLimit(self, request: rls_pb2.RateLimitRequest, context: Any) -> rls_pb2.RateLimitResponse:
        response = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)
        for _ in request.descriptors:
            response.statuses.add(code=rls_pb2.RateLimitResponse.OK)
        return response


async def _serve_null(port: int) -> None:
    from pavilion.grpc_server import GrpcServer

    def add(server: grpc.aio.Server) -> None:
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(NullService(), server)

    server = GrpcServer("127.0.0.1", port, register=add,
                        service_names=["envoy.service.ratelimit.v3.RateLimitService"])
    await server.start()
    await server.wait_for_termination()


# ---- the load generator ----------------------------------------------------------------------------

def _request(descriptors: int, client: int) -> rls_pb2.RateLimitRequest:
    return rls_pb2.RateLimitRequest(domain=DOMAIN, descriptors=[
        ratelimit_pb2.RateLimitDescriptor(entries=[ratelimit_pb2.RateLimitDescriptor.Entry(
            key=f"d{i}", value=f"client-{client}")]) for i in range(descriptors)])


async def _load(port: int, descriptors: int, concurrency: int, seconds: float, seed: int) -> tuple[int, list[float]]:
    # Separate subchannel pools: each channel its own TCP connection, so SO_REUSEPORT spreads them.
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(4)]
    stubs = [rls_pb2_grpc.RateLimitServiceStub(channel) for channel in channels]
    requests = [_request(descriptors, seed * 1000 + i) for i in range(64)]
    latencies: list[float] = []
    count = 0
    start = time.perf_counter()
    warm_until, end = start + 1.0, start + 1.0 + seconds

    async def worker(index: int) -> None:
        nonlocal count
        stub = stubs[index % len(stubs)]
        i = index
        while True:
            sent = time.perf_counter()
            if sent >= end:
                return
            await stub.ShouldRateLimit(requests[i % len(requests)], timeout=5)
            done = time.perf_counter()
            i += 1
            if sent >= warm_until and done <= end:
                count += 1
                latencies.append(done - sent)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    for channel in channels:
        await channel.close()
    return count, latencies


def _load_process(port: int, descriptors: int, concurrency: int, seconds: float, seed: int, out: Any) -> None:
    out.send(asyncio.run(_load(port, descriptors, concurrency, seconds, seed)))
    out.close()


def measure(port: int, descriptors: int, clients: int, concurrency: int, seconds: float) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for seed in range(clients):
        receive, send = context.Pipe(duplex=False)
        proc = context.Process(target=_load_process, args=(port, descriptors, concurrency, seconds, seed, send))
        proc.start()
        pipes.append(receive)
        procs.append(proc)
    total, latencies = 0, []
    for receive in pipes:
        count, lat = receive.recv()
        total += count
        latencies.extend(lat)
    for proc in procs:
        proc.join(30)
    latencies.sort()
    return {
        "rps": total / seconds,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan"),
    }


# ---- orchestration ---------------------------------------------------------------------------------

def _wait_ready(port: int, deadline: float = 30.0) -> None:
    from tests.procs import port_open

    end = time.monotonic() + deadline
    while not port_open(port):
        if time.monotonic() > end:
            raise TimeoutError(f"nothing listening on {port}")
        time.sleep(0.05)
    # One real call, so start-up (Redis connection, script load) is not measured.
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        while True:
            try:
                stub.ShouldRateLimit(_request(1, 0), timeout=2)
                return
            except grpc.RpcError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)


def _backend_errors(admin_port: int) -> float:
    """pavilion_ratelimit_backend_errors_total summed over kinds: requests answered by a fallback."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("pavilion_ratelimit_backend_errors_total"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run (after 1 s warm-up)")
    parser.add_argument("--clients", type=int, default=2, help="load generator processes for throughput")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight per load generator")
    parser.add_argument("--latency-concurrency", type=int, default=4,
                        help="requests in flight (one load generator) for the latency runs")
    parser.add_argument("--redis-timeout-ms", type=float, default=250.0,
                        help="Pavilion's Redis timeout; generous by default because Redis shares the cores with "
                             "the load generators here, and a timed-out request answered by a fallback is cheaper "
                             "than a counted one, which would flatter the figures")
    parser.add_argument("--null-server", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.null_server:
        asyncio.run(_serve_null(args.null_server))
        return 0

    from tests.procs import PAVILION, Proc, free_port, start_redis

    workdir = Path(tempfile.mkdtemp(prefix="bench-ratelimit-"))
    (workdir / "ratelimit.yaml").write_text(CONFIG)
    redis, redis_port = start_redis()
    results: dict[tuple[str, int, int], dict[str, float]] = {}
    print(f"throughput: {args.clients} load processes x {args.concurrency} in flight; "
          f"latency: 1 load process x {args.latency_concurrency} in flight; {args.seconds:g} s each", flush=True)
    try:
        for workers in (1, 2):
            for kind in ("null", "pavilion"):
                port, admin_port = free_port(), free_port()
                if kind == "null":
                    procs = [Proc([sys.executable, "-m", "bench.ratelimit_rls", "--null-server", str(port)],
                                  name=f"null-{port}-{i}") for i in range(workers)]
                else:
                    procs = [Proc([PAVILION, "--log-level", "warning", "ratelimit", "--config",
                                   str(workdir / "ratelimit.yaml"), "--port", str(port), "--workers", str(workers),
                                   "--admin-port", str(admin_port), "--redis", f"redis://127.0.0.1:{redis_port}",
                                   "--redis-timeout-ms", str(args.redis_timeout_ms)],
                                  name=f"ratelimit-{port}")]
                try:
                    _wait_ready(port)
                    time.sleep(0.5 if workers == 1 else 1.0)  # the second worker binds a moment later
                    for descriptors in (1, 10):
                        rate = measure(port, descriptors, args.clients, args.concurrency, args.seconds)
                        latency = measure(port, descriptors, 1, args.latency_concurrency, args.seconds)
                        r = results[(kind, workers, descriptors)] = {
                            "rps": rate["rps"], "p50_ms": latency["p50_ms"], "p99_ms": latency["p99_ms"]}
                        print(f"{kind:9} workers={workers} descriptors={descriptors:2}: {r['rps']:7.0f} req/s  "
                              f"p50 {r['p50_ms']:5.2f} ms  p99 {r['p99_ms']:5.2f} ms", flush=True)
                    if kind == "pavilion":
                        print(f"          requests answered by on_backend_error (Redis timeouts): "
                              f"{_backend_errors(admin_port):.0f}", flush=True)
                finally:
                    for proc in procs:
                        proc.stop()
    finally:
        redis.stop()
    print()
    print("| workers | descriptors | do-nothing req/s | pavilion req/s | ratio | do-nothing p50 / p99 ms "
          "| pavilion p50 / p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for workers in (1, 2):
        for descriptors in (1, 10):
            null, ours = results[("null", workers, descriptors)], results[("pavilion", workers, descriptors)]
            print(f"| {workers} | {descriptors} | {null['rps']:.0f} | {ours['rps']:.0f} | "
                  f"{ours['rps'] / null['rps']:.2f} | {null['p50_ms']:.2f} / {null['p99_ms']:.2f} | "
                  f"{ours['p50_ms']:.2f} / {ours['p99_ms']:.2f} |")
    for workers in (1, 2):
        one, ten = results[("pavilion", workers, 1)], results[("pavilion", workers, 10)]
        print(f"pavilion workers={workers}: p50 10 descriptors / 1 descriptor = {ten['p50_ms'] / one['p50_ms']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

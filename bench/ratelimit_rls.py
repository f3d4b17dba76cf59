"""ShouldRateLimit throughput and latency: `pavilion ratelimit` on Redis against a do-nothing server.

Run: .venv/bin/python -m bench.ratelimit_rls [--seconds 1.5] [--rounds 3] [--clients 2] [--concurrency 32]
     [--loop asyncio|uvloop] [--limit 1] [--before DIR] [--redis-unix]

For 1 and 10 descriptors per request, and for one process and `--workers 2`, it measures requests
per second and p50/p99 latency (seen by the client) of:
- a do-nothing grpc.aio RateLimitService (same GrpcServer bootstrap, the same generated handler and so
  the same protobuf deserializer, answers OK with one status per descriptor but no limit, reset time or
  headers; no config, no Redis): the baseline, measured in the same run, on the same event loop;
- a round-trip server: the do-nothing server plus what no Redis-backed limiter can avoid, one EVALSHA
  of the same script per request (as many checks as descriptors, encoded once at start, its reply
  read), on Pavilion's Redis connection. It is the floor for any design with one round trip per
  request: the gap between it and the do-nothing server is the round trip's cost in the server,
  the gap between it and Pavilion is Pavilion's own logic;
- `pavilion ratelimit --redis ...`, every descriptor matching a rule counted in Redis (one EVALSHA).
With `--redis-unix` the round-trip server and Pavilion reach Redis over its Unix socket (`--redis
unix:///PATH`, a Redis on the same host) instead of TCP over loopback.
With `--workers 2` each baseline runs its two processes as Pavilion does (pavilion.workers: one
parent, spawned children, so one session): Linux shares CPU between sessions (autogroups), and the
same servers started as two sessions cost about 20 % less CPU a request than as one.
Throughput: `--clients` separate load processes, each with `--concurrency` requests in flight over 4
connections, for `--seconds` after a short warm-up; both servers run side by side and are measured
in alternating rounds, so a burst of unrelated load on the shared machine hits both alike.
Latency: one load process with a few requests in flight, so queueing does not hide the cost of a
request. It prints figures and ratios, and how many
requests Pavilion answered by a fallback (a Redis timeout); it asserts nothing.
The machine's cores are shared by the servers, Redis and the load generators (and, here, by other
work), so req/s swing from run to run; the servers' CPU time per request (from /proc, workers
included, Redis not) is the steadier figure, and its ratio is what throughput would be on cores of
its own.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
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

from pavilion.lifecycle import install_event_loop_policy
from pavilion.workers import run_workers

DOMAIN = "bench"
KINDS = ("null", "round-trip", "pavilion")
WARMUP = 0.5


def bench_config(limit: int = 1_000_000_000) -> str:
    return "domain: bench\ndescriptors:\n" + "".join(
        f"  - key: d{i}\n    rate_limit: {{unit: hour, requests_per_unit: {limit}}}\n" for i in range(10))



# ---- the do-nothing server -------------------------------------------------------------------------

class NullService(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
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


class RoundTripService(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    """The do-nothing answer after one Redis round trip: the script run with a request's check count."""

    def __init__(self, connection: Any) -> None:
        from ratelimit.redis_store import encode_evalsha
        from ratelimit.store import Check

        self.connection = connection
        self.commands = {count: encode_evalsha([Check(f"floor|d{i}|0.fixed_window.3600", "fixed_window", 10**9, 3600)
                                                for i in range(count)]) for count in range(1, 11)}

    async def ShouldRateLimit(self, request: rls_pb2.RateLimitRequest, context: Any) -> rls_pb2.RateLimitResponse:
        from ratelimit.redis_store import parse_outcomes

        count = len(request.descriptors)
        parse_outcomes(await self.connection.send(self.commands[count]), count)
        response = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)
        for _ in request.descriptors:
            response.statuses.add(code=rls_pb2.RateLimitResponse.OK)
        return response


def _baseline_worker(_index: int, null_port: int, round_trip_port: int, redis_port: int, loop: str,
                     redis_socket: str = "") -> int:
    """One process of a baseline server: the do-nothing one on `null_port`, else the round trip one."""
    if loop == "uvloop":
        install_event_loop_policy()
    asyncio.run(_serve_null(null_port) if null_port else _serve_round_trip(round_trip_port, redis_port, redis_socket))
    return 0


async def _serve_round_trip(port: int, redis_port: int, redis_socket: str = "") -> None:
    from pavilion.grpc_server import GrpcServer
    from ratelimit.redis_store import SCRIPT
    from ratelimit.resp import RespConnection

    connection = await RespConnection.open("127.0.0.1", redis_port, timeout=1.0, connect_timeout=2.0,
                                           path=redis_socket or None)
    await connection.call("SCRIPT", "LOAD", SCRIPT)

    def add(server: grpc.aio.Server) -> None:
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(RoundTripService(connection), server)

    server = GrpcServer("127.0.0.1", port, register=add,
                        service_names=["envoy.service.ratelimit.v3.RateLimitService"])
    await server.start()
    await server.wait_for_termination()


# ---- the load generator ----------------------------------------------------------------------------

def _request(descriptors: int, client: int) -> rls_pb2.RateLimitRequest:
    return rls_pb2.RateLimitRequest(domain=DOMAIN, descriptors=[
        ratelimit_pb2.RateLimitDescriptor(entries=[ratelimit_pb2.RateLimitDescriptor.Entry(
            key=f"d{i}", value=f"client-{client}")]) for i in range(descriptors)])


async def _load(port: int, descriptors: int, concurrency: int, seconds: float, seed: int,
                warmup: float = WARMUP) -> tuple[int, list[float], int]:
    # Separate subchannel pools: each channel its own TCP connection, so SO_REUSEPORT spreads them.
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(4)]
    stubs = [rls_pb2_grpc.RateLimitServiceStub(channel) for channel in channels]
    requests = [_request(descriptors, seed * 1000 + i) for i in range(64)]
    latencies: list[float] = []
    count = 0
    start = time.perf_counter()
    warm_until, end = start + warmup, start + warmup + seconds

    everything = 0

    async def worker(index: int) -> None:
        nonlocal count, everything
        stub = stubs[index % len(stubs)]
        i = index
        while True:
            sent = time.perf_counter()
            if sent >= end:
                return
            await stub.ShouldRateLimit(requests[i % len(requests)], timeout=5)
            done = time.perf_counter()
            i += 1
            everything += 1
            if sent >= warm_until and done <= end:
                count += 1
                latencies.append(done - sent)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    for channel in channels:
        await channel.close()
    return count, latencies, everything


def _load_process(port: int, descriptors: int, concurrency: int, seconds: float, seed: int, out: Any) -> None:
    out.send(asyncio.run(_load(port, descriptors, concurrency, seconds, seed)))
    out.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and all its descendants (the workers), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(_cpu_seconds(int(child)) for child in children)


def measure(port: int, descriptors: int, clients: int, concurrency: int, seconds: float,
            server_pids: Sequence[int] = ()) -> dict[str, float]:
    """Requests per second and latency seen by the clients; with `server_pids`, also the servers'
    CPU per request (CPU time does not depend on what else runs on the machine, unlike req/s)."""
    cpu_before = sum(_cpu_seconds(pid) for pid in server_pids)
    context = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for seed in range(clients):
        receive, send = context.Pipe(duplex=False)
        proc = context.Process(target=_load_process, args=(port, descriptors, concurrency, seconds, seed, send))
        proc.start()
        pipes.append(receive)
        procs.append(proc)
    total, latencies, everything = 0, [], 0
    for receive in pipes:
        count, lat, all_count = receive.recv()
        total += count
        everything += all_count
        latencies.extend(lat)
    for proc in procs:
        proc.join(30)
    cpu = sum(_cpu_seconds(pid) for pid in server_pids) - cpu_before
    latencies.sort()
    return {
        "cpu_us": cpu / everything * 1e6 if everything and server_pids else float("nan"),
        "rps": total / seconds,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan"),
    }


# ---- orchestration ---------------------------------------------------------------------------------

def _wait_ready(port: int, deadline: float = 30.0) -> None:
    from pavilion.probe import port_open

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


# `pavilion` with uvloop as asyncio's loop: what a service calling install_event_loop_policy() would run.
_PAVILION_ON_UVLOOP = ("import sys; from pavilion.lifecycle import install_event_loop_policy; "
                       "install_event_loop_policy(); from pavilion.cli import main; sys.exit(main(sys.argv[1:]))")


# `pavilion` from another checkout (`--before DIR`): its tree first on sys.path.
_PAVILION_FROM = "import sys; sys.path.insert(0, {tree!r}); from pavilion.cli import main; sys.exit(main(sys.argv[1:]))"


def _start_servers(kind: str, workers: int, port: int, admin_port: int, config: Path, redis_port: int,
                   timeout_ms: float, loop: str = "asyncio", before: Path | None = None,
                   redis_socket: str = "") -> list[Any]:
    from tests.procs import PAVILION, Proc

    # The baselines' workers run as `pavilion ratelimit --workers N` runs its own (pavilion.workers: one
    # parent, spawned children, one session): the scheduler shares CPU between sessions (autogroups), and
    # two servers in two sessions got more of it than two in one, which made the same pavilion cost
    # 232 µs a request as two sessions and 289 µs as one (6 alternating rounds each).
    if kind == "null":
        return [Proc([sys.executable, "-m", "bench.ratelimit_rls", "--null-server", str(port), "--loop", loop,
                      "--workers", str(workers)], name=f"null-{port}")]
    if kind == "round-trip":
        return [Proc([sys.executable, "-m", "bench.ratelimit_rls", "--round-trip-server", str(port), "--loop", loop,
                      "--redis-port", str(redis_port), "--redis-socket", redis_socket, "--workers", str(workers)],
                     name=f"round-trip-{port}")]
    if kind == "before" and before is not None:
        pavilion = [sys.executable, "-c", _PAVILION_FROM.format(tree=str(before.resolve()))]
    elif loop == "uvloop":
        pavilion = [sys.executable, "-c", _PAVILION_ON_UVLOOP]
    else:
        pavilion = [PAVILION]
    return [Proc([*pavilion, "--log-level", "warning", "ratelimit", "--config", str(config), "--port", str(port),
                  "--workers", str(workers), "--admin-port", str(admin_port),
                  "--redis", f"unix://{redis_socket}" if redis_socket else f"redis://127.0.0.1:{redis_port}",
                  "--redis-timeout-ms", str(timeout_ms)],
                 name=f"{kind}-ratelimit-{port}")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.5, help="measured seconds per run (after a warm-up)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating do-nothing/pavilion throughput runs per case; medians are reported")
    parser.add_argument("--clients", type=int, default=2, help="load generator processes for throughput")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight per load generator")
    parser.add_argument("--latency-concurrency", type=int, default=4,
                        help="requests in flight (one load generator) for the latency runs")
    parser.add_argument("--redis-timeout-ms", type=float, default=250.0,
                        help="Pavilion's Redis timeout; generous by default because Redis shares the cores with "
                             "the load generators here, and a timed-out request answered by a fallback is cheaper "
                             "than a counted one, which would flatter the figures")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="event loop of both servers; uvloop runs `pavilion ratelimit` through "
                             "pavilion.lifecycle.install_event_loop_policy, in one process only (spawned workers "
                             "would not inherit it), so it measures --workers 1 alone")
    parser.add_argument("--limit", type=int, default=1_000_000_000,
                        help="requests per hour of every rule; 1 measures clients past their limit (answered from "
                             "the counters known to be over, without Redis)")
    parser.add_argument("--before", type=Path, default=None,
                        help="also measure the `pavilion ratelimit` of another checkout (for example "
                             "`git archive COMMIT | tar -x -C DIR`) in the same alternation: a before/after comparison")
    parser.add_argument("--redis-unix", action="store_true",
                        help="the round-trip server and Pavilion reach Redis over its Unix socket "
                             "(a Redis on this host)")
    parser.add_argument("--null-server", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--round-trip-server", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--redis-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--redis-socket", default="", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.null_server or args.round_trip_server:
        server_args = (args.null_server, args.round_trip_server, args.redis_port, args.loop, args.redis_socket)
        if args.workers > 1:
            return run_workers(args.workers, _baseline_worker, args=server_args)
        return _baseline_worker(0, *server_args)
    if args.loop == "uvloop" and install_event_loop_policy() != "uvloop":
        parser.error("--loop uvloop: uvloop is not installed")

    from tests.procs import free_port, start_redis

    workdir = Path(tempfile.mkdtemp(prefix="bench-ratelimit-"))
    config = workdir / "ratelimit.yaml"
    config.write_text(bench_config(args.limit))
    redis_socket = str(workdir / "redis.sock") if args.redis_unix else ""
    unix = ["--unixsocket", redis_socket, "--unixsocketperm", "700"] if redis_socket else []
    redis, redis_port = start_redis(extra=unix)
    results: dict[tuple[str, int, int], dict[str, float]] = {}
    worker_counts = (1,) if args.loop == "uvloop" else (1, 2)
    kinds = (*KINDS, "before") if args.before is not None else KINDS
    print(f"event loop: {args.loop}; Redis over {'its Unix socket' if redis_socket else 'TCP (loopback)'}; "
          f"throughput: {args.clients} load processes x {args.concurrency} in flight, {args.rounds} alternating "
          f"rounds of {args.seconds:g} s, median; latency: 1 load process x {args.latency_concurrency} in flight",
          flush=True)
    try:
        for workers in worker_counts:
            ports = {kind: (free_port(), free_port()) for kind in kinds}
            procs = [proc for kind, (port, admin) in ports.items()
                     for proc in _start_servers(kind, workers, port, admin, config, redis_port, args.redis_timeout_ms,
                                                args.loop, args.before, redis_socket)]
            pids = {kind: [proc.popen.pid for proc in procs if proc.name.startswith(f"{kind}-")] for kind in kinds}
            try:
                for port, _admin in ports.values():
                    _wait_ready(port)
                time.sleep(0.5 if workers == 1 else 1.0)  # the second worker binds a moment later
                for descriptors in (1, 10):
                    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
                    cpus: dict[str, list[float]] = {kind: [] for kind in kinds}
                    for _ in range(args.rounds):
                        for kind, (port, _admin) in ports.items():
                            run = measure(port, descriptors, args.clients, args.concurrency, args.seconds,
                                          pids[kind])
                            rates[kind].append(run["rps"])
                            cpus[kind].append(run["cpu_us"])
                    for kind, (port, _admin) in ports.items():
                        latency = measure(port, descriptors, 1, args.latency_concurrency, args.seconds)
                        r = results[(kind, workers, descriptors)] = {
                            "rps": statistics.median(rates[kind]), "cpu_us": statistics.median(cpus[kind]),
                            "p50_ms": latency["p50_ms"], "p99_ms": latency["p99_ms"]}
                        print(f"{kind:10} workers={workers} descriptors={descriptors:2}: {r['rps']:7.0f} req/s "
                              f"(runs {', '.join(f'{x:.0f}' for x in rates[kind])})  "
                              f"server CPU {r['cpu_us']:4.0f} us/req  "
                              f"p50 {r['p50_ms']:5.2f} ms  p99 {r['p99_ms']:5.2f} ms", flush=True)
                print(f"           pavilion requests answered by on_backend_error (Redis timeouts): "
                      f"{_backend_errors(ports['pavilion'][1]):.0f}", flush=True)
            finally:
                for proc in procs:
                    proc.stop()
    finally:
        redis.stop()
    print()
    print("| workers | descriptors | req/s do-nothing / round trip / pavilion (pavilion ratio) | server CPU µs/req "
          "do-nothing / round trip / pavilion | CPU ratio: round trip, pavilion (1.00 = do-nothing) | "
          "p50 / p99 ms do-nothing, round trip, pavilion |")
    print("|---|---|---|---|---|---|")
    for workers in worker_counts:
        for descriptors in (1, 10):
            null, floor, ours = (results[(kind, workers, descriptors)] for kind in KINDS)
            rps_text = " / ".join(f"{r['rps']:.0f}" for r in (null, floor, ours))
            cpu_text = " / ".join(f"{r['cpu_us']:.0f}" for r in (null, floor, ours))
            latencies = ", ".join(f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}" for r in (null, floor, ours))
            print(f"| {workers} | {descriptors} | {rps_text} ({ours['rps'] / null['rps']:.2f}) | {cpu_text} | "
                  f"{null['cpu_us'] / floor['cpu_us']:.2f}, {null['cpu_us'] / ours['cpu_us']:.2f} | {latencies} |")
    for workers in worker_counts:
        # The do-nothing and round-trip servers' own ratios are the reference for "flat": ten descriptors
        # make a larger request and answer for every server.
        ratios = {kind: results[(kind, workers, 10)]["p50_ms"] / results[(kind, workers, 1)]["p50_ms"]
                  for kind in KINDS}
        print(f"workers={workers}: p50 10 descriptors / 1 descriptor = {ratios['pavilion']:.2f} for pavilion "
              f"(do-nothing {ratios['null']:.2f}, round trip {ratios['round-trip']:.2f})")
    if args.before is not None:
        for workers in worker_counts:
            for descriptors in (1, 10):
                old, new = results[("before", workers, descriptors)], results[("pavilion", workers, descriptors)]
                print(f"before {args.before} workers={workers} descriptors={descriptors:2}: server CPU "
                      f"{old['cpu_us']:.0f} -> {new['cpu_us']:.0f} us/req ({new['cpu_us'] / old['cpu_us'] - 1:+.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

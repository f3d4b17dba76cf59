"""ext_authz Check throughput and latency, beside a do-nothing grpc.aio Check server in the same run.

    .venv/bin/python -m bench.extauthz_check [--seconds 2] [--rounds 3] [--concurrency 32] [--rate 1500] [--before DIR]

For 1 process and for `--workers 2`, it measures:
- direct: a grpc.aio load generator in its own process (several channels, so SO_REUSEPORT spreads them);
- paced: the same load generator at a fixed 1,500 requests a second (`--rate`), below what either server
  can answer, so both do the same batching and CPU per Check is compared at equal load;
- through Envoy: wrk against an Envoy whose route answers 200 itself after the ext_authz filter
  (skipped when `wrk` is not installed).
The full check is `pavilion extauthz --redis` with a pool of valid tokens, so every request is a cached
verification plus a revocation check (local cache kept current by pub/sub). The baseline is a grpc.aio
servicer that returns a constant OK. The figures and the ratio full/baseline are printed; no asserts.

`--before DIR` also measures the `pavilion extauthz` of another checkout (for example
`git archive COMMIT | tar -x -C DIR`), run with PYTHONPATH=DIR, in the same alternation: a before/after
comparison under the same load on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import redis
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import status_pb2

from bench.wrk import run_wrk
from pavilion.grpc_server import GrpcServer
from pavilion.lifecycle import run_until_stopped
from pavilion.workers import run_workers
from tests.extauthz.issuer import Issuer
from tests.integration.extauthz_stack import check_direct, check_request, start_envoy, start_extauthz, write_tenants
from tests.procs import PAVILION, Proc, free_port, start_redis

TOKENS = 64


# -- the do-nothing server ---------------------------------------------------------------------------

class NullAuthorization(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    RESPONSE = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=0),
                                               ok_response=external_auth_pb2.OkHttpResponse())

    async def Check(self, request: Any, context: Any) -> external_auth_pb2.CheckResponse:
        return self.RESPONSE


def _serve_null(_index: int, port: int) -> int:
    async def main(stop: asyncio.Event) -> None:
        server = GrpcServer("127.0.0.1", port, service_names=[], register=lambda s: (
            external_auth_pb2_grpc.add_AuthorizationServicer_to_server(NullAuthorization(), s)))
        await server.start()
        await stop.wait()
        await server.stop(0)

    return run_until_stopped(main)


def serve_null(port: int, workers: int) -> int:
    if workers <= 1:
        return _serve_null(0, port)
    return run_workers(workers, _serve_null, args=(port,))


# -- the direct load generator -----------------------------------------------------------------------

async def _load(port: int, seconds: float, concurrency: int, channels: int, tokens: list[str],
                rate: float = 0.0) -> dict[str, Any]:
    requests = [check_request({"authorization": f"Bearer {t}"}, "acme").SerializeToString() for t in tokens]
    opened = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(channels)]
    methods = [ch.unary_unary("/envoy.service.auth.v3.Authorization/Check", request_serializer=None,
                              response_deserializer=external_auth_pb2.CheckResponse.FromString) for ch in opened]
    latencies: list[float] = []
    errors = 0
    denied = 0
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        nonlocal errors, denied
        call = methods[index % len(methods)]
        i = index
        next_at = time.perf_counter() + index / rate if rate else 0.0
        while time.perf_counter() < deadline:
            if rate:  # paced: each caller sends one request every concurrency/rate seconds
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                next_at += concurrency / rate
            started = time.perf_counter()
            try:
                response = await call(requests[i % len(requests)], timeout=5)
            except grpc.RpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            if response.status.code != 0:
                denied += 1
            i += 1

    begun = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - begun
    for channel in opened:
        await channel.close()
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50_ms": _pct(latencies, 50) * 1e3, "p99_ms": _pct(latencies, 99) * 1e3,
            "errors": errors, "denied": denied, "requests": len(latencies)}


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def direct_load(port: int, seconds: float, concurrency: int, tokens_file: Path, rate: float = 0.0) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "bench.extauthz_check", "load", "--port", str(port),
                           "--seconds", str(seconds), "--concurrency", str(concurrency), "--tokens", str(tokens_file),
                           "--rate", str(rate)],
                          capture_output=True, text=True, timeout=seconds + 60, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- through Envoy with wrk ---------------------------------------------------------------------------

def envoy_load(listen_port: int, seconds: float, concurrency: int, token: str) -> dict[str, Any]:
    result = run_wrk(f"http://127.0.0.1:{listen_port}/acme/", seconds, concurrency, token)
    return {"rps": result["rps"], "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
            "errors": int(result["non2xx"]), "denied": 0, "requests": int(result["requests"])}


# -- server CPU per request ---------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """User+system CPU seconds of `root` and its descendants (the workers), from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


# -- the run -------------------------------------------------------------------------------------------

def in_process_cost(config: Path, tokens: list[str], redis_url: str) -> dict[str, float]:
    """CPU microseconds per Check inside one process, servicer to response, without gRPC's own cost."""
    from extauthz.authorizer import Authorizer
    from extauthz.config import load_tenants
    from extauthz.revocation import RedisRevocations
    from extauthz.service import AuthorizationService
    from extauthz.tenant_set import build_tenants, retire

    async def main() -> dict[str, float]:
        tenants = await build_tenants(load_tenants(config))
        store = RedisRevocations(redis_url)
        await store.start()
        for _ in range(500):  # the local revocation cache is used once subscribed
            if store.subscribed:
                break
            await asyncio.sleep(0.01)
        full, null = AuthorizationService(Authorizer(tenants, store)), NullAuthorization()
        raw = [check_request({"authorization": f"Bearer {t}"}, "acme").SerializeToString() for t in tokens]
        parse = external_auth_pb2.CheckRequest.FromString
        result = {}
        for name, servicer in (("baseline", null), ("full", full)):
            for request in raw:
                await servicer.Check(parse(request), None)
            rounds = 20_000
            started = time.process_time()
            for n in range(rounds):  # as gRPC does: parse the request, serialize the answer
                answer = await servicer.Check(parse(raw[n % len(raw)]), None)
                if not isinstance(answer, bytes):  # the full service returns its answer serialized
                    answer.SerializeToString()
            result[name] = (time.process_time() - started) / rounds * 1e6
        await store.close()
        await retire(tenants, None)
        return result

    return asyncio.run(main())


def one_figure(how: str, port: int, pid: int, listen: int | None, args: argparse.Namespace, tokens_file: Path,
               token: str) -> dict[str, Any]:
    before, mgets = tree_cpu_seconds(pid), redis_mgets(args.redis_url)
    if how == "direct":
        result = direct_load(port, args.seconds, args.concurrency, tokens_file)
    elif how == "paced":
        result = direct_load(port, args.seconds, args.concurrency, tokens_file, rate=args.rate)
    else:
        assert listen is not None
        result = envoy_load(listen, args.seconds, args.concurrency, token)
    result["cpu_us"] = (tree_cpu_seconds(pid) - before) / max(result["requests"], 1) * 1e6
    # Only the measured server runs checks meanwhile (an idle server's revocation refresh stops).
    result["mget_per_1k"] = (redis_mgets(args.redis_url) - mgets) / max(result["requests"], 1) * 1e3
    return result


def redis_mgets(url: str) -> int:
    """MGET commands Redis has served so far (INFO commandstats)."""
    client = redis.Redis.from_url(url)
    try:
        stats: dict[str, Any] = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get("cmdstat_mget", {}).get("calls", 0))


def median_figure(samples: list[dict[str, Any]]) -> dict[str, Any]:
    best = sorted(samples, key=lambda r: r["rps"])[len(samples) // 2]
    cpu = statistics.median(r["cpu_us"] for r in samples)
    mgets = statistics.median(r["mget_per_1k"] for r in samples)
    return {**best, "cpu_us": cpu, "mget_per_1k": mgets, "samples": [round(r["rps"]) for r in samples]}


def measure_pair(workers: int, ports: dict[str, int], pids: dict[str, int], args: argparse.Namespace,
                 tokens_file: Path, token: str, directory: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Figures for baseline and full, measured in alternation (rounds) so drift on a shared machine hits both."""
    hows = ["direct", *(["paced"] if args.rate else []), *(["envoy"] if shutil.which("wrk") else [])]
    envoys: dict[str, tuple[Proc, int]] = {}
    try:
        if "envoy" in hows:
            for name, port in ports.items():
                envoys[name] = start_envoy(directory, [port], None, {"/acme": "acme"},
                                           max_streams=8 if workers > 1 else 0)
                envoy_load(envoys[name][1], 1, args.concurrency, token)  # warm-up: connections, caches
        results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in ports}
        for how in hows:
            samples: dict[str, list[dict[str, Any]]] = {name: [] for name in ports}
            for _ in range(args.rounds):
                for name, port in ports.items():
                    listen = envoys[name][1] if name in envoys else None
                    samples[name].append(one_figure(how, port, pids[name], listen, args, tokens_file, token))
            for name in ports:
                results[name][how] = median_figure(samples[name])
    finally:
        for proc, _ in envoys.values():
            proc.stop()
    for name in ports:
        print(f"  {name:<9} workers={workers}: " + "  ".join(
            f"{how} {r['rps']:6.0f}/s p50 {r['p50_ms']:5.2f} ms p99 {r['p99_ms']:6.2f} ms cpu {r['cpu_us']:4.0f} us"
            f" mget/1k {r['mget_per_1k']:4.1f}"
            + (f" (errors {r['errors']}, denied {r['denied']})" if r["errors"] or r["denied"] else "")
            for how, r in results[name].items()), flush=True)
    return results


def warm_up(port: int, tokens: list[str], workers: int) -> None:
    """Verify each token in every worker, so measured checks are cache hits."""
    for _ in range(3 * workers):
        for token in tokens:
            for attempt in range(3):  # a loaded machine can make a first Redis round trip time out (503)
                response = check_direct(port, {"authorization": f"Bearer {token}"})
                if response is not None and response.status.code == 0:
                    break
                if attempt == 2:
                    raise SystemExit(f"warm-up check refused: {response}")
                time.sleep(0.2)


def start_before(checkout: Path, config: Path, redis_url: str, workers: int) -> tuple[Proc, int]:
    """`pavilion extauthz` of another checkout: its packages first on the path."""
    port = free_port()
    proc = Proc([PAVILION, "--log-level", "warning", "extauthz", "--config", str(config), "--port", str(port),
                 "--workers", str(workers), "--redis", redis_url],
                name="extauthz-before", env={"PYTHONPATH": str(checkout.resolve())})
    proc.wait_until(lambda: check_direct(port, {}, timeout=0.5) is not None, 30, f"answering Check on {port}")
    return proc, port


def run(args: argparse.Namespace) -> int:
    directory = Path(tempfile.mkdtemp(prefix="bench-extauthz-"))
    issuer = Issuer(algs=("ES256",))
    config = write_tenants(directory / "tenants.yaml", {"acme": issuer})
    tokens = [issuer.token("ES256", sub=f"user-{n}", jti=f"bench-{n}", exp=int(time.time()) + 3600)
              for n in range(TOKENS)]
    tokens_file = directory / "tokens.json"
    tokens_file.write_text(json.dumps(tokens))
    redis, redis_port = start_redis()
    redis_url = args.redis_url = f"redis://127.0.0.1:{redis_port}/0"
    table: dict[int, dict[str, dict[str, dict[str, Any]]]] = {}
    print(f"ext_authz Check: {args.rounds} alternating rounds of {args.seconds:g} s per figure (median shown), "
          f"{args.concurrency} in flight, {TOKENS} tokens"
          + ("" if shutil.which("wrk") else " (wrk not installed: no Envoy figures)"), flush=True)
    try:
        cost = in_process_cost(config, tokens, redis_url)
        print(f"  in-process CPU per Check (parse, servicer, serialize; no gRPC): baseline {cost['baseline']:.1f} us, "
              f"full {cost['full']:.1f} us", flush=True)
        for workers in (1, 2):
            null_port = free_port()
            null = Proc([sys.executable, "-m", "bench.extauthz_check", "serve-null", "--port", str(null_port),
                         "--workers", str(workers)], name="null-check")
            procs = [null]
            try:
                null.wait_until(lambda p=null_port: check_direct(p, {}, timeout=0.5) is not None,  # type: ignore[misc]
                                30, "serving")
                proc, port = start_extauthz(config, redis_url=redis_url, workers=workers)
                procs.append(proc)
                ports = {"baseline": null_port, "full": port}
                pids = {"baseline": null.popen.pid, "full": proc.popen.pid}
                if args.before is not None:
                    before, before_port = start_before(args.before, config, redis_url, workers)
                    procs.append(before)
                    ports["before"], pids["before"] = before_port, before.popen.pid
                for name in ports.keys() - {"baseline"}:
                    warm_up(ports[name], tokens, workers)
                table[workers] = measure_pair(workers, ports, pids, args, tokens_file, tokens[0], directory)
            finally:
                for started in procs:
                    started.stop()
    finally:
        redis.stop()
        shutil.rmtree(directory, ignore_errors=True)
    print("\nfull / baseline: requests per second, and capacity = baseline CPU per Check / full CPU per Check"
          " (1.00 = as cheap as doing nothing)")
    ratios, capacities, before_capacities = [], [], []
    for workers, results in table.items():
        for how in results["baseline"]:
            base, full = results["baseline"][how], results["full"][how]
            rps = full["rps"] / base["rps"]
            if how != "paced":  # the paced figure's req/s ratio is 1 by design: not evidence
                ratios.append(rps)
            capacities.append(base["cpu_us"] / full["cpu_us"])
            print(f"  workers={workers} {how:<6} rps {rps:.2f}  capacity {capacities[-1]:.2f}  "
                  f"p50 {full['p50_ms'] - base['p50_ms']:+.2f} ms  p99 {full['p99_ms'] - base['p99_ms']:+.2f} ms  "
                  f"(rounds/s baseline {base['samples']}, full {full['samples']})")
            if "before" in results:
                earlier = results["before"][how]
                before_capacities.append(base["cpu_us"] / earlier["cpu_us"])
                print(f"  workers={workers} {how:<6} before: rps {earlier['rps'] / base['rps']:.2f}  "
                      f"capacity {base['cpu_us'] / earlier['cpu_us']:.2f}  (rounds/s {earlier['samples']})")
    print(f"\nmedian rps ratio {statistics.median(ratios):.2f} (direct and Envoy figures; lowest {min(ratios):.2f}), "
          f"median capacity ratio {statistics.median(capacities):.2f} (all figures; lowest {min(capacities):.2f})")
    if before_capacities:
        print(f"before: median capacity ratio {statistics.median(before_capacities):.2f} "
              f"(lowest {min(before_capacities):.2f})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.extauthz_check", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=1500.0,
                        help="requests per second of the paced direct figure, below what either server can do, so "
                             "CPU per Check is compared at the same load (0: no paced figure)")
    parser.add_argument("--before", type=Path, default=None,
                        help="another checkout whose ext_authz is measured beside (before/after)")
    sub = parser.add_subparsers(dest="command")
    null = sub.add_parser("serve-null")
    null.add_argument("--port", type=int, required=True)
    null.add_argument("--workers", type=int, default=1)
    load = sub.add_parser("load")
    load.add_argument("--port", type=int, required=True)
    load.add_argument("--seconds", type=float, default=4.0)
    load.add_argument("--concurrency", type=int, default=32)
    load.add_argument("--channels", type=int, default=8)
    load.add_argument("--tokens", type=Path, required=True)
    load.add_argument("--rate", type=float, default=0.0, help="requests per second in all (0: as fast as answered)")
    args = parser.parse_args(argv)
    if args.command == "serve-null":
        return serve_null(args.port, args.workers)
    if args.command == "load":
        tokens = json.loads(args.tokens.read_text())
        print(json.dumps(asyncio.run(_load(args.port, args.seconds, args.concurrency, args.channels, tokens,
                                           args.rate))))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

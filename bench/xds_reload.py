"""Control plane: time from a route YAML change to every connected Envoy having acked it.

For 100, 1,000 and 10,000 routes it starts the control plane and two real Envoys (eu-west and
us-east, so two node groups are translated), then measures, reading acks from /status:
- first sync: Envoys started -> both acked every type (includes Envoy's own start);
- no-op write (baseline): a file rewritten with the same bytes -> the reload counted as unchanged
  (watch + load + validate + hash, nothing pushed);
- change: one route's prefix edited -> new version acked by both Envoys (median of a few edits);
and the control plane's resident memory once synced.

    .venv/bin/python -m bench.xds_reload [--routes 100,1000,10000] [--changes 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controlplane.bootstrap import render_bootstrap
from tests.procs import ENVOY, PAVILION, Proc, free_port

ROUTES_PER_FILE = 500


def write_config(directory: Path, routes: int, listen: int, upstream: int, hosts: int = 0) -> list[Path]:
    """`hosts`: route i serves host `h<i % hosts>.test` (one virtual host each); 0: every route on `*`."""
    services = max(10, routes // 50)
    lines = ["regions: [eu-west, us-east]", "listeners:", f"  - {{name: public, address: 127.0.0.1, port: {listen}}}",
             "services:"]
    for index in range(services):
        lines += [f"  - name: svc-{index}", "    endpoints:",
                  f"      - {{address: 127.0.0.1:{upstream}, region: eu-west}}",
                  f"      - {{address: 127.0.0.1:{upstream + 1}, region: us-east}}"]
    (directory / "services.yaml").write_text("\n".join(lines) + "\n")
    files = []
    for start in range(0, routes, ROUTES_PER_FILE):
        path = directory / f"routes-{start // ROUTES_PER_FILE:03d}.yaml"
        path.write_text(route_file(start, min(routes, start + ROUTES_PER_FILE), services, hosts=hosts))
        files.append(path)
    return files


def route_file(start: int, end: int, services: int, first_prefix: str = "", hosts: int = 0) -> str:
    lines = ["routes:"]
    for index in range(start, end):
        prefix = first_prefix if index == start and first_prefix else f"/s{index % services}/r{index}"
        host = f", hosts: [h{index % hosts}.test]" if hosts else ""
        lines.append(f"  - {{name: r-{index}, match: {{prefix: {prefix}}}, service: svc-{index % services},"
                     f" timeout: 2s{host}}}")
    return "\n".join(lines) + "\n"


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return dict(json.loads(response.read()))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_for(condition: Callable[[dict[str, Any]], bool], status_url: str, timeout: float = 120.0) -> float:
    """Seconds until /status satisfies `condition`, polling every 5 ms."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if condition(get_json(status_url)):
            return time.perf_counter() - started
        time.sleep(0.005)
    raise TimeoutError(f"/status condition not met after {timeout}s: {json.dumps(get_json(status_url))[:2000]}")


Check = Callable[[dict[str, Any]], bool]


def all_synced(nodes: int, version: str | None = None, not_version: str | None = None) -> Check:
    def check(status: dict[str, Any]) -> bool:
        return (len(status["nodes"]) == nodes and status["synced"]
                and all(node["types"] for node in status["nodes"])
                and (version is None or status["version"] == version)
                and (not_version is None or status["version"] != not_version))
    return check


def counted_more(result: str, before: int) -> Check:
    def check(status: dict[str, Any]) -> bool:
        return int(status["reloads"][result]) > before
    return check


def measure(routes: int, changes: int, envoys: int = 2) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix=f"bench-routes-{routes}-"))
    files = write_config(directory, routes, free_port(), free_port())
    xds, admin = free_port(), free_port()
    status_url = f"http://127.0.0.1:{admin}/status"
    procs: list[Proc] = []
    try:
        started = time.perf_counter()
        plane = Proc([PAVILION, "--log-level", "warning", "controlplane", "--config", str(directory),
                      "--xds-port", str(xds), "--admin-port", str(admin)], name="controlplane")
        procs.append(plane)
        plane.wait_http(f"http://127.0.0.1:{admin}/readyz", timeout=120)
        ready = time.perf_counter() - started
        idle_rss = rss_mib(plane.popen.pid)
        started = time.perf_counter()
        for index, region in enumerate(("eu-west", "us-east", "eu-west", "us-east")[:envoys]):
            path = directory.parent / f"{directory.name}-envoy-{index}.yaml"
            path.write_text(render_bootstrap(node_id=f"bench-{index}", region=region,
                                             xds_address=f"127.0.0.1:{xds}", admin_port=free_port()))
            procs.append(Proc([ENVOY, "-c", str(path), "--disable-hot-restart", "--concurrency", "1",
                               "-l", "error"], name=f"envoy-{index}"))
        wait_for(all_synced(envoys), status_url)
        first = time.perf_counter() - started
        status = get_json(status_url)

        noop_times = []
        for _ in range(changes):
            before = status["reloads"]["unchanged"]
            text = files[0].read_text()
            mark = time.perf_counter()
            files[0].write_text(text)
            wait_for(counted_more("unchanged", before), status_url)
            noop_times.append(time.perf_counter() - mark)
            status = get_json(status_url)

        change_times, reload_seconds = [], []
        for attempt in range(changes):
            old = status["version"]
            content = route_file(0, min(routes, ROUTES_PER_FILE), max(10, routes // 50),
                                 first_prefix=f"/changed-{attempt}")
            mark = time.perf_counter()
            files[0].write_text(content)
            wait_for(all_synced(envoys, not_version=old), status_url)
            change_times.append(time.perf_counter() - mark)
            status = get_json(status_url)
            reload_seconds.append(status["applied"]["seconds"])
        nacks = [t.get("last_nack") for node in status["nodes"] for t in node["types"].values() if t.get("last_nack")]
        return {
            "routes": routes, "ready": ready, "first_sync": first,
            "noop": statistics.median(noop_times), "change": statistics.median(change_times),
            "reload": statistics.median(reload_seconds), "rss_idle": idle_rss, "rss": rss_mib(plane.popen.pid),
            "nacks": len(nacks),
        }
    finally:
        for proc in reversed(procs):
            proc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--routes", default="100,1000,10000")
    parser.add_argument("--changes", type=int, default=2, help="edits measured per size (median reported)")
    parser.add_argument("--envoys", type=int, default=2)
    args = parser.parse_args(argv)
    sizes = [int(part) for part in args.routes.split(",")]
    print(f"{args.envoys} Envoys (eu-west, us-east) on one control plane; median of {args.changes} edits\n")
    header = (f"{'routes':>7} {'cp ready':>9} {'1st sync':>9} {'no-op':>8} {'change':>8} {'chg/no-op':>9} "
              f"{'translate':>9} {'RSS idle':>9} {'RSS':>8} {'NACKs':>5}")
    print(header)
    rows = []
    for routes in sizes:
        row = measure(routes, args.changes, args.envoys)
        rows.append(row)
        print(f"{row['routes']:>7} {row['ready']:>8.2f}s {row['first_sync']:>8.2f}s {row['noop'] * 1000:>6.0f}ms "
              f"{row['change'] * 1000:>6.0f}ms {row['change'] / row['noop']:>8.1f}x {row['reload'] * 1000:>7.0f}ms "
              f"{row['rss_idle']:>7.0f}Mi {row['rss']:>6.0f}Mi {row['nacks']:>5}", flush=True)
    print("\ncp ready: control plane start to /readyz (first load+translate); 1st sync: Envoys started to all acked;"
          "\nno-op: same bytes rewritten to reload counted unchanged (baseline); change: one route edited to both"
          "\nEnvoys acked; translate: load+validate+translate for all groups, inside the change (from /status).")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a flood costs with and without a local limit: Envoy's 429 against ext_authz's 401.

    .venv/bin/python -m bench.local_ratelimit [--seconds 5] [--connections 16] [--rounds 1]

One stack from the route YAML (the control plane, one Envoy with 1 worker thread, `pavilion extauthz
--xds`, an echo upstream), one listener, two routes that differ only in `local_rate_limit`:
  (a) guarded: `local_rate_limit: {unit: hour, requests: 1}`, drained before the run, so every
      request of the flood is shed by Envoy with a 429 before ext_authz;
  (b) unguarded: no local limit, so every request of the flood costs a Check; the flood's token is
      not a JWT at all (the cheapest thing for ext_authz to refuse: a 401 without any signature work).
wrk (`-t1`, fixed connections and duration) floods each route in turn, rounds alternating. Printed:
requests per second, p50/p99 latency, the Checks ext_authz counted (pavilion_extauthz_checks_total) and
the CPU ext_authz used per 1000 requests, and (a)'s figures as ratios to (b)'s. No asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.wrk import run_wrk
from tests.extauthz.issuer import Issuer
from tests.integration.gateway_procs import request, running_gateway, start_upstreams, start_xds_service
from tests.procs import free_port

ACME = Issuer(algs=("ES256",))
ROUTES = {"guarded": "/guarded", "unguarded": "/unguarded"}
LABELS = {"guarded": "(a) shed by local_rate_limit", "unguarded": "(b) refused by ext_authz"}
FLOOD_TOKEN = "not-a-jwt"
_TICK = os.sysconf("SC_CLK_TCK")

CONFIG = """regions: [eu-west]
listeners: [{{name: edge, address: 127.0.0.1, port: {port}}}]
services:
  - name: upstream
    endpoints: [{{address: 127.0.0.1:{upstream}, region: eu-west}}]
  - name: extauthz
    protocol: grpc
    endpoints: [{{address: 127.0.0.1:{extauthz}, region: eu-west}}]
extauthz: {{service: extauthz, timeout: 2s}}
tenants:
  - id: acme
    issuer: {issuer}
    audiences: [{audience}]
    algorithms: [ES256]
    jwks: {{inline: {jwks}}}
routes:
  - name: guarded
    match: {{prefix: /guarded}}
    service: upstream
    local_rate_limit: {{unit: hour, requests: 1}}
  - name: unguarded
    match: {{prefix: /unguarded}}
    service: upstream
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def checks(admin: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("pavilion_extauthz_checks_total{"))


def flood(port: int, path: str, seconds: float, connections: int, pid: int, admin: int) -> dict[str, float]:
    before_checks, before_cpu = checks(admin), cpu_seconds(pid)
    result = run_wrk(f"http://127.0.0.1:{port}{path}", seconds, connections, FLOOD_TOKEN)
    time.sleep(1.2)  # ext_authz adds its counts to /metrics every 0.5 s
    result["checks"] = checks(admin) - before_checks
    result["extauthz_cpu_ms_per_1000"] = (cpu_seconds(pid) - before_cpu) / max(result["requests"], 1) * 1e6
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    routes = Path(tempfile.mkdtemp(prefix="bench-local-"))
    port, extauthz_port, extauthz_admin = free_port(), free_port(), free_port()
    upstreams = start_upstreams({"upstream": "eu-west"})
    (routes / "gateway.yaml").write_text(CONFIG.format(
        port=port, upstream=upstreams["upstream"][1], extauthz=extauthz_port, issuer=ACME.issuer,
        audience=ACME.audience, jwks=json.dumps(ACME.jwks())))
    with running_gateway(routes, port, upstreams) as gateway:
        extauthz = start_xds_service("extauthz", gateway.plane, extauthz_port, "extauthz-bench",
                                     admin_port=extauthz_admin)
        try:
            token = {"authorization": f"Bearer {ACME.token('ES256')}"}
            deadline = time.monotonic() + 20
            while request(f"http://127.0.0.1:{port}/unguarded", headers=token).status != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("ext_authz never took its tenants")
                time.sleep(0.1)
            request(f"http://127.0.0.1:{port}/guarded", headers=token)  # the bucket's one token
            time.sleep(1.2)  # the warm-up's Checks counted before the first flood
            runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in ROUTES}
            for _round in range(args.rounds):
                for kind, path in ROUTES.items():
                    runs[kind].append(flood(port, path, args.seconds, args.connections, extauthz.popen.pid,
                                            extauthz_admin))
        finally:
            extauthz.stop()
    print(f"flood of {args.connections} connections for {args.seconds:g} s per route, {args.rounds} round(s); "
          "medians")
    print(f"{'':32} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>9} {'Checks':>8} {'ext_authz CPU ms/1k':>20}")
    medians = {kind: {key: statistics.median(run[key] for run in items) for key in items[0]}
               for kind, items in runs.items()}
    for kind, row in medians.items():
        print(f"{LABELS[kind]:32} {row['rps']:9.0f} {row['p50_ms']:7.2f} {row['p99_ms']:7.2f} {row['non2xx']:9.0f} "
              f"{row['checks']:8.0f} {row['extauthz_cpu_ms_per_1000']:20.1f}")
    shed, checked = medians["guarded"], medians["unguarded"]
    print(f"(a)/(b): req/s {shed['rps'] / checked['rps']:.2f}, p50 {shed['p50_ms'] / checked['p50_ms']:.2f}, "
          f"Checks {shed['checks']:.0f} against {checked['checks']:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

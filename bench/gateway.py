"""The whole gateway's cost: Envoy alone, with jwt_authn, with Pavilion ext_authz, with ext_authz + ratelimit.

    .venv/bin/python -m bench.gateway [--seconds 10] [--connections 32] [--rounds 1] [--upstream envoy|echo]

Four static Envoy edges (1 worker thread each), identical but for their HTTP filters, route every
request to the same upstream:
  (a) alone: no filter but the router;
  (b) jwt_authn: Envoy's native JWT filter, the same ES256 key as a local JWKS, its token cache on;
  (c) ext_authz: `pavilion extauthz --redis` (one process), the token verified once then cached, a
      revocation check per request (local cache fed by Redis pub/sub); the filter chain is the
      control plane's own (controlplane.translate.http_filters), so Envoy sends what it sends in
      production (only the authorization header, 503 on error);
  (d) ext_authz + ratelimit: (c) plus `pavilion ratelimit --redis` with one descriptor per request
      (route, tenant and subject from ext_authz's dynamic metadata, as the control plane generates),
      a limit high enough never to trip, so every request costs one Redis round trip (Redis timeout
      250 ms, so no request is answered by the fallback instead).
The upstream is a separate Envoy answering 200 itself (`--upstream envoy`, the default: cheap, so
the edges' own cost shows), or the Python echo service (`--upstream echo`). wrk (`-t1`, fixed
connections and duration, `--latency`) sends the same valid token to each edge in turn; rounds
alternate between edges so drift on a shared machine hits all four. Printed: requests per second,
p50/p99 latency, non-2xx answers, and ratios to (a) and (b). No asserts.

The bootstraps are built from xds-protos messages: (c) is tests/integration/extauthz_stack.py's,
and the others are derived from it by swapping filters.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.metadata.v3 import metadata_pb2
from google.protobuf import json_format

from bench.wrk import run_wrk
from controlplane.config import model
from controlplane.translate import http_filters
from tests.extauthz.issuer import Issuer
from tests.integration.extauthz_stack import (
    EXT_AUTHZ_FILTER,
    check_direct,
    envoy_bootstrap,
    start_extauthz,
    write_tenants,
)
from tests.integration.gateway_procs import request
from tests.integration.ratelimit_procs import start_ratelimit
from tests.integration.static_envoy import packed, static_cluster
from tests.procs import ENVOY, Proc, free_port, start_echo, start_redis

KINDS = ("alone", "jwt_authn", "ext_authz", "ext_authz+ratelimit")
LABELS = {"alone": "(a) Envoy alone", "jwt_authn": "(b) + jwt_authn", "ext_authz": "(c) + Pavilion ext_authz",
          "ext_authz+ratelimit": "(d) + ext_authz + ratelimit"}
DOMAIN = "bench"
ROUTE = "bench"
RATELIMIT_RULES = f"""
domain: {DOMAIN}
descriptors:
  - key: route
    value: {ROUTE}
    descriptors:
      - key: limit
        value: "0"
        descriptors:
          - key: tenant
            descriptors:
              - key: subject
                rate_limit: {{unit: second, requests_per_unit: 1000000000}}
"""


# -- bootstraps -----------------------------------------------------------------------------------

def _manager(bootstrap: bootstrap_pb2.Bootstrap) -> hcm_pb2.HttpConnectionManager:
    manager = hcm_pb2.HttpConnectionManager()
    bootstrap.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.Unpack(manager)
    return manager


def _store(bootstrap: bootstrap_pb2.Bootstrap, manager: hcm_pb2.HttpConnectionManager) -> None:
    bootstrap.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.CopyFrom(packed(manager))


def jwt_authn_filter(issuer: Issuer) -> hcm_pb2.HttpFilter:
    provider = jwt_pb2.JwtProvider(
        issuer=issuer.issuer, audiences=[issuer.audience],
        local_jwks=base_pb2.DataSource(inline_string=json_format.MessageToJson(_jwks_struct(issuer))),
        forward=True, jwt_cache_config=jwt_pb2.JwtCacheConfig(jwt_cache_size=1000),
        claim_to_headers=[jwt_pb2.JwtClaimToHeader(header_name="x-user-id", claim_name="sub")])
    config = jwt_pb2.JwtAuthentication(
        providers={"demo": provider},
        rules=[jwt_pb2.RequirementRule(match=rc.RouteMatch(prefix="/"),
                                       requires=jwt_pb2.JwtRequirement(provider_name="demo"))])
    return hcm_pb2.HttpFilter(name="envoy.filters.http.jwt_authn", typed_config=packed(config))


def _jwks_struct(issuer: Issuer) -> Any:
    from google.protobuf import struct_pb2

    jwks = struct_pb2.Struct()
    jwks.update(issuer.jwks())
    return jwks


def production_filters(ratelimit: bool) -> list[hcm_pb2.HttpFilter]:
    """The HTTP filter chain exactly as the control plane translates `extauthz:` (and `ratelimit:`)."""
    config = model.Config(
        regions=(), listeners=(), services=(), routes=(),
        extauthz=model.ExtAuthzSettings(service="extauthz", timeout=1.0),
        # Timeouts of 1 s (the example has 250 ms and 50 ms): under wrk's overload a shorter ratelimit
        # timeout lets requests through unchecked (fail open), which would measure skipping the check.
        ratelimit=model.RateLimitSettings(service="ratelimit", domain=DOMAIN, timeout=1.0) if ratelimit else None)
    return http_filters(model.Listener("ingress", "127.0.0.1", 0), config, "edge")


def rate_limit_actions() -> rc.RateLimit:
    """One descriptor per request, as the control plane translates `per: [tenant, subject]`."""
    action = rc.RateLimit.Action

    def from_metadata(key: str) -> rc.RateLimit.Action:
        return action(metadata=action.MetaData(
            descriptor_key=key, source=action.MetaData.DYNAMIC,
            metadata_key=metadata_pb2.MetadataKey(key=EXT_AUTHZ_FILTER,
                                                  path=[metadata_pb2.MetadataKey.PathSegment(key=key)])))

    return rc.RateLimit(actions=[action(generic_key=action.GenericKey(descriptor_key="route", descriptor_value=ROUTE)),
                                 action(generic_key=action.GenericKey(descriptor_key="limit", descriptor_value="0")),
                                 from_metadata("tenant"), from_metadata("subject")])


def edge_bootstrap(kind: str, listen: int, admin: int, upstream: int, extauthz: int, ratelimit: int,
                   issuer: Issuer) -> bootstrap_pb2.Bootstrap:
    bootstrap = envoy_bootstrap(listen, admin, [extauthz], upstream, {"/": "acme"})
    manager = _manager(bootstrap)
    route = manager.route_config.virtual_hosts[0].routes[0]
    router = manager.http_filters[-1]
    if kind in ("alone", "jwt_authn"):
        route.typed_per_filter_config.clear()
        del bootstrap.static_resources.clusters[0]  # extauthz
        del manager.http_filters[:]
        manager.http_filters.extend([jwt_authn_filter(issuer), router] if kind == "jwt_authn" else [router])
    else:
        del manager.http_filters[:]
        manager.http_filters.extend(production_filters(ratelimit=kind == "ext_authz+ratelimit"))
    if kind == "ext_authz+ratelimit":
        route.route.rate_limits.append(rate_limit_actions())
        bootstrap.static_resources.clusters.append(static_cluster("ratelimit", [ratelimit], http2=True))
    _store(bootstrap, manager)
    return bootstrap


def _edge(kind: str, listen: int, admin: int, *, upstream: int, extauthz: int, ratelimit: int,
          issuer: Issuer) -> bootstrap_pb2.Bootstrap:
    return edge_bootstrap(kind, listen, admin, upstream, extauthz, ratelimit, issuer)


def upstream_bootstrap(listen: int, admin: int) -> bootstrap_pb2.Bootstrap:
    """An Envoy that answers 200 itself on every path: the cheapest upstream there is."""
    bootstrap = envoy_bootstrap(listen, admin, [free_port()], None, {"/": "acme"})
    manager = _manager(bootstrap)
    manager.route_config.virtual_hosts[0].routes[0].typed_per_filter_config.clear()
    del manager.http_filters[:-1]
    _store(bootstrap, manager)
    del bootstrap.static_resources.clusters[:]
    return bootstrap


def start_envoy(directory: Path, name: str,
                build: Callable[[int, int], bootstrap_pb2.Bootstrap]) -> tuple[Proc, int, int]:
    """(process, listener port, admin port)."""
    listen, admin = free_port(), free_port()
    path = directory / f"{name}.json"
    path.write_text(json_format.MessageToJson(build(listen, admin)))
    proc = Proc([ENVOY, "-c", str(path), "--concurrency", "1", "--log-level", "warn", "--base-id", str(listen)],
                name=f"envoy-{name}")
    proc.wait_http(f"http://127.0.0.1:{admin}/ready", 60)
    proc.wait_port(listen)
    return proc, listen, admin


def filter_stats(admin: int) -> dict[str, int]:
    """The edge's ext_authz and ratelimit filter counters (ok, denied, over_limit, error,
    failure_mode_allowed): a check that timed out and was let through shows here, not in wrk."""
    # Both filters count under the route's target cluster (`echo`).
    text = request(f"http://127.0.0.1:{admin}/stats?filter=%5Ecluster%5C.echo%5C.(ext_authz%7Cratelimit)%5C.")
    stats: dict[str, int] = {}
    for line in str(text.body.get("text", "")).splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit() and int(value):
            stats[name.removeprefix("cluster.echo.")] = int(value)
    return stats


# -- wrk ------------------------------------------------------------------------------------------

def wrk(port: int, seconds: float, connections: int, token: str) -> dict[str, float]:
    return run_wrk(f"http://127.0.0.1:{port}/v1/bench", seconds, connections, token)


def check_filters(edges: dict[str, int], token: str) -> None:
    """Each edge does what its name says: the auth filters refuse a request without a token, and (d)'s
    answers carry the ratelimit service's RateLimit header (so the service was asked and answered)."""
    for kind, port in edges.items():
        refused = request(f"http://127.0.0.1:{port}/v1/bench").status
        if (refused == 200) != (kind == "alone"):
            raise SystemExit(f"{kind}: a request without a token got {refused}")
    reply = request(f"http://127.0.0.1:{edges['ext_authz+ratelimit']}/v1/bench",
                    headers={"authorization": f"Bearer {token}"})
    if reply.status != 200 or "ratelimit" not in reply.headers:
        raise SystemExit(f"ext_authz+ratelimit: no RateLimit header ({reply.status}, {dict(reply.headers)})")


# -- the run --------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("wrk is not installed: `apt-get install -y wrk` (make bench does it)", file=sys.stderr)
        return 1
    directory = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    issuer = Issuer(algs=("ES256",))
    token = issuer.token("ES256", sub="alice", jti="bench-1", exp=int(time.time()) + 3600)
    procs: list[Proc] = []
    try:
        redis, redis_port = start_redis()
        procs.append(redis)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        if args.upstream == "echo":
            echo, upstream = start_echo("bench-upstream")
        else:
            echo, upstream, _admin = start_envoy(directory, "upstream", upstream_bootstrap)
        procs.append(echo)
        extauthz, extauthz_port = start_extauthz(write_tenants(directory / "tenants.yaml", {"acme": issuer}),
                                                 redis_url=redis_url)
        procs.append(extauthz)
        rules = directory / "ratelimit.yaml"
        rules.write_text(RATELIMIT_RULES)
        # As bench/ratelimit_rls does: with the 10 ms default, Redis replies delayed by the busy cores
        # time out and are answered by the (cheaper) fallback instead of a counted check.
        ratelimit, ratelimit_port, _admin = start_ratelimit(rules, extra=["--redis", redis_url,
                                                                          "--redis-timeout-ms", "250"])
        procs.append(ratelimit)
        answer = check_direct(extauthz_port, {"authorization": f"Bearer {token}"})
        if answer is None or answer.status.code != 0:
            raise SystemExit(f"ext_authz refuses the bench token: {answer}")
        edges: dict[str, int] = {}
        admins: dict[str, int] = {}
        for kind in KINDS:
            build = functools.partial(_edge, kind, upstream=upstream, extauthz=extauthz_port,
                                      ratelimit=ratelimit_port, issuer=issuer)
            proc, port, admin = start_envoy(directory, kind.replace("+", "-"), build)
            procs.append(proc)
            edges[kind] = port
            admins[kind] = admin
            warm = wrk(port, 1, args.connections, token)  # connections, token caches
            if warm["non2xx"] or warm["socket_errors"]:
                raise SystemExit(f"{kind}: warm-up got {warm['non2xx']} non-2xx answers, "
                                 f"{warm['socket_errors']} socket errors")
        check_filters(edges, token)
        print(f"whole gateway: wrk -t1 -c{args.connections} -d{args.seconds:g}s --latency, {args.rounds} round(s), "
              f"upstream {args.upstream}, each Envoy --concurrency 1", flush=True)
        samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
        for _ in range(args.rounds):
            for kind in KINDS:
                samples[kind].append(wrk(edges[kind], args.seconds, args.connections, token))
        report(samples)
        for kind in KINDS[2:]:
            print(f"{kind} filter counters over the whole run (warm-up included): {filter_stats(admins[kind])}")
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return 0


def report(samples: dict[str, list[dict[str, float]]]) -> None:
    median = {kind: sorted(runs, key=lambda r: r["rps"])[len(runs) // 2] for kind, runs in samples.items()}
    print(f"\n{'':<30} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'rps/(a)':>8} {'rps/(b)':>8}  errors")
    for kind in KINDS:
        r = median[kind]
        errors = f"non-2xx {r['non2xx']:.0f}, socket {r['socket_errors']:.0f}"
        rounds = f"  rounds {[round(s['rps']) for s in samples[kind]]}" if len(samples[kind]) > 1 else ""
        ratios = f"{r['rps'] / median['alone']['rps']:8.2f} {r['rps'] / median['jwt_authn']['rps']:8.2f}"
        print(f"{LABELS[kind]:<30} {r['rps']:8.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {ratios}  {errors}{rounds}")
    base = median["alone"]
    added = {kind: (median[kind]["p50_ms"] - base["p50_ms"], median[kind]["p99_ms"] - base["p99_ms"])
             for kind in KINDS[1:]}
    print("\nlatency added to (a), p50 / p99: " + ", ".join(
        f"{kind} {p50:+.2f} / {p99:+.2f} ms" for kind, (p50, p99) in added.items()))
    print(f"median of rounds; spread of (a) across rounds {statistics.pstdev([s['rps'] for s in samples['alone']]):.0f}"
          " req/s" if len(samples["alone"]) > 1 else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk duration per figure (default 10)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; the median is shown")
    parser.add_argument("--upstream", choices=["envoy", "echo"], default="envoy")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

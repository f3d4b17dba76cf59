"""`pavilion ratelimit`: serve Envoy's RateLimitService/ShouldRateLimit. The handler imports the
service lazily so `pavilion --help` stays fast."""

from __future__ import annotations

import argparse
from typing import Any

from pavilion.tls_flags import add_server_tls_arguments, add_xds_tls_arguments
from ratelimit import inspect_cli


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "ratelimit", help="serve envoy.service.ratelimit.v3.RateLimitService (envoyproxy/ratelimit config format)")
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="PATH",
                        help="a YAML file or a directory of them; reloaded on change, the last good one kept")
    source.add_argument("--xds", metavar="HOST:PORT",
                        help="the control plane: rules come from the route YAML's rate_limits over xDS")
    serve.add_argument("--node-id", default=None, help="with --xds: this node's id (default ratelimit-HOST-PID)")
    serve.add_argument("--region", default=None, help="with --xds: this node's region")
    add_xds_tls_arguments(serve)
    add_server_tls_arguments(serve)
    serve.add_argument("--port", type=int, default=None, help="gRPC port (default 8081; env PAVILION_PORT)")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    backend = serve.add_mutually_exclusive_group()
    backend.add_argument("--redis", default=None, metavar="URL",
                         help="shared by every replica: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], rediss://... "
                              "(TLS; ?ssl_ca_certs=PATH), unix:///PATH or "
                              "redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT],.../MASTER (Redis Sentinel); "
                              "env PAVILION_REDIS_URL keeps a password off the command line")
    backend.add_argument("--redis-cluster", default=None, metavar="HOST:PORT,...",
                         help="Redis Cluster seed nodes; with a password or TLS: "
                              "rediss://:PASSWORD@HOST:PORT,HOST:PORT (env PAVILION_REDIS_CLUSTER)")
    serve.add_argument("--redis-timeout-ms", type=float, default=None,
                       help="per request, from send to reply (default 10, below Envoy's 20 ms filter timeout); "
                            "past it the rule's on_backend_error answers")
    serve.add_argument("--workers", type=int, default=None, help="processes serving the one port (SO_REUSEPORT)")
    serve.add_argument("--replicas", type=int, default=None,
                       help="replicas sharing the limits, for on_backend_error: local (limit / replicas each)")
    serve.add_argument("--admin-port", type=int, default=None, help="HTTP /metrics, /healthz, /readyz")
    serve.add_argument("--shadow-mode", action="store_true", default=None,
                       help="count and report, but never answer OVER_LIMIT")
    serve.add_argument("--response-headers", default=None, metavar="STYLE",
                       help="headers for the client: draft (RateLimit, RateLimit-Policy, Retry-After; the default), "
                            "envoyproxy (envoyproxy/ratelimit's RateLimit-Limit/-Remaining/-Reset; names from "
                            "PAVILION_LIMIT_HEADER, _REMAINING_HEADER, _RESET_HEADER) or none")
    serve.add_argument("--merge-domains", action="store_true", default=None,
                       help="let one domain span several config files (envoyproxy/ratelimit's MERGE_DOMAIN_CONFIG)")
    serve.add_argument("--inspect", action="store_true", default=None,
                       help="serve GET /limits on the admin port: each descriptor's rule and counters, read without "
                            "consuming (it shows tenants' limits and usage: off unless asked; env PAVILION_INSPECT)")
    serve.set_defaults(func=_ratelimit)
    inspect_cli.register(subparsers)


def _ratelimit(args: argparse.Namespace) -> int:
    from ratelimit.app import RateLimitSettings, run

    settings = RateLimitSettings.from_env(
        config=args.config, xds=args.xds, node_id=args.node_id, region=args.region,
        xds_ca=args.xds_ca, xds_client_cert=args.xds_client_cert, xds_client_key=args.xds_client_key,
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
        port=args.port, grpc_host=args.host, redis_url=args.redis,
        redis_cluster=args.redis_cluster, redis_timeout_ms=args.redis_timeout_ms, workers=args.workers,
        replicas=args.replicas, metrics_port=args.admin_port, shadow_mode=args.shadow_mode,
        merge_domains=args.merge_domains, response_headers=args.response_headers, inspect=args.inspect,
        log_level=getattr(args, "log_level", None), log_format=getattr(args, "log_format", None))
    return run(settings)

"""`pavilion extauthz` (serve Envoy's Authorization/Check) and `pavilion revoke` (write a revocation).
Handlers import their modules lazily so `pavilion --help` stays fast."""

from __future__ import annotations

import argparse
from typing import Any

from pavilion.tls_flags import add_server_tls_arguments, add_xds_tls_arguments


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser("extauthz", help="serve envoy.service.auth.v3.Authorization/Check (JWT, tenants)")
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="tenant YAML file; reloaded when it changes")
    source.add_argument("--xds", metavar="HOST:PORT",
                        help="the control plane: tenants come from the route YAML over xDS")
    serve.add_argument("--node-id", default=None, help="with --xds: this node's id (default extauthz-HOST-PID)")
    serve.add_argument("--region", default=None, help="with --xds: this node's region")
    add_xds_tls_arguments(serve)
    add_server_tls_arguments(serve)
    serve.add_argument("--port", type=int, default=None, help="gRPC port (default 9191; env PAVILION_PORT)")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--redis", default=None, metavar="URL",
                       help="redis://HOST:PORT/DB (or redis+sentinel://HOST:PORT,.../MASTER_NAME) shared by every "
                            "replica; without it revocations stay in memory")
    serve.add_argument("--workers", type=int, default=None, help="processes serving the one port (SO_REUSEPORT)")
    serve.add_argument("--admin-port", type=int, default=None,
                       help="HTTP /metrics, /healthz, /readyz, /keys (and /.well-known/jwks.json with identity)")
    serve.add_argument("--identity", default=None, metavar="FILE",
                       help="YAML file with an `identity:` section: sign identity assertions for upstreams "
                            "(without it, the --config file's own `identity:` section, if any)")
    serve.set_defaults(func=_extauthz)

    revoke = subparsers.add_parser("revoke", help="revoke a token, a subject's tokens or a tenant's tokens")
    revoke.add_argument("--redis", required=True, metavar="URL", action="append",
                        help="as for `pavilion extauthz --redis`; repeat it for every region's Redis "
                             "(written together, one cut-off instant for all)")
    revoke.add_argument("--tenant", required=True, help="tenant id")
    revoke.add_argument("--issuer", required=True, help="the tenant's issuer (exactly as in the token's iss)")
    what = revoke.add_mutually_exclusive_group(required=True)
    what.add_argument("--jti", help="one token, by its jti (give --expires too)")
    what.add_argument("--subject", help="every token of this subject issued before now")
    what.add_argument("--all", action="store_true", help="every token of the tenant issued before now")
    revoke.add_argument("--expires", type=float, help="with --jti: the token's exp (UNIX seconds)")
    revoke.add_argument("--ttl", default=None, help="with --subject/--all: keep the cut-off this long (e.g. 24h); "
                        "default forever")
    revoke.set_defaults(func=_revoke)

    from extauthz.identity_cli import register as register_identity_key  # light: its handlers import lazily

    register_identity_key(subparsers)


def _extauthz(args: argparse.Namespace) -> int:
    from extauthz.app import ExtAuthzSettings, run

    settings = ExtAuthzSettings.from_env(config=args.config, xds=args.xds, node_id=args.node_id, region=args.region,
                                         xds_ca=args.xds_ca, xds_client_cert=args.xds_client_cert,
                                         xds_client_key=args.xds_client_key, tls_cert=args.tls_cert,
                                         tls_key=args.tls_key, tls_client_ca=args.tls_client_ca, port=args.port,
                                         grpc_host=args.host,
                                         redis_url=args.redis, workers=args.workers, metrics_port=args.admin_port,
                                         identity=args.identity)
    return run(settings)


def _revoke(args: argparse.Namespace) -> int:
    from extauthz.revoke import run_revoke

    return run_revoke(args)

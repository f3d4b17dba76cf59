"""`pavilion` subcommands of the control plane. Handlers import their modules lazily so
`pavilion --help` stays fast."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    validate = subparsers.add_parser("validate", help="check a route YAML directory; one line per problem")
    validate.add_argument("directory", help="directory of *.yaml route files (or one file)")
    validate.add_argument("--no-envoy", action="store_true", help="skip the check with `envoy --mode validate`")
    validate.add_argument("--format", choices=("text", "github", "json"), default="text",
                          help="text (default); github: GitHub Actions annotations on the files; json: for other CI")
    validate.set_defaults(func=_validate)

    schema = subparsers.add_parser("schema", help="print the route YAML's JSON Schema, for editors")
    schema.set_defaults(func=_schema)

    serve = subparsers.add_parser("controlplane", help="serve xDS (ADS) to Envoy from a route YAML directory")
    serve.add_argument("--config", required=True, help="directory of route YAML files")
    serve.add_argument("--xds-port", type=int, default=18000)
    serve.add_argument("--admin-port", type=int, default=18001)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind both ports on")
    serve.add_argument("--xds-tls-cert", metavar="FILE",
                       help="PEM certificate chain: serve xDS over TLS (with --xds-tls-key)")
    serve.add_argument("--xds-tls-key", metavar="FILE", help="PEM private key of --xds-tls-cert")
    serve.add_argument("--xds-client-ca", metavar="FILE",
                       help="PEM CA bundle: require xDS clients to present a certificate it signed (mTLS)")
    serve.add_argument("--peers", action="append", metavar="HOST:PORT",
                       help="the admin port of the other replicas (a name stands for every address it resolves "
                            "to): a staged rollout releases a stage once every replica is as far")
    serve.set_defaults(func=_controlplane)

    status = subparsers.add_parser("status", help="per route and per proxy: accepted, resolved, programmed, acked")
    status.add_argument("--admin", action="append", metavar="HOST:PORT",
                        help="the control plane's admin API; once per replica to merge their views")
    status.add_argument("--replicas", action="append", metavar="HOST:PORT",
                        help="ask every address HOST resolves to (a headless Service: every replica)")
    status.add_argument("--json", action="store_true",
                        help="print the JSON of /status and /status/routes (with several replicas, of each)")
    status.add_argument("--version", metavar="VERSION",
                        help="healthy only once every replica serves this config version (`pavilion validate` "
                             "prints it)")
    status.add_argument("--wait", metavar="DURATION",
                        help="ask again every second until healthy (and serving --version), for up to this long, "
                             "like 10m: a deploy pipeline's gate")
    status.set_defaults(func=_status)

    plan = subparsers.add_parser("plan", help="what serving DIR would change in the xDS served now (exit 2: changes)")
    plan.add_argument("directory", help="directory of route YAML files")
    plan.add_argument("--admin", required=True, help="HOST:PORT of the control plane's admin API")
    plan.add_argument("--role", default="edge")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=_plan)

    bootstrap = subparsers.add_parser("envoy-bootstrap", help="print an Envoy bootstrap pointing at the control plane")
    bootstrap.add_argument("--node-id", required=True)
    bootstrap.add_argument("--region", required=True)
    bootstrap.add_argument("--role", default="edge")
    bootstrap.add_argument("--xds-address", required=True, help="HOST:PORT of the control plane's xDS port")
    bootstrap.add_argument("--admin-port", type=int, default=9901)
    bootstrap.add_argument("--delta", action="store_true",
                           help="use Delta (incremental) xDS: api_type DELTA_GRPC instead of State of the World")
    bootstrap.add_argument("--xds-ca", metavar="FILE",
                           help="PEM CA bundle to verify the control plane with: reach xDS over TLS")
    bootstrap.add_argument("--xds-client-cert", metavar="FILE",
                           help="PEM client certificate Envoy presents to the control plane (mTLS; with --xds-ca)")
    bootstrap.add_argument("--xds-client-key", metavar="FILE", help="PEM private key of --xds-client-cert")
    bootstrap.add_argument("--xds-server-name", metavar="NAME",
                           help="SNI sent to the control plane (default: the host of --xds-address when a DNS name)")
    bootstrap.set_defaults(func=_bootstrap)


def _validate(args: argparse.Namespace) -> int:
    from controlplane.config.check import run_validate

    return run_validate(args)


def _schema(args: argparse.Namespace) -> int:
    from controlplane.config.schema import print_schema

    return print_schema(args)


def _controlplane(args: argparse.Namespace) -> int:
    from controlplane.app import run

    return run(args)


def _bootstrap(args: argparse.Namespace) -> int:
    from controlplane.bootstrap import run_bootstrap

    return run_bootstrap(args)


def _status(args: argparse.Namespace) -> int:
    from controlplane.status_cli import run_status

    return run_status(args)


def _plan(args: argparse.Namespace) -> int:
    from controlplane.plan import run_plan

    return run_plan(args)

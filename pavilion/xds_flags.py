"""The command-line flags of a service's xDS client over TLS, apart from the client itself so that
`pavilion --help` does not import gRPC. The names are those of `pavilion envoy-bootstrap`'s."""

from __future__ import annotations

from typing import Any

__all__ = ["add_xds_tls_arguments"]


def add_xds_tls_arguments(parser: Any) -> None:
    """The flags of a service's xDS client over TLS: the same names as `pavilion envoy-bootstrap`'s."""
    parser.add_argument("--xds-ca", default=None, metavar="FILE",
                        help="with --xds: reach the control plane over TLS, trusting this CA bundle (PEM)")
    parser.add_argument("--xds-client-cert", default=None, metavar="FILE",
                        help="with --xds-ca: this client certificate (PEM), for a control plane that requires one")
    parser.add_argument("--xds-client-key", default=None, metavar="FILE", help="the key of --xds-client-cert (PEM)")

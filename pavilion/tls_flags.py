"""The command-line flags of a service's TLS, apart from the code that reads the files so that
`pavilion --help` does not import gRPC: its xDS client's (the names of `pavilion envoy-bootstrap`'s)
and its own gRPC port's (read by pavilion.server_tls)."""

from __future__ import annotations

from typing import Any

__all__ = ["add_server_tls_arguments", "add_xds_tls_arguments"]


def add_xds_tls_arguments(parser: Any) -> None:
    """The flags of a service's xDS client over TLS: the same names as `pavilion envoy-bootstrap`'s."""
    parser.add_argument("--xds-ca", default=None, metavar="FILE",
                        help="with --xds: reach the control plane over TLS, trusting this CA bundle (PEM)")
    parser.add_argument("--xds-client-cert", default=None, metavar="FILE",
                        help="with --xds-ca: this client certificate (PEM), for a control plane that requires one")
    parser.add_argument("--xds-client-key", default=None, metavar="FILE", help="the key of --xds-client-cert (PEM)")


def add_server_tls_arguments(parser: Any) -> None:
    """The flags of a service's own gRPC port over TLS (health and reflection included; the admin HTTP port
    stays plaintext for kubelet's probes)."""
    parser.add_argument("--tls-cert", default=None, metavar="FILE",
                        help="serve the gRPC port over TLS with this certificate chain (PEM, leaf first; "
                             "env PAVILION_TLS_CERT); a renewed file is served without a restart")
    parser.add_argument("--tls-key", default=None, metavar="FILE",
                        help="the unencrypted private key of --tls-cert (PEM; env PAVILION_TLS_KEY)")
    parser.add_argument("--tls-client-ca", default=None, metavar="FILE",
                        help="with --tls-cert: require client certificates signed by this CA bundle (mTLS; "
                             "env PAVILION_TLS_CLIENT_CA)")

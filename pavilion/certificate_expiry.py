"""When the certificates a process presents expire, as gauges of its metrics.

- `pavilion_grpc_server_certificate_expiry_timestamp_seconds{file}`: the certificate a gRPC port serves
  (the control plane's `--xds-tls-cert`, ext_authz's and ratelimit's `--tls-cert`). Set when the server's
  TLS is made and again after each renewal pavilion.tls_rotation accepts, so it is the certificate the
  next connection gets: a value that keeps counting down means the file was not renewed.
- `pavilion_xds_client_certificate_expiry_timestamp_seconds{file}`: a service's xDS client certificate
  (`--xds-client-cert`). Set at start and again after each renewal pavilion.xds_client_tls accepts (seen
  before a new ADS stream or by the once-a-minute check), so it is the certificate the next connection to
  the control plane presents: a value that keeps counting down means the file was not renewed.

A label per file keeps a gauge absent (not 0, which would read as expired in 1970) in a process that has
no such certificate.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from pavilion.log import get_logger
from pavilion.metrics import NAMESPACE, Gauge
from pavilion.pem_files import earliest_not_after, read_pem_file

__all__ = ["EXPIRES_SOON", "GRPC_SERVER_CERTIFICATE_EXPIRY", "XDS_CLIENT_CERTIFICATE_EXPIRY",
           "observe_served_certificate", "observe_xds_client_certificate"]

log = get_logger(__name__)

# livemin: with --workers, every worker serves (and polls) the same files; the earliest of the live ones is shown.
GRPC_SERVER_CERTIFICATE_EXPIRY = Gauge("grpc_server_certificate_expiry_timestamp_seconds",
                                       "Earliest notAfter (Unix time) of the certificate chain the gRPC port serves "
                                       "to new connections (--tls-cert, --xds-tls-cert), renewals included.",
                                       ["file"], namespace=NAMESPACE, multiprocess_mode="livemin")
XDS_CLIENT_CERTIFICATE_EXPIRY = Gauge("xds_client_certificate_expiry_timestamp_seconds",
                                      "Earliest notAfter (Unix time) of the xDS client certificate chain "
                                      "(--xds-client-cert) the next connection presents, renewals included.",
                                      ["file"], namespace=NAMESPACE, multiprocess_mode="livemin")
EXPIRES_SOON = datetime.timedelta(days=30)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def observe_served_certificate(path: str, chain: bytes,
                               now: datetime.datetime | None = None) -> datetime.datetime | None:
    """Set the serving gauge for the chain read from `path` and return its earliest notAfter (None, and no
    gauge, for a chain without a readable certificate, which the start-up checks refuse anyway); a warning
    is logged when it is within 30 days. Called on grpc's thread by a rotation: parses one chain, never raises
    for a bad one."""
    expiry = earliest_not_after(chain)
    if expiry is None:
        return None
    GRPC_SERVER_CERTIFICATE_EXPIRY.labels(path).set(expiry.timestamp())
    if expiry <= (now or _now()) + EXPIRES_SOON:
        log.warning("grpc_server_certificate_expires_soon", file=path, not_after=expiry.isoformat())
    return expiry


def observe_xds_client_certificate(path: str, chain: bytes | None = None,
                                   now: datetime.datetime | None = None) -> datetime.datetime | None:
    """Set the gauge for the certificate at `path` (nothing without one), from `chain` when it was read
    already, and return its earliest notAfter; a warning is logged when it is within 30 days. The file was
    checked at start: an unreadable one is logged and left out, never fatal here."""
    if not path:
        return None
    try:
        expiry = earliest_not_after(chain if chain is not None else read_pem_file(Path(path)))
    except ValueError as exc:
        log.warning("xds_client_certificate_unreadable", detail=str(exc))
        return None
    if expiry is None:
        return None
    XDS_CLIENT_CERTIFICATE_EXPIRY.labels(path).set(expiry.timestamp())
    if expiry <= (now or _now()) + EXPIRES_SOON:
        log.warning("xds_client_certificate_expires_soon", file=path, not_after=expiry.isoformat())
    return expiry

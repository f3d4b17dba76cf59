"""When a service's xDS client certificate (`--xds-client-cert`) expires, as a gauge of its metrics.

ext_authz and ratelimit read the certificate once at start (the gRPC channel keeps the bytes), so the
gauge is what the running process presents: a renewed file takes effect, and shows here, after a
restart. A label per file keeps the gauge absent (not 0, which would read as expired in 1970) in a
process that has no client certificate.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from pavilion.log import get_logger
from pavilion.metrics import NAMESPACE, Gauge
from pavilion.pem_files import earliest_not_after, read_pem_file

__all__ = ["EXPIRES_SOON", "XDS_CLIENT_CERTIFICATE_EXPIRY", "observe_xds_client_certificate"]

log = get_logger(__name__)

# livemin: with --workers, every worker reads the same file; the earliest of the live ones is shown.
XDS_CLIENT_CERTIFICATE_EXPIRY = Gauge("xds_client_certificate_expiry_timestamp_seconds",
                                      "Earliest notAfter (Unix time) of the xDS client certificate chain "
                                      "(--xds-client-cert), as loaded at start.", ["file"], namespace=NAMESPACE,
                                      multiprocess_mode="livemin")
EXPIRES_SOON = datetime.timedelta(days=30)


def observe_xds_client_certificate(path: str, now: datetime.datetime | None = None) -> datetime.datetime | None:
    """Set the gauge for the certificate at `path` (nothing without one) and return its earliest notAfter;
    a warning is logged when it is within 30 days. The file was checked at start: an unreadable one is
    logged and left out, never fatal here."""
    if not path:
        return None
    try:
        expiry = earliest_not_after(read_pem_file(Path(path)))
    except ValueError as exc:
        log.warning("xds_client_certificate_unreadable", detail=str(exc))
        return None
    if expiry is None:
        return None
    XDS_CLIENT_CERTIFICATE_EXPIRY.labels(path).set(expiry.timestamp())
    if expiry <= (now or datetime.datetime.now(datetime.UTC)) + EXPIRES_SOON:
        log.warning("xds_client_certificate_expires_soon", file=path, not_after=expiry.isoformat())
    return expiry

"""The xDS port's own TLS (`pavilion controlplane --xds-tls-cert/--xds-tls-key/--xds-client-ca`).

With listener TLS the ADS stream carries private keys (SDS secrets), so it must be encrypted unless
it stays on loopback. The files are read and checked at start by pavilion.server_tls, the same checks
as ext_authz's and ratelimit's `--tls-*` flags. Every problem is a ConfigError naming the flag and the
file, never the key's bytes.
"""

from __future__ import annotations

import dataclasses

from pavilion.server_tls import XDS_FLAGS, ServerTLS
from pavilion.server_tls import load_server_tls as _load

__all__ = ["load_server_tls"]


def load_server_tls(cert: str | None, key: str | None, client_ca: str | None = None) -> ServerTLS | None:
    """The server TLS of the flags, or None when neither certificate nor key is given."""
    tls = _load(cert, key, client_ca, XDS_FLAGS)
    if tls is None:
        return None
    # Served as read at start, without the file rotation ext_authz and ratelimit have (pavilion.tls_rotation):
    # the expiry gauge and /status (controlplane/cert_expiry) show the certificate read at start, and would
    # go on counting down a certificate no longer served. A renewal here takes a restart.
    return dataclasses.replace(tls, source=None)

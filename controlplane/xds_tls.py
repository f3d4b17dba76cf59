"""The xDS port's own TLS (`pavilion controlplane --xds-tls-cert/--xds-tls-key/--xds-client-ca`).

With listener TLS the ADS stream carries private keys (SDS secrets), so it must be encrypted unless
it stays on loopback. The files are read and checked at start by pavilion.server_tls, the same checks
as ext_authz's and ratelimit's `--tls-*` flags, and followed like theirs (pavilion.tls_rotation): a
renewed certificate, key or client CA is served to new connections without a restart. Every problem is a
ConfigError naming the flag and the file, never the key's bytes.
"""

from __future__ import annotations

from pavilion.server_tls import XDS_FLAGS, ServerTLS
from pavilion.server_tls import load_server_tls as _load

__all__ = ["load_server_tls"]


def load_server_tls(cert: str | None, key: str | None, client_ca: str | None = None) -> ServerTLS | None:
    """The server TLS of the flags, or None when neither certificate nor key is given."""
    return _load(cert, key, client_ca, XDS_FLAGS)

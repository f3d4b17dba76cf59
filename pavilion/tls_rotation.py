"""Server credentials that follow their files: a renewed certificate, key or client CA is served
without a restart.

grpc calls the fetcher of `grpc.dynamic_ssl_server_credentials` before the TLS handshake of every
new connection (grpc.aio servers included), on one of its own threads, never the event loop's. The
fetcher stats the files (a few syscalls) and reads and checks them again only when a stamp changed.
Connections already open keep the certificate they were made with: Envoy's long-lived HTTP/2
connections to ext_authz and ratelimit move to a new certificate when they reconnect.

A new set of files that fails the start-up checks (a key that is not the certificate's while a
non-atomic copy is half done, an unreadable file) is refused and logged; the certificate in use
keeps being served, and the next change of the files is tried again. (grpc itself, as of grpcio 1.85,
also keeps what it has when the fetcher raises or hands it a key that is not the certificate's, but
says only "Failed fetching new server credentials"; the checks here name the flag and the file.)
"""

from __future__ import annotations

import threading

import grpc

from pavilion.errors import ConfigError
from pavilion.log import get_logger
from pavilion.pem_files import earliest_not_after
from pavilion.server_tls import ServerTLS, TlsSource

log = get_logger(__name__)

__all__ = ["RotatingCertificates", "server_credentials"]


def server_credentials(tls: ServerTLS) -> grpc.ServerCredentials:
    """Credentials serving `tls`, requiring client certificates when it has a client CA; re-read on
    change when `tls` came from files."""
    require_client = tls.client_ca is not None
    if tls.source is None:
        return grpc.ssl_server_credentials([(tls.private_key, tls.cert_chain)], root_certificates=tls.client_ca,
                                           require_client_auth=require_client)
    rotating = RotatingCertificates(tls, tls.source)
    return grpc.dynamic_ssl_server_credentials(_configuration(tls), rotating,
                                               require_client_authentication=require_client)


class RotatingCertificates:
    """The certificate configuration fetcher: None (no change) unless the files changed and pass the checks."""

    def __init__(self, tls: ServerTLS, source: TlsSource) -> None:
        self.source = source
        self.current = tls
        self.reloads = 0
        # Stamped after the read at start: a file replaced between read and stamp is read again at
        # the first connection, which costs one needless reload, never a missed one.
        self._stamps = source.stamps()
        self._lock = threading.Lock()  # grpc may call from several threads at once

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            stamps = self.source.stamps()
            if stamps == self._stamps:
                return None
            self._stamps = stamps
            try:
                tls = self.source.load()
            except ConfigError as exc:
                log.warning("server_tls_reload_refused", detail=str(exc), kept="the certificate in use")
                return None
            if (tls.cert_chain, tls.private_key, tls.client_ca) == (
                    self.current.cert_chain, self.current.private_key, self.current.client_ca):
                return None  # touched, or relinked to the same content
            self.current = tls
            self.reloads += 1
        expiry = earliest_not_after(tls.cert_chain)
        log.info("server_tls_reloaded", cert=self.source.cert, client_ca=self.source.client_ca or None,
                 not_after=expiry.isoformat() if expiry else None)
        return _configuration(tls)


def _configuration(tls: ServerTLS) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(tls.private_key, tls.cert_chain)],
                                                     root_certificates=tls.client_ca)

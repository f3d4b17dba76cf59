"""Server credentials that follow their files: a renewed certificate, key or client CA is served
without a restart, and `pavilion_grpc_server_certificate_expiry_timestamp_seconds` follows it.

grpc calls the fetcher of `grpc.dynamic_ssl_server_credentials` before the TLS handshake of every
new connection (grpc.aio servers included), on one of its own threads, never the event loop's. The
fetcher stats the files (a few syscalls) and reads and checks them again only when a stamp changed.
Connections already open keep the certificate they were made with: Envoy's long-lived HTTP/2
connections to ext_authz and ratelimit (and its ADS stream to the control plane) move to a new
certificate when they reconnect.

Because such a connection can outlive a renewal by weeks, GrpcServer also runs `poll` (every minute, in
a worker thread): a renewal is then checked and measured without waiting for a new connection, and handed
to grpc at the next handshake. So the expiry gauge is the certificate the next connection gets, and an
expiry alert firing means the file was not renewed, not that no client reconnected.

A new set of files that fails the start-up checks (a key that is not the certificate's while a
non-atomic copy is half done, an unreadable file) is refused and logged; the certificate in use
keeps being served, and the next change of the files is tried again. (grpc itself, as of grpcio 1.85,
also keeps what it has when the fetcher raises or hands it a key that is not the certificate's, but
says only "Failed fetching new server credentials"; the checks here name the flag and the file.)
"""

from __future__ import annotations

import asyncio
import datetime
import threading
from collections.abc import Callable

import grpc

from pavilion.certificate_expiry import observe_served_certificate
from pavilion.errors import ConfigError
from pavilion.log import get_logger
from pavilion.server_tls import ServerTLS, TlsSource

log = get_logger(__name__)

__all__ = ["POLL_SECONDS", "OnServed", "RotatingCertificates", "server_credentials"]

POLL_SECONDS = 60.0

# (the certificate file, its earliest notAfter): told at start and after each accepted renewal.
OnServed = Callable[[str, datetime.datetime], None]


def server_credentials(tls: ServerTLS, on_served: OnServed | None = None,
                       ) -> tuple[grpc.ServerCredentials, RotatingCertificates | None]:
    """Credentials serving `tls`, requiring client certificates when it has a client CA, and the fetcher
    that re-reads the files on change when `tls` came from files (None for bytes given in memory)."""
    require_client = tls.client_ca is not None
    if tls.source is None:
        return grpc.ssl_server_credentials([(tls.private_key, tls.cert_chain)], root_certificates=tls.client_ca,
                                           require_client_auth=require_client), None
    rotating = RotatingCertificates(tls, tls.source, on_served)
    rotating.measure(tls)
    return grpc.dynamic_ssl_server_credentials(_configuration(tls), rotating,
                                               require_client_authentication=require_client), rotating


class RotatingCertificates:
    """The certificate configuration fetcher: None (no change) unless the files changed and pass the checks."""

    def __init__(self, tls: ServerTLS, source: TlsSource, on_served: OnServed | None = None) -> None:
        self.source = source
        self.current = tls
        self.reloads = 0
        self._on_served = on_served
        # Stamped after the read at start: a file replaced between read and stamp is read again at
        # the first connection, which costs one needless reload, never a missed one.
        self._stamps = source.stamps()
        self._pending: grpc.ServerCertificateConfiguration | None = None  # accepted, not yet handed to grpc
        self._lock = threading.Lock()  # grpc may call from several threads at once, and poll from another

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            self._check()
            pending, self._pending = self._pending, None
            return pending

    def check(self) -> bool:
        """Read the files again if they changed; True when a renewal was accepted (grpc gets it at the next
        handshake)."""
        with self._lock:
            return self._check()

    async def poll(self, interval: float | None = None) -> None:
        """`check` every `interval` seconds (POLL_SECONDS) in a worker thread, until cancelled."""
        while True:
            await asyncio.sleep(POLL_SECONDS if interval is None else interval)
            await asyncio.to_thread(self.check)

    def _check(self) -> bool:
        stamps = self.source.stamps()
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        try:
            tls = self.source.load()
        except ConfigError as exc:
            log.warning("server_tls_reload_refused", detail=str(exc), kept="the certificate in use")
            return False
        if (tls.cert_chain, tls.private_key, tls.client_ca) == (
                self.current.cert_chain, self.current.private_key, self.current.client_ca):
            return False  # touched, or relinked to the same content
        self.current = tls
        self.reloads += 1
        self._pending = _configuration(tls)
        expiry = self.measure(tls)
        log.info("server_tls_reloaded", cert=self.source.cert, client_ca=self.source.client_ca or None,
                 not_after=expiry.isoformat() if expiry else None)
        return True

    def measure(self, tls: ServerTLS) -> datetime.datetime | None:
        """Set the expiry gauge and tell `on_served`; never raises (it runs inside grpc's fetcher, where an
        exception would only be logged by grpc as a failed fetch, and after the renewal was accepted)."""
        try:
            expiry = observe_served_certificate(self.source.cert, tls.cert_chain)
            if expiry is not None and self._on_served is not None:
                self._on_served(self.source.cert, expiry)
        except Exception:  # the boundary to grpc's thread: the renewal is served whatever a gauge does
            log.exception("server_tls_expiry_not_measured", cert=self.source.cert)
            return None
        return expiry


def _configuration(tls: ServerTLS) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(tls.private_key, tls.cert_chain)],
                                                     root_certificates=tls.client_ca)

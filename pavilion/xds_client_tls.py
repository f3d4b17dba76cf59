"""The TLS credentials of a service's xDS client (`--xds-ca`, `--xds-client-cert`, `--xds-client-key`),
following their files: a renewed client certificate (cert-manager's `..data` swap) or a new CA bundle is
used without a restart, and `pavilion_xds_client_certificate_expiry_timestamp_seconds` follows it.

A gRPC channel keeps the TLS session it made, so new credentials take effect on the next channel: the
ADS stream's next reconnect, never by cutting the open stream. Why not at once: an open stream keeps
working whatever happens to the files (TLS checks certificates only at the handshake), while a
reconnect made for the new files would fail, and leave the service without a stream, whenever the
renewal is not yet accepted on the other side (a client CA rotated at the control plane after the
client's certificate, a certificate from a new CA written before the control plane trusts it). This is
what Envoy and our own gRPC servers do too (pavilion/tls_rotation.py): open connections keep what they
were made with. The files are checked before each new stream and once a minute meanwhile, so the gauge
and the logs show a renewal while the stream stays open.

A set of files that fails the start-up checks (a key that is not the certificate's while a non-atomic
copy is half done, an unreadable file, no PEM certificate) is refused and logged without any key bytes;
the credentials in use are kept, and the next change of the files is tried again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from pavilion.certificate_expiry import observe_xds_client_certificate
from pavilion.errors import ConfigError
from pavilion.log import get_logger
from pavilion.pem_files import pem_certificates, read_pem_file
from pavilion.server_tls import FileStamps, TlsFlags, file_stamp, load_server_tls
from pavilion.tls_rotation import POLL_SECONDS

log = get_logger(__name__)

__all__ = ["CHECK_SECONDS", "XDS_CLIENT_FLAGS", "XdsClientCredentials", "XdsClientTLS", "load_xds_client_tls",
           "xds_credentials"]

XDS_CLIENT_FLAGS = TlsFlags("--xds-client-cert", "--xds-client-key", "--xds-ca")
CHECK_SECONDS = 1.0  # reconnections closer together than this reuse the last look at the files


@dataclass(frozen=True)
class XdsClientTLS:
    ca: bytes
    cert_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)


def load_xds_client_tls(ca: str, client_cert: str = "", client_key: str = "") -> XdsClientTLS:
    """The files read and checked (a CA bundle with a certificate; a client certificate whose first member
    is the key's); ConfigError names the flag and the file, never the key's bytes."""
    try:
        ca_bytes = read_pem_file(Path(ca))
    except ValueError as exc:
        raise ConfigError(str(exc), path=XDS_CLIENT_FLAGS.client_ca) from None
    if not pem_certificates(ca_bytes):
        raise ConfigError(f"{ca} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                          path=XDS_CLIENT_FLAGS.client_ca)
    pair = load_server_tls(client_cert, client_key, None, XDS_CLIENT_FLAGS)  # the same checks as a server's pair
    if pair is None:
        return XdsClientTLS(ca_bytes)
    return XdsClientTLS(ca_bytes, pair.cert_chain, pair.private_key)


class XdsClientCredentials:
    """The channel credentials of the files, made again when the files change and pass the checks."""

    def __init__(self, ca: str, client_cert: str = "", client_key: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.files = (ca, client_cert, client_key)
        self.cert = client_cert
        self.current = load_xds_client_tls(*self.files)  # ConfigError at start: the service exits 2
        # Stamped after the read: a file replaced in between is read once more, never missed.
        self._stamps = self._stat()
        self.credentials = _channel_credentials(self.current)
        self.reloads = 0
        self._clock = clock
        self._checked = clock()
        self._lock = threading.Lock()  # `check` runs in worker threads: the poll's and a reconnection's

    def _stat(self) -> FileStamps:
        return tuple(file_stamp(path) for path in self.files if path)

    def check(self) -> bool:
        """Read the files again if a stamp changed; True when new credentials were made. Blocking (stat,
        read, parse): call it in a worker thread."""
        with self._lock:
            self._checked = self._clock()
            stamps = self._stat()
            if stamps == self._stamps:
                return False
            self._stamps = stamps
            try:
                tls = load_xds_client_tls(*self.files)
            except ConfigError as exc:
                log.warning("xds_client_tls_reload_refused", detail=str(exc), kept="the credentials in use")
                return False
            if tls == self.current:
                return False  # touched, or relinked to the same content
            self.current, self.credentials = tls, _channel_credentials(tls)
            self.reloads += 1
        expiry = observe_xds_client_certificate(self.cert, tls.cert_chain) if tls.cert_chain else None
        log.info("xds_client_tls_reloaded", cert=self.cert or None, ca=self.files[0],
                 not_after=expiry.isoformat() if expiry else None, applies="at the next connection")
        return True

    async def for_new_channel(self) -> grpc.ChannelCredentials:
        """The credentials for a channel about to open, after a look at the files unless one was taken
        less than CHECK_SECONDS ago."""
        if self._clock() - self._checked >= CHECK_SECONDS:
            await asyncio.to_thread(self.check)
        return self.credentials

    async def poll(self, interval: float = POLL_SECONDS) -> None:
        """`check` every `interval` seconds in a worker thread, until cancelled: the gauge and the log show a
        renewal while the stream stays open."""
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.check)


def _channel_credentials(tls: XdsClientTLS) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.private_key,
                                        certificate_chain=tls.cert_chain)


def xds_credentials(ca: str, client_cert: str = "", client_key: str = "") -> XdsClientCredentials | None:
    """TLS credentials for the xDS channel from the files given (None without a CA: plaintext), following
    the files. ConfigError names the flag of a file that is missing, unreadable or given without its pair."""
    if not ca:
        if client_cert or client_key:
            raise ConfigError("--xds-client-cert and --xds-client-key need --xds-ca")
        return None
    if bool(client_cert) != bool(client_key):
        raise ConfigError("--xds-client-cert and --xds-client-key go together")
    return XdsClientCredentials(ca, client_cert, client_key)

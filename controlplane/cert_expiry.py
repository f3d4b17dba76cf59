"""When the certificates the control plane serves expire: a gauge per SDS Secret, and /status's list
of what expires within 30 days (the SDS secrets and the xDS port's own certificate, whose gauge is
pavilion.certificate_expiry's `pavilion_grpc_server_certificate_expiry_timestamp_seconds`, as for every
gRPC port).

Computed from the Secret resources themselves (`tls_certificate.certificate_chain` and
`validation_context.trusted_ca`), not from the config model, so every kind of secret translation
produces (listener certificates, client CAs, upstream TLS) is covered without knowing where it came
from. The value is the earliest notAfter among the PEM's certificates: a chain stops verifying when
any member expires, and a CA bundle stops accepting the client certificates issued under a member
that expired (a bundle that still holds a retired CA on purpose raises the alert as a reminder to
drop it). Modelled on cert-manager's `certmanager_certificate_expiration_timestamp_seconds`.

A listener with `tls.regions` serves one secret name with a different certificate per region: its
certificates are measured from the config, each region's under `<listener>/certificate@<region>`
(the default under the plain name), so one region's expiry never hides another's.

Certificates are parsed when a config is installed, in a worker thread, never on a request: each PEM
once per content (an unchanged secret is not parsed again).
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf.message import Message

from controlplane import resources as urls
from controlplane.cache import SnapshotCache
from controlplane.config.model import Config
from controlplane.server.stream import iso_time
from controlplane.translate._tls import certificate_secret_name, certificate_variants, secrets, upstream_secrets
from pavilion.errors import Location
from pavilion.log import get_logger
from pavilion.metrics import NAMESPACE, Gauge
from pavilion.pem_files import earliest_not_after

__all__ = ["SECRET_EXPIRY", "SOON", "CertificateExpiry", "expiry_warnings", "labelled_expiries", "regional_labels",
           "secret_expiries", "secret_pem"]

log = get_logger(__name__)

SECRET_EXPIRY = Gauge("controlplane_certificate_expiry_timestamp_seconds",
                      "Earliest notAfter (Unix time) of the certificates in each served SDS secret.", ["secret"],
                      namespace=NAMESPACE)
SOON = datetime.timedelta(days=30)  # /status lists what expires within this

# Types whose resources are Envoy's (a group with none of them is a Pavilion service node, or serves nothing).
_ENVOY_TYPES = (urls.CLUSTER, urls.LISTENER, urls.SECRET)

Clock = Callable[[], datetime.datetime]
SecretsOf = Callable[[Any], Sequence[Message]]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def secret_pem(secret: secret_pb2.Secret) -> bytes:
    """The certificates a Secret carries inline (a chain or a CA bundle), b"" when none."""
    if secret.HasField("tls_certificate"):
        source = secret.tls_certificate.certificate_chain
    elif secret.HasField("validation_context"):
        source = secret.validation_context.trusted_ca
    else:
        return b""
    if source.HasField("inline_bytes"):
        return bytes(source.inline_bytes)
    if source.HasField("inline_string"):
        return str(source.inline_string).encode()
    return b""  # a filename is read by Envoy, not by us


def secret_expiries(secrets: Iterable[Message], known: dict[bytes, datetime.datetime | None] | None = None,
                    ) -> dict[str, datetime.datetime]:
    """Secret name -> earliest notAfter of its certificates; secrets without a certificate are left out.
    `known`: notAfter by PEM content, from an earlier call; filled with what this one parsed."""
    return labelled_expiries(((secret.name, secret) for secret in secrets if isinstance(secret, secret_pb2.Secret)),
                             known)


def regional_labels(config: Any, secrets: Iterable[Message]) -> list[tuple[str, Message]]:
    """(label, Secret) for the gauge: each secret under its name, except the certificates of listeners with
    `tls.regions`, one name served with different content per region: those are measured from `config`
    for every region, each under its own label (`<listener>/certificate@<region>`, the default without
    `@`), whether or not an Envoy of that region is connected."""
    listeners = [item for item in getattr(config, "listeners", ()) if item.tls is not None and item.tls.regions]
    regional = {certificate_secret_name(item) for item in listeners}
    found: list[tuple[str, Message]] = [(str(getattr(secret, "name", "")), secret) for secret in secrets
                                        if getattr(secret, "name", None) not in regional]
    found += [(label, secret) for item in listeners for label, _region, secret in certificate_variants(item)]
    return found


def labelled_expiries(secrets: Iterable[tuple[str, Message]],
                      known: dict[bytes, datetime.datetime | None] | None = None) -> dict[str, datetime.datetime]:
    """Label -> earliest notAfter of the certificates of the Secret given with it (see `secret_expiries`)."""
    memo = known if known is not None else {}
    found: dict[str, datetime.datetime] = {}
    for label, secret in secrets:
        if not isinstance(secret, secret_pb2.Secret):
            continue
        pem = secret_pem(secret)
        if not pem:
            continue
        if pem not in memo:
            memo[pem] = earliest_not_after(pem)
        expiry = memo[pem]
        if expiry is not None:
            found[label] = expiry
    return found


class CertificateExpiry:
    """Keeps SECRET_EXPIRY equal to the secrets served now: refreshed after each installed config,
    a secret gone from the config is gone from the gauge (its label removed)."""

    def __init__(self, cache: SnapshotCache, secrets_of: SecretsOf, *, clock: Clock = _now) -> None:
        self.cache = cache
        self._secrets_of = secrets_of  # config -> the Secrets an Envoy node gets (used while none is connected)
        self._clock = clock
        self.secrets: dict[str, datetime.datetime] = {}
        self.xds_certificate: tuple[str, datetime.datetime] | None = None
        self._memo: dict[bytes, datetime.datetime | None] = {}
        self._lock = asyncio.Lock()

    def observe_xds_certificate(self, path: str, expiry: datetime.datetime) -> None:
        """The xDS port's certificate as served now: GrpcServer's `on_certificate`, told at start and after
        each renewal (on a grpc or worker thread; one assignment, read whole by `expiring`)."""
        self.xds_certificate = (path, expiry)

    def _served_secrets(self) -> Sequence[Message] | None:
        """The Secrets in the snapshots of connected Envoy groups; None when no such group has one yet."""
        envoy = [snapshot for snapshot in self.cache.groups().values()
                 if any(snapshot.types[url].resources for url in _ENVOY_TYPES if url in snapshot.types)]
        if not envoy:
            return None
        by_name: dict[str, Message] = {}
        for snapshot in envoy:
            if urls.SECRET in snapshot.types:
                by_name.update((name, r.message) for name, r in snapshot.types[urls.SECRET].resources.items())
        return list(by_name.values())

    async def refresh(self) -> None:
        """Recompute the gauge from what is served now (the latest installed config)."""
        async with self._lock:
            found = self._served_secrets()
            if found is None:
                if self.cache.config is None:
                    return
                found = await asyncio.to_thread(self._secrets_of, self.cache.config)
            served = regional_labels(self.cache.config, found)
            memo = dict(self._memo)
            expiries = await asyncio.to_thread(labelled_expiries, served, memo)
            # only what is served now: the memo stays as small as the config
            pems = {secret_pem(secret) for _label, secret in served if isinstance(secret, secret_pb2.Secret)}
            self._memo = {pem: expiry for pem, expiry in memo.items() if pem in pems}
            self._publish(expiries)

    def _publish(self, expiries: dict[str, datetime.datetime]) -> None:
        for name in self.secrets.keys() - expiries.keys():
            SECRET_EXPIRY.remove(name)
        for name, expiry in expiries.items():
            SECRET_EXPIRY.labels(name).set(expiry.timestamp())
        soon = self._clock() + SOON
        for name in sorted(expiries):
            if expiries[name] <= soon and self.secrets.get(name) != expiries[name]:
                log.warning("certificate_expires_soon", secret=name, not_after=iso_time(expiries[name].timestamp()))
        self.secrets = expiries

    async def follow(self) -> None:
        """Refresh after every installed config, until cancelled."""
        generation = 0
        while True:
            generation = await self.cache.wait_newer(generation)
            try:
                await self.refresh()
            except Exception:  # a background task's boundary: the next config must still be measured
                log.exception("certificate_expiry_failed")

    def expiring(self, within: datetime.timedelta = SOON) -> list[dict[str, Any]]:
        """For /status: what expires within `within` (or has expired), soonest first."""
        now = self._clock()
        found: list[tuple[datetime.datetime, dict[str, Any]]] = []
        for name, expiry in self.secrets.items():
            found.append((expiry, {"secret": name}))
        if self.xds_certificate is not None:
            path, expiry = self.xds_certificate
            found.append((expiry, {"xds_certificate": path}))
        return [entry | {"not_after": iso_time(expiry.timestamp()),
                         "days_left": round((expiry - now).total_seconds() / 86400, 1)}
                for expiry, entry in sorted(found, key=lambda item: item[0]) if expiry <= now + within]


def expiry_warnings(config: Config, *, within: datetime.timedelta = SOON, clock: Clock = _now) -> list[str]:
    """For `pavilion validate` and `pavilion plan`: one line per secret of `config` whose certificates expire
    within `within`, at the listener or service entry whose `tls:` names them, soonest first. The loader
    already refuses an expired certificate; this is the warning before that day comes."""
    sources: list[tuple[str, str, secret_pb2.Secret, Location]] = []  # (label, region, secret, where)
    for item in config.listeners:
        sources += [(label, region, secret, item.source) for label, region, secret in certificate_variants(item)]
        sources += [(secret.name, "", secret, item.source) for secret in secrets(item)
                    if secret.name != certificate_secret_name(item)]  # the client CA
    sources += [(secret.name, "", secret, service.source) for service in config.services
                for secret in upstream_secrets(service)]
    expiries = labelled_expiries((label, secret) for label, _region, secret, _where in sources)
    now = clock()
    found = []
    for label, region, secret, source in sources:
        expiry = expiries.get(label)
        if expiry is not None and expiry <= now + within:
            days = (expiry - now).total_seconds() / 86400
            whose = f"secret {secret.name}" + (f" served in region {region}" if region else "")
            found.append((expiry, f"{source}: warning: the certificates of {whose} expire at "
                                  f"{iso_time(expiry.timestamp())}, in {days:.1f} days: renew the file its tls: names"))
    return [line for _, line in sorted(found, key=lambda item: item[0])]

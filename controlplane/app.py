"""`pavilion controlplane`: the one place that builds the control plane's parts and runs them."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import socket
import sys

from controlplane import resources as urls
from controlplane.bootstrap import split_address
from controlplane.cache import DEFAULT_ROLE, SnapshotCache
from controlplane.cert_expiry import CertificateExpiry
from controlplane.config.listener_tls import referenced_files
from controlplane.config.load import load_config
from controlplane.fallback import RouteFallback
from controlplane.nacks import NackAttributor
from controlplane.plan import ServedResources
from controlplane.rollout import RolloutDriver
from controlplane.route_status import RouteStatus
from controlplane.server.ads import SERVICE, AdsServer
from controlplane.status import StatusBoard
from controlplane.translate import translate, translate_regional
from controlplane.watch import Reloader, watch_config
from controlplane.xds_tls import load_server_tls
from pavilion.admin import AdminServer
from pavilion.errors import ConfigError
from pavilion.grpc_server import GrpcServer, ServerTLS
from pavilion.lifecycle import run_until_stopped
from pavilion.log import get_logger
from pavilion.settings import Settings

log = get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class ControlPlaneSettings(Settings):
    config: str = ""
    xds_host: str = "127.0.0.1"
    xds_port: int = 18000
    admin_port: int = 18001
    identifier: str = ""  # control_plane.identifier in responses; default pavilion-<hostname>
    drain_seconds: float = 1.0  # streams are closed at once on stop; this is for the last writes
    watch: bool = True
    # PEM files of the xDS port's TLS; a client CA makes it require client certificates (mTLS).
    xds_tls_cert: str = ""
    xds_tls_key: str = ""
    xds_client_ca: str = ""
    # HOST:PORT of the replicas' admin ports, comma-separated: a staged rollout releases a stage only once
    # every replica is as far (controlplane/rollout.py).
    peers: str = ""


def run(args: argparse.Namespace) -> int:
    settings = ControlPlaneSettings.from_env(config=args.config, xds_host=args.host, xds_port=args.xds_port,
                                             admin_port=args.admin_port, xds_tls_cert=args.xds_tls_cert,
                                             xds_tls_key=args.xds_tls_key, xds_client_ca=args.xds_client_ca,
                                             peers=",".join(args.peers) if args.peers else None)
    try:
        tls = load_server_tls(settings.xds_tls_cert, settings.xds_tls_key, settings.xds_client_ca)
        for peer in _peers(settings):
            split_address(peer, "--peers", "controlplane-replicas:18001")
    except (ConfigError, ValueError) as exc:
        print(f"controlplane: {exc}", file=sys.stderr)
        return 2
    return run_until_stopped(functools.partial(serve, settings, tls=tls))


def _peers(settings: ControlPlaneSettings) -> list[str]:
    return [peer.strip() for peer in settings.peers.split(",") if peer.strip()]


async def serve(settings: ControlPlaneSettings, stop: asyncio.Event, *, tls: ServerTLS | None = None) -> None:
    identifier = settings.identifier or f"pavilion-{socket.gethostname()}"
    cache = SnapshotCache(translate, regional=translate_regional)
    board = StatusBoard(cache, identifier=identifier, config_path=settings.config)
    fallback = RouteFallback()
    board.refused_listeners = fallback.listener_status
    expiry = CertificateExpiry(cache, lambda config: translate(config, "", DEFAULT_ROLE)[urls.SECRET])
    board.expiring_certificates = expiry.expiring
    reloader = Reloader(settings.config, cache, board, loader=load_config, served=fallback.apply,
                        files=referenced_files)
    nacks = NackAttributor(cache, reloader, fallback)
    rollout = RolloutDriver(cache, board, peers=_peers(settings))
    board.rollout = rollout.status
    ads = AdsServer(cache, board, identifier=identifier)
    ads.ack_listeners.append(nacks.on_ack)
    ads.nack_listeners.append(nacks.on_nack)
    grpc_server = GrpcServer(settings.xds_host, settings.xds_port, register=ads.register, service_names=[SERVICE],
                             tls=tls, on_certificate=expiry.observe_xds_certificate)
    admin_routes = [*board.routes(), *RouteStatus(board, reloader, fallback, nacks).routes(),
                    *ServedResources(cache).routes()]
    admin = AdminServer(settings.xds_host, settings.admin_port, ready=lambda: cache.loaded and rollout.ready,
                        routes=admin_routes)
    # A first config that fails leaves the server up but not ready; a fixed edit makes it ready.
    await reloader.reload()
    await grpc_server.start()
    await admin.start()
    log.info("controlplane_started", xds_port=grpc_server.port, admin_port=admin.port, identifier=identifier,
             xds_tls="mtls" if tls is not None and tls.client_ca else "tls" if tls is not None else "off",
             config=settings.config, version=cache.config_version or None)
    watcher = asyncio.create_task(watch_config(settings.config, reloader.reload, stop)) if settings.watch else None
    poller = asyncio.create_task(reloader.poll_files(stop)) if settings.watch else None
    following = asyncio.create_task(expiry.follow(), name="certificate-expiry")  # the first load's too
    releasing = asyncio.create_task(rollout.run(stop), name="rollout")
    try:
        await stop.wait()
    finally:
        for task in (watcher, poller, following, releasing):
            if task is not None:
                task.cancel()
        await admin.stop()
        await ads.close()
        await grpc_server.stop(settings.drain_seconds)

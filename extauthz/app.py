"""The one place the ext_authz service is assembled: settings, tenants, key sets, revocation store,
gRPC server, admin server, config reload, worker processes."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from aiohttp import web

from extauthz.authorizer import Authorizer
from extauthz.config import load_tenants
from extauthz.identity_service import check_identity, follow_identity, identity_routes, start_identity
from extauthz.keys import key_set_for
from extauthz.redis_clients import check_redis_url
from extauthz.revocation import MemoryRevocations, RedisRevocations, RevocationStore
from extauthz.service import SERVICE_NAME, register
from extauthz.tenant_proto import tenants_from_policies
from extauthz.tenant_set import build_tenants, retire
from extauthz.token_cache import VerifiedTokenCache
from pavilion.admin import AdminServer
from pavilion.certificate_expiry import observe_xds_client_certificate
from pavilion.config_status import ConfigStatus
from pavilion.errors import ConfigError
from pavilion.grpc_server import GrpcServer
from pavilion.lifecycle import cancel_and_wait
from pavilion.log import get_logger
from pavilion.service import ServiceSettings, config_changes, run_service
from pavilion.v1 import tenant_pb2
from pavilion.versions import config_version
from pavilion.xds_client import Subscription, XdsClient

log = get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class ExtAuthzSettings(ServiceSettings):
    port: int = 9191
    redis_url: str | None = None
    redis_timeout: float = 0.25          # seconds; past it a check follows the tenant's on_store_error
    revocation_cache: float = 1.0        # seconds a replica may answer revocation from its local cache
    token_cache_size: int = 50_000
    workers: int = 1
    identity: str = ""                   # a YAML file with an `identity:` section (else the --config file's)


def make_store(settings: ExtAuthzSettings) -> RevocationStore:
    if settings.redis_url:
        return RedisRevocations(settings.redis_url, timeout=settings.redis_timeout,
                                local_ttl=settings.revocation_cache)
    return MemoryRevocations()


def revocations_status(store: RevocationStore) -> dict[str, Any]:
    """The revocation store on /status: where it is (never its password) and whether the pub/sub that
    keeps the local cache current is up (while it is not, every check asks Redis)."""
    if not isinstance(store, RedisRevocations):
        return {"kind": "memory"}
    return {**store.location, "subscribed": store.subscribed}


async def reload_on_change(path: Path, authorizer: Authorizer, stop: asyncio.Event,
                           status: ConfigStatus | None = None) -> None:
    """Swap in the tenants of `path` after each change; a broken edit keeps the last good tenants."""
    async for _ in config_changes(path, stop):
        await reload_once(path, authorizer, status)


async def reload_once(path: Path, authorizer: Authorizer, status: ConfigStatus | None = None) -> bool:
    old = authorizer.tenants
    try:
        tenants = await asyncio.to_thread(load_tenants, path)
        new = await build_tenants(tenants, previous=old)
    except ConfigError as exc:
        log.error("config_rejected", file=str(path), errors=str(exc).splitlines(), kept="last good config")
        if status is not None:
            status.refused(str(exc))
        return False
    authorizer.use(new)
    await retire(old, new)
    if status is not None:
        status.applied(config_version(new.tenants))
    log.info("config_reloaded", file=str(path), tenants=[t.id for t in new.tenants])
    return True


def tenants_over_xds(settings: ExtAuthzSettings, authorizer: Authorizer, status: ConfigStatus) -> XdsClient:
    """An xDS client whose updates swap the tenants as a file reload does (unchanged key sets kept)."""

    async def apply(_type_url: str, policies: dict[str, tenant_pb2.TenantPolicy], version: str) -> None:
        old = authorizer.tenants
        try:
            # In a thread: an introspecting tenant's policy reads its client secret file.
            new = await build_tenants(await asyncio.to_thread(tenants_from_policies, policies), previous=old)
        except ConfigError as exc:
            status.refused(str(exc))
            raise
        authorizer.use(new)
        await retire(old, new)
        status.applied(version)
        log.info("config_applied", source="xds", version=version, tenants=[t.id for t in new.tenants])

    return XdsClient(settings.xds, [Subscription(tenant_pb2.TenantPolicy, "id")], apply,
                     node_id=settings.xds_node_id("extauthz"), role="extauthz", cluster="extauthz",
                     region=settings.region, credentials=settings.xds_credentials())


def _admin_routes(authorizer: Authorizer, status: ConfigStatus) -> list[web.RouteDef]:
    async def keys(_request: web.Request) -> web.Response:
        return web.json_response({"tenants": authorizer.tenants.status()})

    identity = identity_routes(authorizer.identity) if authorizer.identity is not None else []
    return [web.get("/keys", keys), *status.routes(), *identity]


def _identity_settings_file(settings: ExtAuthzSettings) -> str:
    """The --config file, which may hold an `identity:` section; none with --xds (the tenants come over xDS,
    and where the key lives is the host's: --identity FILE names it)."""
    return "" if settings.xds else settings.config


async def _parent_routes(settings: ExtAuthzSettings) -> list[web.RouteDef]:
    """With --workers: the parent's admin port publishes the identity key set too (the workers sign with the
    same key; the parent loads its public half, and follows rotations as they do)."""
    config = _identity_settings_file(settings)
    identity = await start_identity(settings.identity, config)
    if identity is None:
        return []
    asyncio.get_running_loop().create_task(follow_identity(settings.identity, config, identity, asyncio.Event()))
    return identity_routes(identity)


async def serve(settings: ExtAuthzSettings, stop: asyncio.Event, *, admin: bool = True) -> None:
    path = Path(settings.config)
    xds: XdsClient | None = None
    store = make_store(settings)

    def details() -> dict[str, Any]:
        shown: dict[str, Any] = {"xds": dict(xds.status())} if xds is not None else {}
        shown["revocations"] = revocations_status(store)
        return shown

    status = ConfigStatus("xds" if settings.xds else "file", details=details)
    if settings.xds:
        tenants = await build_tenants(())
    else:
        tenants = await build_tenants(load_tenants(path))
        status.applied(config_version(tenants.tenants))
    identity_config = _identity_settings_file(settings)
    identity = await start_identity(settings.identity, identity_config)
    await store.start()
    authorizer = Authorizer(tenants, store, VerifiedTokenCache(max_entries=settings.token_cache_size),
                            identity=identity)
    server = GrpcServer(settings.grpc_host, settings.port, register=register(authorizer),
                        service_names=[SERVICE_NAME], tls=settings.server_tls())
    admin_server = None
    if admin and settings.metrics_port:
        admin_server = AdminServer(settings.metrics_host, settings.metrics_port,
                                   ready=lambda: status.version is not None, routes=_admin_routes(authorizer, status))
        await admin_server.start()
    tasks: list[asyncio.Task[None]] = []
    try:
        if settings.xds:
            observe_xds_client_certificate(settings.xds_client_cert)  # the gauge of the certificate read at start
            xds = tenants_over_xds(settings, authorizer, status)
            tasks.append(asyncio.create_task(xds.run(stop), name="xds"))
            # Check answers only once the first tenants arrived: before that every token would be refused.
            if not await xds.wait_ready(stop):
                return
        else:
            tasks.append(asyncio.create_task(reload_on_change(path, authorizer, stop, status), name="config-watch"))
        if identity is not None:
            tasks.append(asyncio.create_task(follow_identity(settings.identity, identity_config, identity, stop),
                                             name="identity-follow"))
        await server.start()
        log.info("extauthz_started", port=server.port, tenants=[t.id for t in authorizer.tenants.tenants],
                 store=revocations_status(store)["kind"], source=status.source, version=status.version)
        await stop.wait()
    finally:
        await cancel_and_wait(*tasks)
        await server.stop(settings.drain_seconds)
        if admin_server is not None:
            await admin_server.stop()
        await store.close()
        await retire(authorizer.tenants, None)
        if identity is not None:
            await identity.close()


def check_config_file(path: str) -> None:
    for tenant in load_tenants(path):
        key_set_for(tenant)  # inline keys are parsed here; nothing is fetched or started


def run(settings: ExtAuthzSettings) -> int:
    if settings.redis_url:
        try:
            check_redis_url(settings.redis_url)
        except ValueError as exc:  # its message shows the URL with the password starred out
            log.error("bad_redis_url", detail=str(exc))
            return 2
    try:  # the key opened once here (PIN read, token logged in): a broken key config exits 2 before serving
        check_identity(settings.identity, _identity_settings_file(settings))
    except ConfigError as exc:
        log.error("identity_rejected", errors=str(exc).splitlines())
        return 2
    return run_service(settings, serve, role="extauthz", check_config=check_config_file, parent_routes=_parent_routes)

"""The one place the rate-limit service is assembled: settings, config and its reload, the counter
store (memory, Redis or Redis Cluster) behind a circuit breaker, the limiter, the gRPC server with
health, the admin server, worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from pathlib import Path
from typing import Any

from pavilion.admin import AdminServer
from pavilion.certificate_expiry import observe_xds_client_certificate
from pavilion.config_status import ConfigStatus
from pavilion.errors import BackendUnavailable, ConfigError
from pavilion.grpc_server import GrpcServer
from pavilion.lifecycle import cancel_and_wait
from pavilion.log import get_logger
from pavilion.sentinel_url import is_sentinel_url, parse_sentinel_url
from pavilion.service import ServiceSettings, config_changes, run_service
from pavilion.v1 import ratelimit_pb2
from pavilion.versions import config_version
from pavilion.xds_client import Subscription, XdsClient
from ratelimit import inspect_workers
from ratelimit.answer import header_style
from ratelimit.breaker import BreakerState, CircuitBreaker
from ratelimit.config import RateLimitConfig, load_config
from ratelimit.headers import HeaderNames
from ratelimit.inspect import routes as inspect_routes
from ratelimit.limiter import Limiter
from ratelimit.memory_store import MemoryStore
from ratelimit.metrics import BREAKER_OPEN, CONFIG_RELOADS, RuleMetrics
from ratelimit.redis_sentinel import RedisSentinelStore
from ratelimit.redis_store import RedisClusterStore, RedisStore
from ratelimit.redis_target import parse_cluster_seeds, parse_redis_url
from ratelimit.rules_proto import config_from_policies
from ratelimit.service import SERVICE_NAME, RateLimitService, register
from ratelimit.store import Check, CounterStore

log = get_logger(__name__)

# A check that reads and writes nothing (hits 0): the breaker's probe when no traffic comes.
PROBE = Check("_probe", "fixed_window", 1, 1, hits=0)


@dataclasses.dataclass(frozen=True)
class RateLimitSettings(ServiceSettings):
    port: int = 8081
    redis_url: str | None = None
    redis_cluster: str | None = None     # HOST:PORT,HOST:PORT seeds
    # Per script call, from send to reply (see ratelimit.resp). Below Envoy's own 20 ms default for the
    # ratelimit filter, so the rule's on_backend_error (say deny) answers before Envoy gives up and
    # fails open on its own. Raise both together.
    redis_timeout_ms: float = 10.0
    breaker_failures: int = 5            # consecutive store failures that open the breaker
    breaker_cool_down: float = 1.0       # seconds open before one probe goes through
    shadow_mode: bool = False            # global: count and report, never answer OVER_LIMIT
    merge_domains: bool = False          # one domain may span files (envoyproxy/ratelimit's MERGE_DOMAIN_CONFIG)
    response_headers: str = "draft"      # draft | envoyproxy | none: what answers tell the client (headers.py)
    # With response_headers = envoyproxy: envoyproxy/ratelimit's LIMIT_LIMIT_HEADER, _REMAINING_, _RESET_.
    limit_header: str = "RateLimit-Limit"
    remaining_header: str = "RateLimit-Remaining"
    reset_header: str = "RateLimit-Reset"
    replicas: int = 1                    # service replicas sharing the limits (for on_backend_error: local)
    metric_label_cap: int = 1000
    inspect: bool = False                # serve GET /limits on the admin port (ratelimit/inspect.py)


RedisBackend = RedisStore | RedisClusterStore | RedisSentinelStore


def make_redis(settings: RateLimitSettings) -> RedisBackend | None:
    timeout = settings.redis_timeout_ms / 1000
    if settings.redis_cluster:
        return RedisClusterStore.from_hosts(settings.redis_cluster, timeout=timeout)
    if settings.redis_url and is_sentinel_url(settings.redis_url):
        return RedisSentinelStore.from_url(settings.redis_url, timeout=timeout)
    if settings.redis_url:
        return RedisStore.from_url(settings.redis_url, timeout=timeout)
    return None


def make_store(settings: RateLimitSettings,
               redis: RedisBackend | None) -> tuple[CounterStore, CircuitBreaker | None]:
    if redis is None:
        return MemoryStore(), None

    def on_change(state: BreakerState) -> None:
        BREAKER_OPEN.set(1 if state is BreakerState.OPEN else 0)

    breaker = CircuitBreaker(redis, failures_to_open=settings.breaker_failures,
                             cool_down=settings.breaker_cool_down, on_change=on_change)
    return breaker, breaker


def store_status(redis: RedisBackend | None, limiter: Limiter,
                 breaker: CircuitBreaker | None) -> dict[str, Any]:
    """The counter store on /status: where it is (never its credentials), the breaker, and whether the
    service reports SERVING."""
    shown: dict[str, Any] = redis.location() if redis is not None else {"kind": "memory"}
    if breaker is not None:
        shown["breaker"] = breaker.state.value
    shown["serving"] = serving(limiter.config, breaker)
    return shown


def serving(config: RateLimitConfig, breaker: CircuitBreaker | None) -> bool:
    """NOT_SERVING only when the backend is unusable and some rule would then deny: Envoy, or a load
    balancer, should prefer a replica that can count. With only allow/local rules we still answer well."""
    if breaker is None or breaker.usable:
        return True
    return not any(rule.on_backend_error == "deny" for rule in config.rules)


class Health:
    """Keeps grpc.health.v1 in step with the breaker and the config, and probes an open breaker
    so it closes again even when no traffic comes (Envoy may stop sending to a NOT_SERVING replica)."""

    def __init__(self, server: GrpcServer, limiter: Limiter, breaker: CircuitBreaker | None,
                 interval: float) -> None:
        self._server, self._limiter, self._breaker = server, limiter, breaker
        self._interval = interval
        self._serving: bool | None = None

    async def update(self) -> None:
        now = serving(self._limiter.config, self._breaker)
        if now is self._serving:
            return
        self._serving = now
        for name in ("", SERVICE_NAME):
            await self._server.set_serving(name, now)
        log.warning("ratelimit_health", serving=now)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            breaker = self._breaker
            if breaker is not None and breaker.state is BreakerState.HALF_OPEN:
                with contextlib.suppress(BackendUnavailable):
                    await breaker.apply([PROBE])
            await self.update()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)


async def reload_on_change(path: Path, limiter: Limiter, health: Health, stop: asyncio.Event,
                           status: ConfigStatus | None = None, *, merge_domains: bool = False) -> None:
    """Swap in the rules of `path` after each change; a broken edit keeps the last good config."""
    async for _ in config_changes(path, stop):
        await reload_once(path, limiter, status, merge_domains=merge_domains)
        await health.update()


async def reload_once(path: Path, limiter: Limiter, status: ConfigStatus | None = None, *,
                      merge_domains: bool = False) -> bool:
    try:
        config = await asyncio.to_thread(load_config, path, merge_domains=merge_domains)
    except (ConfigError, OSError) as exc:
        CONFIG_RELOADS.labels(result="rejected").inc()
        log.error("config_rejected", path=str(path), errors=str(exc).splitlines(), kept="last good config")
        if status is not None:
            status.refused(str(exc))
        return False
    limiter.config = config
    CONFIG_RELOADS.labels(result="loaded").inc()
    if status is not None:
        status.applied(file_version(config))
    log.info("config_reloaded", path=str(path), rules=len(config.rules))
    return True


def file_version(config: RateLimitConfig) -> str:
    return config_version((config.rules, sorted(config.domains)))


def rules_over_xds(settings: RateLimitSettings, limiter: Limiter, health: Health, status: ConfigStatus) -> XdsClient:
    """An xDS client whose updates swap the limiter's config as a file reload does."""

    async def apply(_type_url: str, policies: dict[str, ratelimit_pb2.RateLimitPolicy], version: str) -> None:
        try:
            config = config_from_policies(policies)
        except ConfigError as exc:
            CONFIG_RELOADS.labels(result="rejected").inc()
            status.refused(str(exc))
            raise
        limiter.config = config
        CONFIG_RELOADS.labels(result="loaded").inc()
        status.applied(version)
        await health.update()
        log.info("config_applied", source="xds", version=version, rules=len(config.rules))

    return XdsClient(settings.xds, [Subscription(ratelimit_pb2.RateLimitPolicy, "domain")], apply,
                     node_id=settings.xds_node_id("ratelimit"), role="ratelimit", cluster="ratelimit",
                     region=settings.region, credentials=settings.xds_credentials())


async def serve(settings: RateLimitSettings, stop: asyncio.Event, *, admin: bool = True) -> None:
    path = Path(settings.config)
    xds: XdsClient | None = None
    # Made below, after the status that shows them (a worker publishes its status from the start).
    redis: RedisBackend | None = None
    limiter: Limiter | None = None
    breaker: CircuitBreaker | None = None

    def details() -> dict[str, Any]:
        shown: dict[str, Any] = {"xds": dict(xds.status())} if xds is not None else {}
        if limiter is not None:
            shown["store"] = store_status(redis, limiter, breaker)
        return shown

    status = ConfigStatus("xds" if settings.xds else "file", details=details)
    config = RateLimitConfig(()) if settings.xds else load_config(path, merge_domains=settings.merge_domains)
    if not settings.xds:
        status.applied(file_version(config))
    redis = make_redis(settings)
    if redis is not None:
        await redis.start()
    store, breaker = make_store(settings, redis)
    limiter = Limiter(config, store, replicas=max(1, settings.replicas) * max(1, settings.workers),
                      global_shadow_mode=settings.shadow_mode)
    names = HeaderNames(settings.limit_header, settings.remaining_header, settings.reset_header)
    service = RateLimitService(limiter, RuleMetrics(settings.metric_label_cap),
                               header_style(settings.response_headers, names))
    server = GrpcServer(settings.grpc_host, settings.port, register=register(service), service_names=[SERVICE_NAME],
                        tls=settings.server_tls())
    health = Health(server, limiter, breaker, interval=max(0.05, settings.breaker_cool_down / 2))
    admin_server = None
    if admin and settings.metrics_port:
        routes = status.routes()
        if settings.inspect:
            routes += inspect_routes(limiter, lambda: store_status(redis, limiter, breaker))
        admin_server = AdminServer(settings.metrics_host, settings.metrics_port,
                                   ready=lambda: status.version is not None, routes=routes)
        await admin_server.start()
    tasks: list[asyncio.Task[None]] = []
    try:
        if settings.xds:
            observe_xds_client_certificate(settings.xds_client_cert)  # the gauge of the certificate read at start
            xds = rules_over_xds(settings, limiter, health, status)
            tasks.append(asyncio.create_task(xds.run(stop), name="xds"))
            # ShouldRateLimit answers only once the first rules arrived: before that nothing would be limited.
            if not await xds.wait_ready(stop):
                return
        else:
            watch = reload_on_change(path, limiter, health, stop, status, merge_domains=settings.merge_domains)
            tasks.append(asyncio.create_task(watch, name="config-watch"))
        await server.start()
        tasks.append(asyncio.create_task(health.run(stop), name="health"))
        log.info("ratelimit_started", port=server.port, rules=len(limiter.config.rules),
                 shadow_mode=settings.shadow_mode, source=status.source, version=status.version,
                 store=store_status(redis, limiter, breaker)["kind"])
        await stop.wait()
    finally:
        await cancel_and_wait(*tasks)
        await server.stop(settings.drain_seconds)
        if admin_server is not None:
            await admin_server.stop()
        await store.close()


def run(settings: RateLimitSettings) -> int:
    if settings.redis_url and settings.redis_cluster:
        log.error("choose_one_redis", detail="give --redis or --redis-cluster, not both")
        return 2
    try:
        header_style(settings.response_headers)
    except ValueError as exc:
        log.error("bad_response_headers", detail=str(exc))
        return 2
    try:
        if settings.redis_url:
            (parse_sentinel_url if is_sentinel_url(settings.redis_url) else parse_redis_url)(settings.redis_url)
        if settings.redis_cluster:
            parse_cluster_seeds(settings.redis_cluster)
    except ValueError as exc:  # its message shows the URL with the password starred out
        log.error("bad_redis_url", detail=str(exc))
        return 2
    return run_service(settings, serve, role="ratelimit",
                       check_config=functools.partial(load_config, merge_domains=settings.merge_domains),
                       parent_routes=inspect_workers.parent_routes)

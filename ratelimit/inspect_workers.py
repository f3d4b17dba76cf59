"""/limits with `--workers N`: the parent process serves the admin port, and has a limiter of its own
for it, over the same Redis the workers count in, with the same config file (reloaded the same way).

Only with Redis: without it every worker counts in its own memory, and no process can answer for the
others. Only with `--config`: the parent runs no xDS client. In both cases the parent serves no
/limits and says why in the log. The parent's limiter never sees traffic; it reads Redis with
`hits_addend` 0 like any inspection, behind a circuit breaker of its own (not the workers', whose
state is theirs), and its known-over cache is its own.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from pavilion.errors import ConfigError
from pavilion.log import get_logger
from pavilion.service import config_changes
from ratelimit.breaker import CircuitBreaker
from ratelimit.config import load_config
from ratelimit.inspect import routes
from ratelimit.limiter import Limiter

if TYPE_CHECKING:
    from ratelimit.app import RateLimitSettings

log = get_logger(__name__)

# The parent's config watches, kept referenced for the life of its (daemon) admin thread.
_WATCHES: set[asyncio.Task[None]] = set()


async def parent_routes(settings: RateLimitSettings) -> list[web.RouteDef]:
    """`run_service(parent_routes=...)`: /limits for the parent's admin server, or none (logged why)."""
    from ratelimit.app import make_redis, store_status  # app imports this module

    if not settings.inspect:
        return []
    if settings.xds:
        log.warning("inspect_not_served", detail="with --workers and --xds the parent has no rules: no /limits")
        return []
    redis = make_redis(settings)
    if redis is None:
        log.warning("inspect_not_served", detail="with --workers and no Redis each worker counts in its own "
                                                 "memory, so no process can answer for all: no /limits")
        return []
    breaker = CircuitBreaker(redis, failures_to_open=settings.breaker_failures, cool_down=settings.breaker_cool_down)
    path = Path(settings.config)
    limiter = Limiter(await asyncio.to_thread(load_config, path, merge_domains=settings.merge_domains), breaker,
                      replicas=max(1, settings.replicas) * max(1, settings.workers),
                      global_shadow_mode=settings.shadow_mode)

    async def follow_config() -> None:
        # The workers log and count each reload; the parent only follows (a bad edit keeps the last good).
        async for _ in config_changes(path, asyncio.Event()):
            try:
                limiter.config = await asyncio.to_thread(load_config, path, merge_domains=settings.merge_domains)
            except (ConfigError, OSError):
                continue

    watch = asyncio.create_task(follow_config(), name="inspect-config-watch")
    _WATCHES.add(watch)
    watch.add_done_callback(_WATCHES.discard)
    return routes(limiter, lambda: store_status(redis, limiter, breaker))

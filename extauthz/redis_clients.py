"""The Redis clients of the revocation store, from `--redis`: a plain URL (redis://, rediss://, unix://)
or a `redis+sentinel://` URL (pavilion.sentinel_url), where redis-py's Sentinel pools ask the sentinels
for the master on every new connection, so a failover is followed by reconnecting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.connection import parse_url

from pavilion.log import redact_url
from pavilion.sentinel_url import is_sentinel_url, parse_sentinel_url


def check_redis_url(url: str, flag: str = "--redis") -> None:
    """ValueError naming what is wrong with `url`, its password starred out."""
    if is_sentinel_url(url):
        parse_sentinel_url(url, flag)
        return
    try:
        parse_url(url)  # type: ignore[no-untyped-call]  # its messages never quote the URL
    except ValueError as exc:
        raise ValueError(f"{flag} {redact_url(url)}: {exc}") from exc


@dataclass
class RevocationRedis:
    """A command client (fails within the timeout, no retries) and a subscriber (blocks on reads)."""

    commands: aioredis.Redis
    subscriber: aioredis.Redis
    _location: dict[str, Any]
    _sentinel: Sentinel | None = None

    @property
    def location(self) -> dict[str, Any]:
        """For /status: where revocations are read, never a password. Behind Sentinel, also the master
        the command client last connected to (None before its first connection)."""
        if self._sentinel is None:
            return dict(self._location)
        address = getattr(self.commands.connection_pool, "master_address", None)
        return {**self._location, "master": None if address is None else f"{address[0]}:{address[1]}"}

    @property
    def behind_sentinel(self) -> bool:
        return self._sentinel is not None

    async def master_moved(self) -> bool:
        """Behind Sentinel: ask the sentinels for the master; True when it is no longer the one a client
        was using, whose command connections are then all dropped (the caller resubscribes).

        A pool only asks again when a connection fails, which a master demoted while still up (`SENTINEL
        FAILOVER` for maintenance, a partition) does not do until Sentinel turns it into a replica, ~10 s
        later: meanwhile revocations written on the new master would not be seen. Raises a Redis error when
        no sentinel answers or none names a master (it is down and not yet replaced)."""
        moved = False
        for client in (self.commands, self.subscriber):
            pool = client.connection_pool
            if not isinstance(pool, SentinelConnectionPool):
                return False
            before = pool.master_address
            # Also drops the pool's idle connections when the address changed.
            moved |= before is not None and before != await pool.get_master_address()  # type: ignore[no-untyped-call]
        if moved:
            await self.commands.connection_pool.disconnect(inuse_connections=True)
        return moved

    async def aclose(self) -> None:
        await self.commands.aclose()
        await self.subscriber.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()


def connect(url: str, timeout: float) -> RevocationRedis:
    """Clients for `url` (connections are made on first use). ValueError when the URL is unusable."""
    if is_sentinel_url(url):
        return _behind_sentinel(url, timeout)
    # No retries: a check must fail within `timeout` and let the tenant's on_store_error decide.
    commands: aioredis.Redis = aioredis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True,
        retry=Retry(NoBackoff(), 0))
    # The subscriber blocks on reads for as long as nothing is published: no read timeout.
    subscriber: aioredis.Redis = aioredis.Redis.from_url(
        url, socket_timeout=None, socket_connect_timeout=timeout, decode_responses=True,
        retry=Retry(NoBackoff(), 0))
    where: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]  # redis-py's reading of it
    address = where.get("path") or f"{where.get('host')}:{where.get('port', 6379)}"
    location = {"kind": "redis", "address": address, "db": where.get("db", 0),
                "tls": url.startswith("rediss:"), "auth": where.get("password") is not None}
    return RevocationRedis(commands, subscriber, location)


def _behind_sentinel(url: str, timeout: float) -> RevocationRedis:
    target = parse_sentinel_url(url)
    # Asking a sentinel is bounded as a command is; `password` here is the sentinels' own.
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                                       "retry": Retry(NoBackoff(), 0)}
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    master: dict[str, Any] = {"username": target.username, "password": target.password, "db": target.db,
                              "decode_responses": True, "socket_connect_timeout": timeout}
    # Each client has its own pool; a pool asks the sentinels for the master on every new connection, and
    # a connection that fails is dropped, so after a failover the next command or subscribe finds the new one.
    commands: aioredis.Redis = sentinel.master_for(target.master_name, socket_timeout=timeout,
                                                   retry=Retry(NoBackoff(), 0), **master)
    subscriber: aioredis.Redis = sentinel.master_for(target.master_name, socket_timeout=None,
                                                     retry=Retry(NoBackoff(), 0), **master)
    location = {"kind": "redis-sentinel", "master_name": target.master_name,
                "sentinels": [f"{host}:{port}" for host, port in target.sentinels], "db": target.db,
                "auth": target.password is not None, "sentinel_auth": target.sentinel_password is not None}
    return RevocationRedis(commands, subscriber, location, sentinel)

"""Counters on the master of a Redis Sentinel group (`--redis redis+sentinel://...`, see
pavilion.sentinel_url), followed through a failover.

A sentinel names the master (`SENTINEL get-master-addr-by-name`); the store then is a `RedisStore`
on it. The sentinels are asked again every second in the background, and at once (at most once a
second) when the master stops answering as one (a timeout, a lost connection, `READONLY` from a
demoted master): the request that failed is answered by its rule's `on_backend_error`, as for any
Redis failure, and the first request after the new master is known goes to it. The periodic
question catches a master demoted while it still answers (`SENTINEL FAILOVER`, a partition that
cuts it from the sentinels but not from us), where hits counted meanwhile would be lost with it.
A failover costs what Sentinel takes to promote a replica (about its `down-after-milliseconds`
plus a second). Redis replicates asynchronously, so hits counted on the old master in its last
moments can be lost with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pavilion.errors import BackendUnavailable
from pavilion.lifecycle import cancel_and_wait
from pavilion.log import get_logger
from pavilion.sentinel_url import SentinelUrl, parse_sentinel_url
from ratelimit.redis_store import RedisStore
from ratelimit.redis_target import RedisTarget
from ratelimit.resp import RedisError, RedisReplyError, RespConnection
from ratelimit.store import Check, Outcome

log = get_logger(__name__)

RESOLVE_INTERVAL = 1.0  # seconds between two questions to the sentinels


class RedisSentinelStore:
    """A CounterStore on whichever server the sentinels name as the group's master."""

    def __init__(self, sentinel: SentinelUrl, *, timeout: float = 0.05, connect_timeout: float = 1.0) -> None:
        self._sentinel = sentinel
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._store: RedisStore | None = None  # on the master last named
        self._resolving: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._last_resolve = float("-inf")
        self._failing: str | None = None  # the last error asking the sentinels, logged once

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 0.05) -> RedisSentinelStore:
        return cls(parse_sentinel_url(url), timeout=timeout)

    @property
    def master(self) -> str | None:
        return self._store.location()["address"] if self._store is not None else None

    def location(self) -> dict[str, Any]:
        """Where the counters are, for /status (never a password)."""
        sentinel = self._sentinel
        return {"kind": "redis-sentinel", "master_name": sentinel.master_name, "master": self.master,
                "sentinels": [f"{host}:{port}" for host, port in sentinel.sentinels], "db": sentinel.db,
                "auth": sentinel.password is not None, "sentinel_auth": sentinel.sentinel_password is not None}

    async def start(self) -> None:
        """Find the master and connect before the first request; a failure is logged, not raised."""
        self._last_resolve = asyncio.get_running_loop().time()
        try:
            await self._resolve()
        except (RedisError, TimeoutError, OSError) as exc:
            log.warning("redis_sentinel_unavailable_at_start", master_name=self._sentinel.master_name,
                        error=str(exc))
        self._watch = asyncio.create_task(self._follow_master(), name="redis-master-watch")

    async def _follow_master(self) -> None:
        while True:
            await asyncio.sleep(RESOLVE_INTERVAL)
            self._resolve_soon()

    async def apply(self, checks: Sequence[Check]) -> list[Outcome]:
        store = self._store
        if store is None:
            self._resolve_soon()
            raise BackendUnavailable("redis", f"no master known yet for {self._sentinel.master_name}")
        try:
            return await store.apply(checks)
        except BackendUnavailable:
            self._resolve_soon()  # a dead or demoted master: ask who the master is now
            raise

    def _resolve_soon(self) -> None:
        loop = asyncio.get_running_loop()
        busy = self._resolving is not None and not self._resolving.done()
        if busy or loop.time() - self._last_resolve < RESOLVE_INTERVAL:
            return
        self._last_resolve = loop.time()
        self._resolving = asyncio.create_task(self._resolve_logged())

    async def _resolve_logged(self) -> None:
        try:
            await self._resolve()
        except (RedisError, TimeoutError, OSError) as exc:
            if self._failing is None:  # once per outage, not every second
                log.warning("redis_sentinel_unavailable", master_name=self._sentinel.master_name, error=str(exc))
            self._failing = str(exc)
        else:
            if self._failing is not None:
                log.info("redis_sentinel_available", master_name=self._sentinel.master_name, master=self.master)
            self._failing = None

    async def _resolve(self) -> None:
        host, port = await self._ask_sentinels()
        address = f"{host}:{port}"
        if self._store is not None and self.master == address:
            return
        sentinel = self._sentinel
        store = RedisStore(RedisTarget(host=host, port=port, username=sentinel.username,
                                       password=sentinel.password, db=sentinel.db),
                           timeout=self._timeout, connect_timeout=self._connect_timeout)
        await store.start()
        old, self._store = self._store, store
        log.info("redis_master", master_name=sentinel.master_name, master=address,
                 previous=old.location()["address"] if old is not None else None)
        if old is not None:
            await old.close()

    async def _ask_sentinels(self) -> tuple[str, int]:
        """The master's address from the first sentinel that knows it."""
        problems = []
        for host, port in self._sentinel.sentinels:
            try:
                reply = await self._ask(host, port)
            except (RedisError, TimeoutError, OSError) as exc:
                problems.append(f"{host}:{port}: {exc}")
                continue
            if isinstance(reply, list) and len(reply) == 2:
                return reply[0].decode(), int(reply[1])
            problems.append(f"{host}:{port}: {reply!r:.80}")
        raise RedisError(f"no sentinel names master {self._sentinel.master_name!r}: {'; '.join(problems)}")

    async def _ask(self, host: str, port: int) -> Any:
        conn = await RespConnection.open(host, port, timeout=self._connect_timeout,
                                         connect_timeout=self._connect_timeout)
        try:
            if self._sentinel.sentinel_password is not None:
                reply = await conn.call("AUTH", self._sentinel.sentinel_password)
                if isinstance(reply, RedisReplyError):
                    raise RedisError(f"AUTH on sentinel {host}:{port}: {reply}")
            return await conn.call("SENTINEL", "get-master-addr-by-name", self._sentinel.master_name)
        finally:
            conn.close()

    async def close(self) -> None:
        await cancel_and_wait(self._watch, self._resolving)
        if self._store is not None:
            await self._store.close()

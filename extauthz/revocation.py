"""Revoked credentials: single tokens by (issuer, jti), and "everything issued before T" per subject
and per tenant, compared with the token's `iat`.

Two stores share one Protocol: `MemoryRevocations` (one process, no `--redis`) and `RedisRevocations`
(every replica; `--redis` is a plain Redis URL or a `redis+sentinel://` one, see extauthz/redis_clients.py).
The Redis store answers a check with at most one MGET, and keeps a short local cache
that pub/sub keeps current: a revocation is published on `CHANNEL` and every replica writes it into its
cache at once. The cache is only trusted while the subscription is up, and is flushed on every
(re)subscribe, so a missed message can never outlive `local_ttl` (1 s by default).

Both stores can answer without waiting (`revoked_locally`) when local state holds every key of the
token, so the common check of a known token never awaits. The Redis store re-reads the keys in use in
the background every half `local_ttl`, all of them in one MGET, so a busy replica keeps its cache fresh
with two round trips a second instead of one per token per second on the request path; keys stay "in
use" for `keep_warm` (30 s) after their last check, so a short pause does not empty the cache either.

The Redis store also remembers each token's verdict with the version of the local cache it was read
from: any change to the local cache (an event, a flush, a refresh) bumps the version, and a verdict is
never used past the moment its oldest key would expire. A repeated check of an unchanged token is then
one dict lookup (by the query's identity) instead of a lookup per key and the cut-off comparisons.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.exceptions import RedisError

from extauthz.metrics import revocation_subscribed
from extauthz.redis_clients import connect
from pavilion.errors import BackendUnavailable
from pavilion.lifecycle import cancel_and_wait
from pavilion.log import get_logger

log = get_logger(__name__)

CHANNEL = "pavilion:revocations"
_PREFIX = "pavilion:revoked:"
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)
_REFRESH_BATCH = 512  # keys per background MGET
_MASTER_CHECK = 1.0  # seconds between asking the sentinels which server is the master
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True, eq=False)
class RevocationQuery:
    """The facts of one verified token that revocation looks at. Built once per verified token (it is
    cached beside it), so its store keys are computed once too. Compared and hashed by identity: the
    Redis store keeps per-query state keyed by it, and an identity hash costs nothing per check."""

    tenant_id: str
    issuer: str
    subject: str
    jti: str | None
    issued_at: float | None
    keys: tuple[str, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(keys_for(self)))


def token_key(issuer: str, jti: str) -> str:
    # Hashed: the jti is attacker-chosen text of any length; the key stays short and printable.
    digest = hashlib.sha256(f"{issuer}\0{jti}".encode()).hexdigest()[:40]
    return f"{_PREFIX}jti:{digest}"


def subject_key(tenant_id: str, subject: str) -> str:
    digest = hashlib.sha256(f"{tenant_id}\0{subject}".encode()).hexdigest()[:40]
    return f"{_PREFIX}sub:{digest}"


def tenant_key(tenant_id: str) -> str:
    return f"{_PREFIX}tenant:{tenant_id}"


def keys_for(query: RevocationQuery) -> list[str]:
    """Subject cut-off, tenant cut-off, then the token's own key when it has a jti."""
    keys = [subject_key(query.tenant_id, query.subject), tenant_key(query.tenant_id)]
    if query.jti is not None:
        keys.append(token_key(query.issuer, query.jti))
    return keys


def is_revoked_by(values: list[str | None], query: RevocationQuery) -> bool:
    """Decide from the values of `keys_for(query)`, in that order."""
    for cutoff in values[:2]:
        # A token without iat cannot prove it was issued after the cut-off.
        if cutoff is not None and (query.issued_at is None or query.issued_at < float(cutoff)):
            return True
    return len(values) > 2 and values[2] is not None


class _Tracked:
    """A query in use: when a check last read it, and its last verdict from the local cache."""

    __slots__ = ("revoked", "until", "used", "version")

    def __init__(self, used: float) -> None:
        self.used = used
        self.version = -1  # no verdict yet
        self.until = 0.0
        self.revoked = False


class RevocationStore(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def revoked_locally(self, query: RevocationQuery) -> bool | None:
        """The answer from local state without waiting, or None when only `is_revoked` can tell."""
    async def is_revoked(self, query: RevocationQuery) -> bool:
        """True when revoked; raises BackendUnavailable when the store cannot tell."""
    async def revoke_token(self, issuer: str, jti: str, expires_at: float) -> bool:
        """Revoke one token until its expiry; False when it has already expired (nothing to do)."""
    async def revoke_subject(self, tenant_id: str, subject: str, before: float, ttl: float | None = None) -> None: ...
    async def revoke_tenant(self, tenant_id: str, before: float, ttl: float | None = None) -> None: ...


class MemoryRevocations:
    """One process's revocations, for running without Redis and for tests."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._values: dict[str, tuple[str, float | None]] = {}  # key -> (value, expires_at)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _get(self, key: str) -> str | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at is not None and expires_at <= self._clock():
            del self._values[key]
            return None
        return value

    def revoked_locally(self, query: RevocationQuery) -> bool:
        return is_revoked_by([self._get(key) for key in query.keys], query)

    async def is_revoked(self, query: RevocationQuery) -> bool:
        return self.revoked_locally(query)

    async def revoke_token(self, issuer: str, jti: str, expires_at: float) -> bool:
        if expires_at <= self._clock():
            return False
        self._values[token_key(issuer, jti)] = ("1", expires_at)
        return True

    async def revoke_subject(self, tenant_id: str, subject: str, before: float, ttl: float | None = None) -> None:
        self._values[subject_key(tenant_id, subject)] = (repr(before), None if ttl is None else self._clock() + ttl)

    async def revoke_tenant(self, tenant_id: str, before: float, ttl: float | None = None) -> None:
        self._values[tenant_key(tenant_id)] = (repr(before), None if ttl is None else self._clock() + ttl)


class RedisRevocations:
    """Revocations shared by every replica through Redis, with a pub/sub-fed local cache."""

    def __init__(self, url: str, *, timeout: float = 0.25, local_ttl: float = 1.0, max_local: int = 100_000,
                 keep_warm: float = 30.0, monotonic: Clock = time.monotonic, clock: Clock = time.time) -> None:
        # ValueError when the URL is unusable; `check_redis_url` tells why before anything starts.
        self._redis = connect(url, timeout)
        self._client = self._redis.commands
        self._subscriber = self._redis.subscriber
        self._local_ttl = local_ttl
        self._keep_warm = keep_warm
        self._max_local = max_local
        self._monotonic = monotonic
        self._clock = clock
        self._local: dict[str, tuple[str | None, float]] = {}  # key -> (value, fetched_at monotonic)
        self._subscribed = False
        self._subscribed_gauge = revocation_subscribed()
        self._generation = 0  # bumped by every event and flush
        self._version = 0  # bumped by every change to `_local`: a verdict is only as good as it
        self._listener: asyncio.Task[None] | None = None
        self._fetching: dict[tuple[str, ...], asyncio.Future[list[str | None]]] = {}
        self._in_use: dict[RevocationQuery, _Tracked] = {}  # the queries checks read from the local cache
        self._refresher: asyncio.Task[None] | None = None
        self._master_watch: asyncio.Task[None] | None = None

    @property
    def commands(self) -> Any:
        """The command client (short timeouts, no retries), shared with DPoP replay protection."""
        return self._client

    @property
    def subscribed(self) -> bool:
        return self._subscribed

    def _mark_subscribed(self, subscribed: bool) -> None:
        self._subscribed = subscribed
        self._subscribed_gauge.set(1 if subscribed else 0)

    @property
    def location(self) -> dict[str, Any]:
        """For /status: where revocations are read (plain Redis or behind Sentinel), never the password."""
        return self._redis.location

    async def start(self) -> None:
        self._mark_subscribed(False)  # the gauge shows 0 until the first subscribe confirmation
        self._listener = asyncio.create_task(self._listen(), name="revocation-pubsub")
        if self._redis.behind_sentinel:
            self._master_watch = asyncio.create_task(self._follow_master(), name="revocation-master-watch")

    async def close(self) -> None:
        await cancel_and_wait(self._master_watch, self._listener, self._refresher)
        self._master_watch = self._listener = self._refresher = None
        await self._redis.aclose()

    def revoked_locally(self, query: RevocationQuery) -> bool | None:
        now = self._monotonic()
        tracked = self._in_use.get(query)
        # `_subscribed` is not read here: losing the subscription bumps the version.
        if tracked is not None and tracked.version == self._version and now <= tracked.until:
            tracked.used = now
            return tracked.revoked
        if not self._subscribed:
            return None
        cached = self._cached(query, now)
        if cached is None:
            return None
        tracked = self._track(query, now)
        tracked.revoked = is_revoked_by(cached, query)
        tracked.until = min(self._local[key][1] for key in query.keys) + self._local_ttl
        tracked.version = self._version
        return tracked.revoked

    async def is_revoked(self, query: RevocationQuery) -> bool:
        keys = query.keys
        cached = self._cached(query, self._monotonic()) if self._subscribed else None
        if cached is not None:
            return is_revoked_by(cached, query)
        # Checks of one token that miss together (a cold cache under load) share one MGET.
        fetch = self._fetching.get(keys)
        if fetch is None:
            fetch = self._fetching[keys] = asyncio.ensure_future(self._fetch(keys))
            fetch.add_done_callback(lambda done: self._fetched(keys, done))
        return is_revoked_by(await asyncio.shield(fetch), query)

    def _fetched(self, keys: tuple[str, ...], done: asyncio.Future[list[str | None]]) -> None:
        self._fetching.pop(keys, None)
        if not done.cancelled():
            done.exception()  # retrieved here too: every waiter may have been cancelled meanwhile

    async def _fetch(self, keys: tuple[str, ...]) -> list[str | None]:
        generation = self._generation
        try:
            values: list[str | None] = await self._client.mget(keys)  # type: ignore[assignment]  # decode_responses
        except _REDIS_ERRORS as exc:
            raise BackendUnavailable("redis", type(exc).__name__) from exc
        # An event or a flush that arrived while MGET was in flight may be newer than its answer.
        if self._subscribed and generation == self._generation:
            self._remember(keys, values)
        return values

    def _cached(self, query: RevocationQuery, now: float) -> list[str | None] | None:
        """The values of the query's keys from the local cache when all are fresh; the query is then in use."""
        oldest = now - self._local_ttl
        values: list[str | None] = []
        for key in query.keys:
            entry = self._local.get(key)
            if entry is None or entry[1] < oldest:
                return None
            values.append(entry[0])
        self._track(query, now)
        return values

    def _track(self, query: RevocationQuery, now: float) -> _Tracked:
        tracked = self._in_use.get(query)
        if tracked is None:
            if len(self._in_use) >= self._max_local:
                self._in_use.clear()  # as the local cache itself: bounded
            tracked = self._in_use[query] = _Tracked(now)
        tracked.used = now
        if self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_in_use(), name="revocation-refresh")
        return tracked

    async def _refresh_in_use(self) -> None:
        """Every half `local_ttl`, re-read the keys that checks used in the last `keep_warm` seconds, 512 per MGET.

        Every key in use is re-read together, so a busy replica makes about two round trips per `local_ttl`
        whatever its number of tokens, and a token back after a pause of less than `keep_warm` still finds
        its answer local. Stops when no key was used for `keep_warm`. A failure is only logged: the
        entries then expire at `local_ttl`, and the next check asks Redis itself and gets the tenant's
        decided answer if Redis is down.
        """
        try:
            while True:
                await asyncio.sleep(self._local_ttl / 2)
                idle_since = self._monotonic() - self._keep_warm
                self._in_use = {query: tracked for query, tracked in self._in_use.items() if tracked.used >= idle_since}
                # Tokens share their tenant's key (and a subject's tokens its key): each key read once.
                keys = tuple(dict.fromkeys(key for query in self._in_use for key in query.keys))
                if len(keys) > self._max_local:
                    self._in_use.clear()  # as the local cache itself: bounded; those checks then ask Redis
                    keys = ()
                if not keys or not self._subscribed:
                    return
                generation = self._generation
                for start in range(0, len(keys), _REFRESH_BATCH):
                    batch = keys[start:start + _REFRESH_BATCH]
                    try:
                        values: list[str | None] = await self._client.mget(batch)  # type: ignore[assignment]
                    except _REDIS_ERRORS as exc:
                        log.warning("revocation_refresh_failed", error=type(exc).__name__, keys=len(keys))
                        return
                    # As on the request path: an event or flush during the MGET may be newer than its answer.
                    if self._subscribed and generation == self._generation:
                        self._remember(batch, values)
        finally:
            self._refresher = None

    def _remember(self, keys: tuple[str, ...], values: list[str | None]) -> None:
        now = self._monotonic()
        self._version += 1
        if len(self._local) + len(keys) > self._max_local:
            self._local.clear()  # cheaper than tracking age order; a miss costs one MGET
        for key, value in zip(keys, values, strict=True):
            self._local[key] = (value, now)

    async def _listen(self) -> None:
        backoff = 0.05
        while True:
            pubsub = self._subscriber.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                async for message in pubsub.listen():
                    backoff = 0.05
                    self._on_message(message)
            except _REDIS_ERRORS as exc:
                if self._subscribed:
                    log.warning("revocation_pubsub_lost", error=type(exc).__name__)
            finally:
                self._mark_subscribed(False)
                self._generation += 1
                self._version += 1
                self._local.clear()
                with contextlib.suppress(*_REDIS_ERRORS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _follow_master(self) -> None:
        """Behind Sentinel: when the sentinels name another master while the old one still answers, move
        the commands and the subscription to it (resubscribing flushes the cache, as any resubscribe)."""
        unanswered = False
        while True:
            await asyncio.sleep(_MASTER_CHECK)
            try:
                moved = await self._redis.master_moved()
            except _REDIS_ERRORS as exc:
                # No master named (a failover in progress) or no sentinel answers: keep what works, say it once.
                if not unanswered:
                    log.warning("revocation_sentinels_name_no_master", error=type(exc).__name__)
                unanswered = True
                continue
            if unanswered:
                log.info("revocation_sentinels_name_a_master", master=self._redis.location.get("master"))
                unanswered = False
            if moved:
                log.warning("revocation_master_moved", master=self._redis.location.get("master"))
                await cancel_and_wait(self._listener)
                self._listener = asyncio.create_task(self._listen(), name="revocation-pubsub")

    def _on_message(self, message: dict[str, Any]) -> None:
        self._generation += 1
        self._version += 1
        kind = message.get("type")
        if kind == "subscribe":
            # Also sent again after redis-py reconnects by itself: whatever was published meanwhile
            # is lost, so start from an empty cache.
            self._local.clear()
            self._mark_subscribed(True)
            log.info("revocation_pubsub_subscribed")
        elif kind == "message":
            try:
                event = json.loads(message["data"])
                self._local[str(event["key"])] = (str(event["value"]), self._monotonic())
            except (ValueError, KeyError, TypeError):
                log.warning("revocation_event_unreadable")

    async def _write(self, key: str, value: str, ttl: float | None) -> None:
        pipe = self._client.pipeline(transaction=True)
        if ttl is None:
            pipe.set(key, value)
        else:
            pipe.set(key, value, px=max(1, int(ttl * 1000)))
        pipe.publish(CHANNEL, json.dumps({"key": key, "value": value}))
        try:
            await pipe.execute()
        except _REDIS_ERRORS as exc:
            raise BackendUnavailable("redis", type(exc).__name__) from exc

    async def revoke_token(self, issuer: str, jti: str, expires_at: float) -> bool:
        ttl = expires_at - self._clock()
        if ttl <= 0:
            return False
        await self._write(token_key(issuer, jti), "1", ttl)
        return True

    async def revoke_subject(self, tenant_id: str, subject: str, before: float, ttl: float | None = None) -> None:
        await self._write(subject_key(tenant_id, subject), repr(before), ttl)

    async def revoke_tenant(self, tenant_id: str, before: float, ttl: float | None = None) -> None:
        await self._write(tenant_key(tenant_id), repr(before), ttl)

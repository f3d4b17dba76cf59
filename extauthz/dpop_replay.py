"""DPoP proof replay protection (RFC 9449 section 11.1): a proof's `jti` is accepted once per key.

A jti is remembered for as long as its proof could still be accepted (until `iat + max_age + skew`), so
the memory needed is bounded by the rate of proofs times that window. Keys are a hash of (the proof
key's thumbprint, jti): the jti is client-chosen text of any length, and two clients choosing the same
jti do not collide.

`MemoryReplay` is one process's set (ext_authz without `--redis`; with `--workers N` each process has
its own, so a replay to another worker is not caught: run with `--redis` then). `RedisReplay` adds
Redis `SET key 1 NX PX ttl`, shared by every replica and worker, on the revocation store's command
client (same timeouts, same Sentinel failover); its local set answers a replay seen by this process
without a round trip. A Redis error raises BackendUnavailable; the caller applies the tenant's
`on_store_error`.

The DPoP nonce secret of `MemoryReplay` is random per process; with `--workers N` (and no Redis) the
workers share one through a file in the directory their parent made for them (`pavilion.workers`, mode
0700, removed when they stop): the first worker to need it writes it whole under a temporary name and
links it in place (atomic, and only one link can win); the others read it. So a nonce one worker gives
is accepted by every other, as with Redis. The jti sets stay per worker (see above).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import os
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

from redis.exceptions import RedisError

from extauthz.revocation import RedisRevocations, RevocationStore
from pavilion.errors import BackendUnavailable
from pavilion.log import get_logger
from pavilion.workers import shared_directory

log = get_logger(__name__)

__all__ = ["NONCE_SECRET_KEY", "MemoryReplay", "RedisReplay", "ReplayStore", "replay_key", "replay_store_for"]

_PREFIX = "pavilion:dpop:jti:"
NONCE_SECRET_KEY = "pavilion:dpop:nonce-secret"
_MAX_ENTRIES = 1_000_000
NONCE_SECRET_FILE = "dpop-nonce-secret"
Clock = Callable[[], float]


def replay_key(jkt: str, jti: str) -> str:
    return _PREFIX + hashlib.sha256(f"{jkt}\0{jti}".encode("utf-8", "surrogatepass")).hexdigest()[:40]


class ReplayStore(Protocol):
    async def first_use(self, key: str, ttl: float) -> bool:
        """True the first time `key` is seen within `ttl` seconds, False after; BackendUnavailable when the
        store cannot tell."""

    async def nonce_secret(self) -> bytes:
        """The key of DPoP nonces (dpop_nonce.py), the same for every process sharing the store;
        BackendUnavailable when it cannot be read."""


class MemoryReplay:
    """Seen keys with their expiry, purged as they expire; refuses to grow past `max_entries` (raising
    BackendUnavailable, so the tenant's on_store_error decides) rather than forget a live jti."""

    def __init__(self, clock: Clock = time.monotonic, max_entries: int = _MAX_ENTRIES,
                 share_in: str | None = None) -> None:
        self._clock = clock
        self._share_in = share_in  # the workers' directory holding the nonce secret they share
        self._sharing = asyncio.Lock()
        self._max_entries = max_entries
        self._expires: dict[str, float] = {}
        self._queue: list[tuple[float, str]] = []   # (expires_at, key), a heap
        self._secret = secrets.token_bytes(32)

    def __len__(self) -> int:
        return len(self._expires)

    def seen(self, key: str) -> bool:
        expires = self._expires.get(key)
        return expires is not None and expires > self._clock()

    def remember(self, key: str, ttl: float) -> None:
        now = self._clock()
        queue = self._queue
        while queue and queue[0][0] <= now:
            _, old = heapq.heappop(queue)
            if self._expires.get(old, now + 1) <= now:
                del self._expires[old]
        if len(self._expires) >= self._max_entries:
            raise BackendUnavailable("dpop-replay", "the in-memory jti set is full")
        self._expires[key] = now + ttl
        heapq.heappush(queue, (now + ttl, key))

    async def first_use(self, key: str, ttl: float) -> bool:
        if self.seen(key):
            return False
        self.remember(key, ttl)
        return True

    async def nonce_secret(self) -> bytes:
        if self._share_in is not None:
            async with self._sharing:  # the first asker reads the file; the others wait for its answer
                if self._share_in is not None:
                    try:
                        self._secret = await asyncio.to_thread(shared_secret, self._share_in)
                    except (OSError, ValueError) as exc:
                        log.warning("dpop_nonce_secret_not_shared", detail=f"{type(exc).__name__}: {exc}",
                                    effect="each worker gives nonces of its own: run with --redis")
                    self._share_in = None
        return self._secret


def shared_secret(directory: str) -> bytes:
    """The nonce secret in `directory`, written by the first process to ask. Blocking: in a thread."""
    final = os.path.join(directory, NONCE_SECRET_FILE)
    if not os.path.exists(final):
        temporary = os.path.join(directory, f".{NONCE_SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
            with contextlib.suppress(FileExistsError):  # another worker's is in place: read that one
                os.link(temporary, final)
        finally:
            os.unlink(temporary)
    with open(final, encoding="ascii") as handle:
        secret = bytes.fromhex(handle.read(128))
    if len(secret) != 32:
        raise ValueError(f"{final} does not hold a 32-byte secret")
    return secret


class RedisReplay:
    """Every replica's jtis in Redis (SET NX PX), with this process's own in front of it."""

    def __init__(self, client: Any, clock: Clock = time.monotonic) -> None:
        self._client = client
        self._local = MemoryReplay(clock)
        self._secret: bytes | None = None

    async def first_use(self, key: str, ttl: float) -> bool:
        if self._local.seen(key):
            return False
        try:
            stored = await self._client.set(key, "1", nx=True, px=max(1, int(ttl * 1000)))
        except (RedisError, OSError, TimeoutError) as exc:
            raise BackendUnavailable("redis", type(exc).__name__) from exc
        with contextlib.suppress(BackendUnavailable):  # the local set only saves round trips; Redis holds the jti
            self._local.remember(key, ttl)
        return bool(stored)

    async def nonce_secret(self) -> bytes:
        """The first replica to ask writes a random secret (SET NX); every one reads the one that won."""
        if self._secret is None:
            try:
                await self._client.set(NONCE_SECRET_KEY, secrets.token_hex(32), nx=True)
                value = await self._client.get(NONCE_SECRET_KEY)
            except (RedisError, OSError, TimeoutError) as exc:
                raise BackendUnavailable("redis", type(exc).__name__) from exc
            try:
                self._secret = bytes.fromhex(value)
            except (TypeError, ValueError) as exc:
                raise BackendUnavailable("redis", "the DPoP nonce secret is unreadable") from exc
        return self._secret


def replay_store_for(revocations: RevocationStore) -> ReplayStore:
    """Redis-backed when revocations are (`--redis`), so every replica shares the jtis; else in memory."""
    if isinstance(revocations, RedisRevocations):
        return RedisReplay(revocations.commands)
    return MemoryReplay(share_in=shared_directory())

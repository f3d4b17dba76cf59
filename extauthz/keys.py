"""One tenant's verification keys, kept current in the background; no network call per request.

Rules (issue 4, item 2):
- keys are parsed once per load; a lookup is a dict access;
- a background task refreshes ahead of expiry (Cache-Control max-age within the source's bounds);
- a failed refresh keeps the last good keys (stale-while-error); only a key set that never had a
  usable key answers BackendUnavailable, and while cold it retries at most once per backoff step;
- an unknown kid causes at most one refetch per cooldown, and concurrent misses share that one
  fetch (a single in-flight task, shielded so a cancelled request does not cancel it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from extauthz.jwk import Key, LoadedKeys
from extauthz.jwks import DiscoveryLoader, FetchError, InlineLoader, KeyLoader, Loaded, loader_for
from extauthz.metrics import KEY_REFRESHES, forget_keys_stale, set_keys_stale
from extauthz.tenant import Tenant
from pavilion.errors import BackendUnavailable, ConfigError, TokenError, UnknownKey
from pavilion.lifecycle import cancel_and_wait
from pavilion.log import get_logger

__all__ = ["Key", "KeySet", "default_session", "key_set_for"]

log = get_logger("extauthz.keys")

SessionFactory = Callable[[], aiohttp.ClientSession]
REFRESH_AHEAD = 0.8       # refresh when 80 % of a key set's lifetime has passed
FILE_POLL = 2.0           # seconds between mtime checks of a file source


def default_session() -> aiohttp.ClientSession:
    # trust_env=False: proxy variables must not redirect key fetches.
    return aiohttp.ClientSession(trust_env=False, connector=aiohttp.TCPConnector(limit=4))


class KeySet:
    """Keys of one tenant. Use `key_set_for`; call `start()` once and `close()` at shutdown."""

    def __init__(self, tenant: Tenant, loader: KeyLoader, session_factory: SessionFactory = default_session,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tenant = tenant
        self._source = tenant.jwks
        self._loader = loader
        self._session_factory = session_factory
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._by_kid: dict[str, tuple[Key, ...]] = {}
        self._all: tuple[Key, ...] = ()
        self._inflight: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._closed = False
        self._ttl = self._source.refresh
        self._loaded_at: float | None = None       # clock() of the last successful load
        self._last_attempt: float | None = None
        self._last_kid_refetch: float | None = None
        self._retry_at = 0.0                        # clock() before which a failed source is not retried
        self._backoff = self._source.error_retry
        self._last_error: str | None = None
        self._last_fetch_wall: float | None = None
        self._origin: str | None = None
        self._fetches = 0
        self._failures = 0
        self._dropped: tuple[tuple[str | None, str], ...] = ()
        if isinstance(loader, InlineLoader):
            self._install(loader.loaded)

    # -- requests --------------------------------------------------------------------------------

    async def key_for(self, kid: str | None, alg: str) -> Key:
        """The key to check a token signed with `alg` under `kid`.

        UnknownKey when no key has that kid (after at most one refetch per cooldown);
        TokenError(alg_key_mismatch) when the kid names a key of another type or curve;
        BackendUnavailable("jwks") when no key was ever loaded.
        """
        key = self._lookup(kid, alg)
        if key is not None:
            return key
        if not self._all:
            await self._refetch_cold()
            if not self._all:
                raise BackendUnavailable("jwks", f"tenant {self.tenant.id}: {self._last_error or 'no usable keys'}")
        elif not self._loader.static and self._may_refetch_for_kid():
            await self._shared_refresh()
        key = self._lookup(kid, alg)
        if key is None:
            raise UnknownKey("no key of the issuer has this kid" if kid is not None
                             else "token has no kid and no single key fits its alg")
        return key

    def _lookup(self, kid: str | None, alg: str) -> Key | None:
        if kid is None:
            fitting = [key for key in self._all if key.accepts(alg)]
            return fitting[0] if len(fitting) == 1 else None
        candidates = self._by_kid.get(kid)
        if not candidates:
            return None
        for key in candidates:
            if key.accepts(alg):
                return key
        raise TokenError("the key named by kid cannot verify the token algorithm", reason="alg_key_mismatch")

    def _may_refetch_for_kid(self) -> bool:
        if self._inflight is not None:
            return True
        now = self._clock()
        if self._last_kid_refetch is not None and now - self._last_kid_refetch < self._source.cooldown:
            return False
        self._last_kid_refetch = now
        return True

    async def _refetch_cold(self) -> None:
        if self._loader.static:
            return
        if self._inflight is None and self._clock() < self._retry_at:
            return
        await self._shared_refresh()

    async def introspection_endpoint(self) -> str:
        """The discovery document's introspection_endpoint (loading it first if it never loaded);
        BackendUnavailable("introspection") when there is none."""
        loader = self._loader
        if not isinstance(loader, DiscoveryLoader):
            raise BackendUnavailable("introspection", f"tenant {self.tenant.id}: no discovery document")
        if loader.introspection_endpoint is None and not self._all:
            await self._refetch_cold()
        if loader.introspection_endpoint is None:
            raise BackendUnavailable("introspection",
                                     f"tenant {self.tenant.id}: the discovery document names no introspection_endpoint")
        return loader.introspection_endpoint

    # -- loading ---------------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Load now (sharing a fetch already in flight); True when usable keys are loaded afterwards."""
        await self._shared_refresh()
        return bool(self._all)

    async def _shared_refresh(self) -> None:
        if self._closed:
            return
        task = self._inflight
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load_once(), name=f"jwks-{self.tenant.id}")
            self._inflight = task
            task.add_done_callback(self._clear_inflight)
        await asyncio.shield(task)

    def _clear_inflight(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _load_once(self) -> None:
        self._last_attempt = self._clock()
        self._fetches += 1
        try:
            if self._loader.remote and self._session is None:
                self._session = self._session_factory()
            loaded = await self._loader.load(self._session)
        except FetchError as exc:
            self._fail(str(exc))
            return
        if loaded is None:   # the file is the one last loaded with success
            self._loaded_at = self._clock()
        elif not loaded.keys.keys:
            self._fail(f"{loaded.origin}: no usable key ({len(loaded.keys.dropped)} dropped)", loaded.keys)
            return
        else:
            self._install(loaded)
        self._last_error = None
        self._backoff = self._source.error_retry
        self._retry_at = 0.0
        self._count_load("ok")

    def _fail(self, why: str, keys: LoadedKeys | None = None) -> None:
        self._failures += 1
        self._last_error = why
        self._retry_at = self._clock() + self._backoff
        self._backoff = min(self._backoff * 2, self._ttl)
        if keys is not None:
            self._log_dropped(keys)
        log.warning("jwks_load_failed", tenant=self.tenant.id, error=why, keys_kept=len(self._all))
        self._count_load("error")

    def _count_load(self, result: str) -> None:
        KEY_REFRESHES.labels(self.tenant.id, result).inc()
        if not self._closed:
            set_keys_stale(self.tenant.id, self, self.stale)

    @property
    def stale(self) -> bool:
        """Serving the last good keys because refreshes fail (stale-while-error)."""
        return self._last_error is not None and bool(self._all)

    def _install(self, loaded: Loaded) -> None:
        by_kid: dict[str, list[Key]] = {}
        for key in loaded.keys.keys:
            if key.kid is not None:
                by_kid.setdefault(key.kid, []).append(key)
        changed = (self._loaded_at is None or set(by_kid) != set(self._by_kid)
                   or len(self._all) != len(loaded.keys.keys))
        self._by_kid = {kid: tuple(keys) for kid, keys in by_kid.items()}
        self._all = loaded.keys.keys
        self._dropped = loaded.keys.dropped
        self._origin = loaded.origin
        self._loaded_at = self._clock()
        self._last_fetch_wall = time.time()
        age = loaded.max_age if loaded.max_age is not None else self._source.refresh
        self._ttl = min(max(age, self._source.min_refresh), self._source.max_refresh)
        if not changed:   # a routine refresh with the same kids: no log line every few minutes
            return
        self._log_dropped(loaded.keys)
        log.info("jwks_loaded", tenant=self.tenant.id, origin=loaded.origin, keys=len(self._all),
                 kids=sorted(self._by_kid), dropped=len(loaded.keys.dropped), ttl=self._ttl)

    def _log_dropped(self, keys: LoadedKeys) -> None:
        for kid, why in keys.dropped:
            log.warning("jwks_key_dropped", tenant=self.tenant.id, kid=kid, why=why)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load once (bounded by the source's timeout), then keep refreshing in the background."""
        if self._loader.static or self._refresher is not None:
            return
        await self._shared_refresh()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever(),
                                                                 name=f"jwks-refresh-{self.tenant.id}")
        self._refresher.add_done_callback(self._refresher_done)

    def _refresher_done(self, task: asyncio.Task[None]) -> None:
        # A refresher that dies would leave keys to go stale unnoticed: say so loudly.
        if not task.cancelled() and task.exception() is not None:
            log.error("jwks_refresher_died", tenant=self.tenant.id, error=repr(task.exception()))

    def _next_refresh_in(self) -> float:
        now = self._clock()
        if self._last_error is not None or self._loaded_at is None:
            return max(self._retry_at - now, 0.05)
        period = FILE_POLL if not self._loader.remote else self._ttl * REFRESH_AHEAD
        return max(self._loaded_at + period - now, 0.05)

    async def _refresh_forever(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._next_refresh_in())
            await self._shared_refresh()

    async def close(self) -> None:
        self._closed = True
        await cancel_and_wait(self._refresher, self._inflight)
        self._refresher = self._inflight = None
        forget_keys_stale(self.tenant.id, self)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def status(self) -> dict[str, Any]:
        """For metrics and the admin page: what is loaded and how the source behaves. No key material."""
        return {
            "tenant": self.tenant.id,
            "source": self._source.kind,
            "origin": self._origin,
            "keys": len(self._all),
            "kids": sorted(self._by_kid),
            "dropped": [{"kid": kid, "why": why} for kid, why in self._dropped],
            "last_fetch": self._last_fetch_wall,
            "last_error": self._last_error,
            "stale": self.stale,
            "ttl": self._ttl,
            "fetches": self._fetches,
            "failures": self._failures,
        }


def key_set_for(tenant: Tenant, session_factory: SessionFactory = default_session,
                clock: Callable[[], float] = time.monotonic) -> KeySet:
    """The key set of `tenant`. An inline set is parsed here, so a bad one is a ConfigError at load."""
    try:
        loader = loader_for(tenant.jwks, tenant.issuer)
    except FetchError as exc:
        raise ConfigError(str(exc), path=f"tenants.{tenant.id}.jwks.inline") from exc
    if isinstance(loader, InlineLoader) and not loader.loaded.keys.keys and tenant.has_keys:
        reasons = "; ".join(f"{kid or '?'}: {why}" for kid, why in loader.loaded.keys.dropped) or "empty"
        raise ConfigError(f"no usable key ({reasons})", path=f"tenants.{tenant.id}.jwks.inline")
    return KeySet(tenant, loader, session_factory, clock)

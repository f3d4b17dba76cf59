"""ext_authz /status: the revocation store, where it is (never its password) and whether its pub/sub is up."""

from __future__ import annotations

from extauthz.app import revocations_status
from extauthz.revocation import MemoryRevocations, RedisRevocations


async def test_the_revocation_store_on_status_never_shows_the_password() -> None:
    url = "rediss://lim:hunter2@cache.internal:6380/2"
    store = RedisRevocations(url)  # not started: not subscribed, so every check would ask Redis
    try:
        shown = revocations_status(store)
    finally:
        await store.close()
    assert shown == {"kind": "redis", "address": "cache.internal:6380", "db": 2, "tls": True, "auth": True,
                     "subscribed": False}
    assert "hunter2" not in str(shown)
    assert revocations_status(MemoryRevocations()) == {"kind": "memory"}

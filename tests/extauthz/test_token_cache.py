"""The verified-token cache: keyed by a hash, expiring by exp (and max_age), bounded, LRU."""

from __future__ import annotations

from extauthz.token_cache import VerifiedTokenCache, token_digest


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_are_keyed_by_a_digest_never_by_the_token() -> None:
    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    digest = token_digest(token)
    assert len(digest) == 32 and token.encode() not in digest
    cache = VerifiedTokenCache(clock=Clock())
    cache.put(digest, "tenant", "verified", expires_at=2000.0)
    assert cache.get(digest) == ("tenant", "verified")
    assert cache.get(token_digest(token + "x")) is None
    assert all(isinstance(key, bytes) and len(key) == 32 for key in cache._entries)


def test_an_entry_expires_at_exp_or_max_age_whichever_comes_first() -> None:
    clock = Clock()
    cache = VerifiedTokenCache(max_age=300.0, clock=clock)
    cache.put(b"a" * 32, "t", "soon", expires_at=clock.now + 10)
    cache.put(b"b" * 32, "t", "late", expires_at=clock.now + 10_000)
    cache.put(b"c" * 32, "t", "expired", expires_at=clock.now - 1)
    assert cache.get(b"c" * 32) is None
    clock.now += 10
    assert cache.get(b"a" * 32) is None          # at exp: gone
    assert cache.get(b"b" * 32) == ("t", "late")
    clock.now += 290
    assert cache.get(b"b" * 32) is None          # max_age reached long before its exp


def test_the_cache_is_bounded_and_keeps_the_recently_used() -> None:
    cache = VerifiedTokenCache(max_entries=3, clock=Clock())
    for name in (b"1", b"2", b"3"):
        cache.put(name * 32, "t", name, expires_at=5000.0)
    assert cache.get(b"1" * 32) is not None      # 1 is now the most recently used
    cache.put(b"4" * 32, "t", b"4", expires_at=5000.0)
    assert len(cache) == 3
    assert cache.get(b"2" * 32) is None          # the least recently used went
    assert cache.get(b"1" * 32) is not None and cache.get(b"4" * 32) is not None

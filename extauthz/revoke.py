"""`pavilion revoke`: write one revocation to Redis; every ext_authz replica applies it within a second.

Each region keeps its own Redis (ARCHITECTURE: "per region"), and an ext_authz replica only hears the
Redis it is given, so a revocation meant for the whole gateway is written to every region's Redis:
`--redis` is repeated, once per region. The writes go out together and carry one cut-off instant,
so "issued before T" means the same T everywhere. A region that cannot be written is named (its
password starred) and makes the exit status 1; the regions written keep their revocation. Running the
same command again is safe: a token revocation is the same key again, and a later cut-off only
refuses more tokens, never fewer.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from extauthz.redis_clients import check_redis_url
from extauthz.revocation import RedisRevocations
from pavilion.durations import parse_duration
from pavilion.errors import BackendUnavailable
from pavilion.log import redact_url


def run_revoke(args: argparse.Namespace) -> int:
    urls: list[str] = args.redis
    if args.jti is not None and args.expires is None:
        print("pavilion revoke: --jti needs --expires (the token's exp, UNIX seconds)", file=sys.stderr)
        return 2
    try:
        ttl = parse_duration(args.ttl) if args.ttl else None
    except ValueError as exc:
        print(f"pavilion revoke: --ttl: {exc}", file=sys.stderr)
        return 2
    for url in urls:  # every URL checked before anything is written: a typo must not leave a region out
        try:
            check_redis_url(url)
        except ValueError as exc:  # the password starred out
            print(f"pavilion revoke: {exc}", file=sys.stderr)
            return 2
    if len(set(urls)) != len(urls):
        print("pavilion revoke: the same --redis is given twice", file=sys.stderr)
        return 2
    now = time.time()
    if args.jti is not None and args.expires <= now:
        print("token already expired: nothing to revoke")
        return 0
    failures = asyncio.run(_revoke_everywhere(args, urls, ttl, now))
    for url, error in failures:
        print(f"pavilion revoke: not written to {redact_url(url)}: {error}", file=sys.stderr)
    if failures and len(failures) < len(urls):
        print(f"pavilion revoke: written to {len(urls) - len(failures)} of {len(urls)}; run it again for the rest "
              "(a later cut-off only refuses more tokens)", file=sys.stderr)
    if failures:
        return 1
    print(_written(args, now) + (f" in {len(urls)} Redis" if len(urls) > 1 else ""))
    return 0


async def _revoke_everywhere(args: argparse.Namespace, urls: list[str], ttl: float | None,
                             now: float) -> list[tuple[str, BackendUnavailable]]:
    results = await asyncio.gather(*(_revoke(args, url, ttl, now) for url in urls))
    return [(url, error) for url, error in zip(urls, results, strict=True) if error is not None]


async def _revoke(args: argparse.Namespace, url: str, ttl: float | None, now: float) -> BackendUnavailable | None:
    store = RedisRevocations(url, timeout=2.0)
    try:
        if args.jti is not None:
            await store.revoke_token(args.issuer, args.jti, args.expires)
        elif args.subject is not None:
            await store.revoke_subject(args.tenant, args.subject, now, ttl)
        else:
            await store.revoke_tenant(args.tenant, now, ttl)
    except BackendUnavailable as exc:
        return exc
    finally:
        await store.close()
    return None


def _written(args: argparse.Namespace, now: float) -> str:
    if args.jti is not None:
        return f"revoked token jti of tenant {args.tenant} until {args.expires:.0f}"
    if args.subject is not None:
        return f"revoked tokens of one subject of tenant {args.tenant} issued before {now:.3f}"
    return f"revoked every token of tenant {args.tenant} issued before {now:.3f}"

"""`pavilion revoke`: write one revocation to Redis; every ext_authz replica applies it within a second."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from extauthz.redis_clients import check_redis_url
from extauthz.revocation import RedisRevocations
from pavilion.durations import parse_duration
from pavilion.errors import BackendUnavailable


def run_revoke(args: argparse.Namespace) -> int:
    if args.jti is not None and args.expires is None:
        print("pavilion revoke: --jti needs --expires (the token's exp, UNIX seconds)", file=sys.stderr)
        return 2
    try:
        ttl = parse_duration(args.ttl) if args.ttl else None
    except ValueError as exc:
        print(f"pavilion revoke: --ttl: {exc}", file=sys.stderr)
        return 2
    try:
        check_redis_url(args.redis)
    except ValueError as exc:  # the password starred out
        print(f"pavilion revoke: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_revoke(args, ttl))
    except BackendUnavailable as exc:
        print(f"pavilion revoke: {exc}", file=sys.stderr)
        return 1


async def _revoke(args: argparse.Namespace, ttl: float | None) -> int:
    store = RedisRevocations(args.redis, timeout=2.0)
    try:
        now = time.time()
        if args.jti is not None:
            if not await store.revoke_token(args.issuer, args.jti, args.expires):
                print("token already expired: nothing to revoke")
                return 0
            print(f"revoked token jti of tenant {args.tenant} until {args.expires:.0f}")
        elif args.subject is not None:
            await store.revoke_subject(args.tenant, args.subject, now, ttl)
            print(f"revoked tokens of one subject of tenant {args.tenant} issued before {now:.3f}")
        else:
            await store.revoke_tenant(args.tenant, now, ttl)
            print(f"revoked every token of tenant {args.tenant} issued before {now:.3f}")
        return 0
    finally:
        await store.close()

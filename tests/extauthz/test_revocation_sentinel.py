"""The Redis revocation store behind Redis Sentinel (`--redis redis+sentinel://...`): it finds the master
through the sentinel, and after a failover its pub/sub and its commands follow the promoted replica."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from extauthz.app import ExtAuthzSettings, revocations_status, run
from extauthz.revocation import RedisRevocations, RevocationQuery, token_key
from extauthz.revoke import run_revoke
from pavilion.errors import BackendUnavailable
from tests.sentinel_procs import MASTER_NAME, sentinel_group

ISS = "https://idp.acme.test"
PASSWORD = "hunter2-sentinel"


def query(jti: str) -> RevocationQuery:
    return RevocationQuery("acme", ISS, "alice", jti, time.time() - 10)


async def until(check: Callable[[], Awaitable[bool]], what: str, deadline: float = 30.0) -> float:
    """Seconds it took `check` to hold; fails past `deadline`. Errors count as "not yet"."""
    started = time.monotonic()
    while True:
        try:
            if await check():
                return time.monotonic() - started
        except BackendUnavailable:  # while the master is gone
            pass
        assert time.monotonic() - started < deadline, f"{what}: not within {deadline} s"
        await asyncio.sleep(0.05)


async def test_revocations_follow_a_sentinel_failover_on_commands_and_pubsub() -> None:
    with sentinel_group(password=PASSWORD) as group:
        # The reader keeps answers 60 s: it can only learn of a later revocation through pub/sub.
        writer, reader = RedisRevocations(group.url()), RedisRevocations(group.url(), local_ttl=60.0)
        await writer.start()
        await reader.start()
        try:
            await until(lambda: asyncio.sleep(0, reader.subscribed and writer.subscribed), "both subscribed", 10)
            assert not await reader.is_revoked(query("before"))  # now cached as "not revoked" for 60 s
            assert await writer.revoke_token(ISS, "before", time.time() + 120)
            assert await writer.is_revoked(query("before"))
            await until(lambda: reader.is_revoked(query("before")), "pub/sub reached the reader", 5)
            old_master = f"127.0.0.1:{group.master_port}"
            assert group.master_address() == old_master
            assert reader.location["master"] == old_master  # found through the sentinel
            await until(lambda: asyncio.sleep(0, group.replicated()), "the replica caught up", 10)

            group.master.stop()
            killed = time.monotonic()
            await until(lambda: asyncio.sleep(0, group.master_address() == f"127.0.0.1:{group.replica_port}"),
                        "the sentinel promoted the replica")
            promoted = time.monotonic() - killed
            # Each store resubscribes on the new master, by itself.
            await until(lambda: asyncio.sleep(0, reader.subscribed and writer.subscribed), "resubscribed")
            resubscribed = time.monotonic() - killed
            # The reader caches "not revoked" for 60 s again, now from the new master...
            assert not await reader.is_revoked(query("after"))
            assert await writer.revoke_token(ISS, "after", time.time() + 120)  # ...a write on the new master
            # ...so only a message published on the new master and received by its new subscription
            # can tell it within the deadline.
            await until(lambda: reader.is_revoked(query("after")), "pub/sub after the failover", 5)
            seen = time.monotonic() - killed
            assert await writer.is_revoked(query("after"))
            new_master = f"127.0.0.1:{group.replica_port}"
            assert reader.location["master"] == writer.location["master"] == new_master
            # The commands are on the new master: the key is there, and the one replicated before is too.
            assert group.cli(group.replica_port, "EXISTS", token_key(ISS, "after")) == "1"
            assert await reader.is_revoked(query("before"))
            print(f"\nfailover: sentinel promoted after {promoted:.1f} s, stores resubscribed after "
                  f"{resubscribed:.1f} s, a new revocation seen by the other store {seen:.1f} s after the kill")
        finally:
            await writer.close()
            await reader.close()


async def test_a_master_demoted_while_still_up_is_left_for_the_one_the_sentinel_names() -> None:
    """As in a `SENTINEL FAILOVER` for maintenance or a partition: the old master keeps answering, so no
    connection fails. Here it stays a master for good (the sentinel is pointed at the replica by hand),
    so only asking the sentinel can move the store."""
    with sentinel_group(password=PASSWORD) as group:
        reader = RedisRevocations(group.url(), local_ttl=60.0)
        await reader.start()
        try:
            await until(lambda: asyncio.sleep(0, reader.subscribed), "subscribed", 10)
            assert not await reader.is_revoked(query("moved"))  # now cached as "not revoked" for 60 s
            old, new = f"127.0.0.1:{group.master_port}", f"127.0.0.1:{group.replica_port}"
            assert reader.location["master"] == old
            group.cli(group.replica_port, "REPLICAOF", "NO", "ONE")
            group.cli(group.sentinel_port, "SENTINEL", "REMOVE", MASTER_NAME)
            group.cli(group.sentinel_port, "SENTINEL", "MONITOR", MASTER_NAME, "127.0.0.1", str(group.replica_port),
                      "1")
            group.cli(group.sentinel_port, "SENTINEL", "SET", MASTER_NAME, "auth-pass", PASSWORD)
            assert group.master_address() == new
            assert group.cli(group.master_port, "ROLE").split()[0] == "master"  # still up, still a master
            # Written as `pavilion revoke` does, by a new client: to the master the sentinel names.
            writer = RedisRevocations(group.url())
            try:
                assert await writer.revoke_token(ISS, "moved", time.time() + 120)
            finally:
                await writer.close()
            await until(lambda: reader.is_revoked(query("moved")), "the reader follows the sentinel")
            assert reader.location["master"] == new
            # Its own writes go to the new master too.
            assert await reader.revoke_token(ISS, "own", time.time() + 120)
            assert group.cli(group.replica_port, "EXISTS", token_key(ISS, "own")) == "1"
            assert group.cli(group.master_port, "EXISTS", token_key(ISS, "own")) == "0"
        finally:
            await reader.close()


def revoke_args(url: str, jti: str) -> argparse.Namespace:
    return argparse.Namespace(redis=[url], tenant="acme", issuer=ISS, jti=jti, expires=time.time() + 120,
                              subject=None, all=False, ttl=None)


def test_pavilion_revoke_writes_through_a_sentinel_that_wants_its_own_password(
        capsys: pytest.CaptureFixture[str]) -> None:
    with sentinel_group(password=PASSWORD, sentinel_password="sentinel-pw") as group:
        assert run_revoke(revoke_args(group.url(), "cli")) == 0
        assert group.cli(group.master_port, "EXISTS", token_key(ISS, "cli")) == "1"
        # Without the sentinel's password no master is found: refused as Redis being down.
        assert run_revoke(revoke_args(group.url().replace("sentinel-pw", "wrong-pw"), "nope")) == 1
        assert group.cli(group.master_port, "EXISTS", token_key(ISS, "nope")) == "0"
        shown = capsys.readouterr()
        assert "redis unavailable" in shown.err
        assert "wrong-pw" not in shown.err + shown.out and PASSWORD not in shown.err + shown.out


def test_pavilion_revoke_refuses_a_bad_sentinel_url_without_printing_the_password(
        capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:1/{MASTER_NAME}/zero"
    assert run_revoke(revoke_args(url, "x")) == 2
    err = capsys.readouterr().err
    assert "the database must be a number" in err and ":***@" in err
    assert PASSWORD not in err


async def test_the_sentinel_store_on_status_names_master_and_sentinels_never_a_password() -> None:
    url = f"redis+sentinel://app:{PASSWORD}@10.0.0.1:26379,10.0.0.2/{MASTER_NAME}/3?sentinel_password=s3cret-pw"
    store = RedisRevocations(url)  # not started: nothing is asked yet
    try:
        shown = revocations_status(store)
    finally:
        await store.close()
    assert shown == {"kind": "redis-sentinel", "master_name": MASTER_NAME,
                     "sentinels": ["10.0.0.1:26379", "10.0.0.2:26379"], "db": 3, "auth": True,
                     "sentinel_auth": True, "master": None, "subscribed": False}
    text = json.dumps(shown)
    assert PASSWORD not in text and "s3cret-pw" not in text


def test_a_bad_sentinel_url_stops_the_start_with_the_password_starred_out(tmp_path: Path) -> None:
    config = tmp_path / "tenants.yaml"
    config.write_text("tenants:\n  - id: acme\n    issuer: https://i\n    audiences: [a]\n    jwks: {uri: https://i/j}\n")
    url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:26379"  # no master name
    with capture_logs() as logs:
        assert run(ExtAuthzSettings(config=str(config), redis_url=url)) == 2
    [refusal] = [entry for entry in logs if entry["event"] == "bad_redis_url"]
    assert "redis+sentinel://:***@127.0.0.1:26379: the master's name is missing" in refusal["detail"]
    assert PASSWORD not in str(logs)


def test_a_bad_plain_redis_url_stops_the_start_too(tmp_path: Path) -> None:
    config = tmp_path / "tenants.yaml"
    config.write_text("tenants:\n  - id: acme\n    issuer: https://i\n    audiences: [a]\n    jwks: {uri: https://i/j}\n")
    with capture_logs() as logs:
        assert run(ExtAuthzSettings(config=str(config), redis_url=f"http://:{PASSWORD}@redis.internal")) == 2
    [refusal] = [entry for entry in logs if entry["event"] == "bad_redis_url"]
    assert "--redis http://:***@redis.internal: Redis URL must specify" in refusal["detail"]
    assert PASSWORD not in str(logs)

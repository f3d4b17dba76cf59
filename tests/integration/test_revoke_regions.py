"""`pavilion revoke` with one `--redis` per region: each region's ext_authz hears only its own Redis, so
one command writes them all, with one cut-off; a region that cannot be written is named and fails the
command while the others keep the revocation; a bad URL stops it before anything is written. Or a
region's ext_authz reads a replica of one Redis that every revocation is written to."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from extauthz.revocation import subject_key, token_key
from tests.extauthz.issuer import Issuer
from tests.integration.extauthz_stack import check_direct, start_extauthz, wait_for, write_tenants
from tests.procs import PAVILION, Proc, free_port, start_redis

pytestmark = pytest.mark.integration

ACME = Issuer()


@pytest.fixture
def two_regions() -> Iterator[tuple[int, int]]:
    """Two Redis servers, one per region: their ports."""
    started: list[Proc] = []
    try:
        ports = []
        for _ in range(2):
            proc, port = start_redis()
            started.append(proc)
            ports.append(port)
        yield ports[0], ports[1]
    finally:
        for proc in started:
            proc.stop()


def revoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PAVILION, "revoke", "--tenant", "acme", "--issuer", ACME.issuer, *args],
                          capture_output=True, text=True, timeout=60, check=False)


def stored(port: int, key: str) -> str | None:
    with redis.Redis(port=port, decode_responses=True) as client:
        value: str | None = client.get(key)
        return value


def status_of(port: int, token: str) -> int | None:
    response = check_direct(port, {"authorization": f"Bearer {token}"})
    if response is None:
        return None
    return 200 if response.status.code == 0 else response.denied_response.status.code


def test_one_revoke_reaches_the_ext_authz_of_every_region(tmp_path: Path, two_regions: tuple[int, int]) -> None:
    config = write_tenants(tmp_path / "tenants.yaml", {"acme": ACME})
    urls = [f"redis://127.0.0.1:{port}/0" for port in two_regions]
    servers = [start_extauthz(config, redis_url=url, name=f"extauthz-{n}") for n, url in enumerate(urls)]
    try:
        token = ACME.token(sub="alice", iat=int(time.time()) - 5)
        assert [status_of(port, token) for _, port in servers] == [200, 200]
        done = revoke("--redis", urls[0], "--redis", urls[1], "--subject", "alice")
        assert done.returncode == 0, done.stderr
        assert "in 2 Redis" in done.stdout
        # One cut-off instant in both regions.
        cut_offs = {stored(port, subject_key("acme", "alice")) for port in two_regions}
        assert len(cut_offs) == 1 and None not in cut_offs
        wait_for(lambda: [status_of(port, token) for _, port in servers] == [401, 401], 5.0,
                 "refused in both regions")
    finally:
        for proc, _ in servers:
            proc.stop()


def test_a_region_that_cannot_be_written_is_named_and_the_others_keep_it(two_regions: tuple[int, int]) -> None:
    live = f"redis://127.0.0.1:{two_regions[0]}/0"
    dead = f"redis://:region-secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    done = revoke("--redis", live, "--redis", dead, "--jti", "j-1", "--expires", str(time.time() + 600))
    assert done.returncode == 1
    assert f"not written to redis://:***@127.0.0.1:{dead.rsplit(':', 1)[1]}" in done.stderr
    assert "written to 1 of 2" in done.stderr
    assert "region-secret" not in done.stderr + done.stdout
    assert stored(two_regions[0], token_key(ACME.issuer, "j-1")) == "1"


def test_a_bad_url_among_good_ones_writes_nothing(two_regions: tuple[int, int]) -> None:
    good = f"redis://127.0.0.1:{two_regions[0]}/0"
    for second in ("http://127.0.0.1:1/0", good):  # not a Redis URL; the same Redis twice
        done = revoke("--redis", good, "--redis", second, "--subject", "bob")
        assert done.returncode == 2, done.stderr
        assert stored(two_regions[0], subject_key("acme", "bob")) is None


def test_a_region_reading_a_replica_hears_revocations_written_to_its_master(tmp_path: Path) -> None:
    """The other way to reach regions: one Redis replicating to the others. ext_authz only reads (MGET,
    SUBSCRIBE), so it can use a read-only replica, and Redis forwards PUBLISH to replicas."""
    master, master_port = start_redis()
    replica, replica_port = start_redis(extra=["--replicaof", "127.0.0.1", str(master_port)])
    server = None
    try:
        with redis.Redis(port=replica_port, decode_responses=True) as client:
            wait_for(lambda: client.info("replication").get("master_link_status") == "up", 10.0, "replicating")
        config = write_tenants(tmp_path / "tenants.yaml", {"acme": ACME})
        server = start_extauthz(config, redis_url=f"redis://127.0.0.1:{replica_port}/0", name="extauthz-replica")
        token = ACME.token(sub="alice", iat=int(time.time()) - 5)
        assert status_of(server[1], token) == 200
        done = revoke("--redis", f"redis://127.0.0.1:{master_port}/0", "--subject", "alice")
        assert done.returncode == 0, done.stderr
        wait_for(lambda: status_of(server[1], token) == 401, 5.0, "refused by the replica's ext_authz")
        assert status_of(server[1], ACME.token(sub="bob", iat=int(time.time()) - 5)) == 200
    finally:
        if server is not None:
            server[0].stop()
        replica.stop()
        master.stop()

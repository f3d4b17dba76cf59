"""The Redis Cluster store on a 3-node cluster started by the test."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from ratelimit.redis_store import RedisClusterStore, redis_key
from ratelimit.store import Check
from tests.integration.ratelimit_procs import redis_cluster

pytestmark = pytest.mark.integration


async def test_counts_on_a_three_node_cluster_with_many_descriptors_per_request() -> None:
    with redis_cluster(3) as ports:
        store = RedisClusterStore.from_hosts(f"127.0.0.1:{ports[0]}", timeout=0.5)
        try:
            checks = [Check(f"edge|client=c{i}|0.fixed_window.3600", "fixed_window", 3, 3600) for i in range(12)]
            checks.append(Check("edge|client=c0|1.token_bucket.60", "token_bucket", 2, 60))
            checks.append(Check("edge|client=c1|1.sliding_window.3600", "sliding_window", 2, 3600))
            slots = {key_slot(redis_key(c).encode()) for c in checks}
            assert len(slots) > 3  # the keys really land on several slots (and so several nodes)
            seen = []
            for _ in range(4):
                seen.append(await store.apply(checks))
            fixed = [[o.used for o in outcomes[:12]] for outcomes in seen]
            assert fixed == [[n] * 12 for n in (1, 2, 3, 4)]
            assert [outcomes[11].allowed for outcomes in seen] == [True, True, True, False]
            assert [outcomes[12].allowed for outcomes in seen] == [True, True, False, False]
            assert [outcomes[13].allowed for outcomes in seen] == [True, True, False, False]
            # The same counter reached alone, in a request of its own, is the same counter.
            alone = await store.apply([checks[5]])
            assert alone[0].used == 5
        finally:
            await store.close()


async def test_a_stale_slot_map_is_corrected_by_moved() -> None:
    with redis_cluster(3) as ports:
        store = RedisClusterStore.from_hosts(",".join(f"127.0.0.1:{p}" for p in ports), timeout=0.5)
        try:
            check = Check("edge|client=moved|0.fixed_window.3600", "fixed_window", 10, 3600)
            assert (await store.apply([check]))[0].used == 1
            slot = key_slot(redis_key(check).encode())
            owner = store._slots[slot] if store._slots else ""
            wrong = next(f"127.0.0.1:{p}" for p in ports if f"127.0.0.1:{p}" != owner)
            store._slots = [wrong] * len(store._slots or [])  # as if every slot had moved
            assert (await store.apply([check]))[0].used == 2
            assert store._slots is not None and store._slots[slot] == owner
        finally:
            await store.close()

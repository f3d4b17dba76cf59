"""The Redis store and its Lua script on a real redis-server.

The script's maths must be ratelimit/algorithms.py's: the same random sequences of checks go to
MemoryStore on a ManualClock and to the script with the same instants passed in ARGV[1] (the
test-only time argument, see lua/apply.lua), and every outcome must be equal.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pavilion.errors import BackendUnavailable
from ratelimit.clock import MICROS, ManualClock
from ratelimit.memory_store import MemoryStore
from ratelimit.redis_store import SCRIPT, RedisStore, encode_evalsha, parse_outcomes, script_args
from ratelimit.resp import RedisReplyError, RespConnection, encode_command
from ratelimit.store import Check, Outcome
from tests.procs import Proc, start_redis
from tests.ratelimit.vectors import T0_US, VECTORS, Vector

pytestmark = pytest.mark.integration

ALGORITHMS = ("fixed_window", "sliding_window", "token_bucket")


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    proc, port = start_redis()
    try:
        yield port
    finally:
        proc.stop()


async def _script_at(conn: RespConnection, checks: list[Check], now_us: int) -> list[Outcome]:
    reply = await conn.call("EVALSHA", *script_args(checks, now_us))
    if isinstance(reply, RedisReplyError) and reply.kind == "NOSCRIPT":
        await conn.call("SCRIPT", "LOAD", SCRIPT)
        reply = await conn.call("EVALSHA", *script_args(checks, now_us))
    return parse_outcomes(reply, len(checks))


async def _command_count(conn: RespConnection, command: str) -> int:
    info = await conn.call("INFO", "commandstats")
    for line in info.decode().splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


@pytest.mark.parametrize("seed", range(6))
async def test_script_matches_the_python_algorithms(redis_port: int, seed: int) -> None:
    rng = random.Random(seed)
    clock = ManualClock(start=1_700_000_000 + rng.random() * 1000)
    memory = MemoryStore(clock)
    conn = await RespConnection.open("127.0.0.1", redis_port, timeout=2.0, connect_timeout=2.0)
    try:
        await conn.call("FLUSHALL")
        keys = [
            Check(f"vec{seed}|k={i}|0.{algorithm}.{window}", algorithm, limit, window, burst)
            for i, (algorithm, limit, window, burst) in enumerate(
                (rng.choice(ALGORITHMS), rng.randint(1, 12), rng.choice((1, 2, 5, 60)), rng.choice((0, 0, 3, 20)))
                for _ in range(5))
        ]
        for step in range(300):
            clock.advance(rng.choice((0, 0, 0.001, 0.05, 0.3, 0.7, 1.0, 2.5)))
            picked = rng.sample(keys, rng.randint(1, len(keys)))
            checks = [Check(c.key, c.algorithm, c.limit, c.window, c.burst, rng.choice((0, 1, 1, 1, 2, 5)))
                      for c in picked]
            expected = await memory.apply(checks)
            got = await _script_at(conn, checks, clock.now_us())
            assert got == expected, f"step {step} at {clock.now_us()}: {checks}"
    finally:
        conn.close()


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
async def test_vectors_shared_with_the_memory_store(redis_port: int, vector: Vector) -> None:
    conn = await RespConnection.open("127.0.0.1", redis_port, timeout=2.0, connect_timeout=2.0)
    try:
        await conn.call("FLUSHALL")
        for step in vector.steps:
            [got] = await _script_at(conn, [vector.check("vector|k=v|0", step.hits)], T0_US + step.at_ms * 1000)
            expect = step.expect
            assert (got.allowed, got.remaining, got.used) == (expect.allowed, expect.remaining, expect.used), step
            assert got.reset_after == pytest.approx(expect.reset_after, abs=1e-6), step
    finally:
        conn.close()


async def test_one_round_trip_whatever_the_number_of_descriptors(redis_port: int) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{redis_port}", timeout=1.0)
    probe = await RespConnection.open("127.0.0.1", redis_port, timeout=2.0, connect_timeout=2.0)
    try:
        await store.apply([Check("warm|k=v|0.fixed_window.60", "fixed_window", 10, 60)])
        checks = [Check(f"rt|k={i}|0.{ALGORITHMS[i % 3]}.3600", ALGORITHMS[i % 3], 100, 3600) for i in range(10)]
        before = await _command_count(probe, "evalsha")
        for _ in range(5):
            outcomes = await store.apply(checks)
            assert len(outcomes) == 10 and all(o.allowed for o in outcomes)
        after = await _command_count(probe, "evalsha")
        assert after - before == 5
    finally:
        await store.close()
        probe.close()


async def test_fixed_window_expiry_is_set_when_the_key_is_created_only(redis_port: int) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{redis_port}", timeout=1.0)
    probe = await RespConnection.open("127.0.0.1", redis_port, timeout=2.0, connect_timeout=2.0)
    try:
        check = Check("ttl|k=v|0.fixed_window.3600", "fixed_window", 100, 3600)
        before = await _command_count(probe, "expire")
        for _ in range(5):
            await store.apply([check])
        assert await _command_count(probe, "expire") - before == 1
        start = int(time.time()) // 3600 * 3600
        ttl = await probe.call("TTL", f"rl:{{{check.key}}}:{start}")
        assert 0 < ttl <= 3600
    finally:
        await store.close()
        probe.close()


async def test_script_is_reloaded_after_a_flush(redis_port: int) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{redis_port}", timeout=1.0)
    probe = await RespConnection.open("127.0.0.1", redis_port, timeout=2.0, connect_timeout=2.0)
    try:
        check = Check("noscript|k=v|0.fixed_window.3600", "fixed_window", 100, 3600)
        assert (await store.apply([check]))[0].used == 1
        assert await probe.call("SCRIPT", "FLUSH") == "OK"
        assert (await store.apply([check]))[0].used == 2
    finally:
        await store.close()
        probe.close()


async def test_a_reply_that_arrived_while_the_loop_was_busy_is_not_a_timeout(redis_port: int) -> None:
    conn = await RespConnection.open("127.0.0.1", redis_port, timeout=0.01, connect_timeout=2.0)
    try:
        future = conn.call("PING")
        await asyncio.sleep(0)  # the flush: the command is on the wire and its 10 ms clock runs
        time.sleep(0.1)  # noqa: ASYNC251 (the point: the loop is blocked 10 times the timeout)
        assert await future == "PONG"
    finally:
        conn.close()


async def test_a_hung_redis_times_out_within_the_timeout_then_recovers() -> None:
    proc, port = start_redis()
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}", timeout=0.02)
    check = Check("hang|k=v|0.fixed_window.3600", "fixed_window", 100, 3600)
    try:
        await store.apply([check])
        proc.popen.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="timeout"):
            await store.apply([check])
        assert time.monotonic() - started < 2.0  # not a speed check: without the timeout it would wait forever
        proc.popen.send_signal(signal.SIGCONT)
        # The late reply of the timed-out call is read and dropped; the connection stays in order.
        outcome = await _eventually(store, check)
        assert outcome.used >= 2
    finally:
        proc.popen.send_signal(signal.SIGCONT)
        await store.close()
        proc.stop()


async def test_a_stopped_redis_is_unavailable_fast_and_a_restarted_one_is_used_again() -> None:
    proc, port = start_redis()
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}", timeout=0.05)
    check = Check("restart|k=v|0.fixed_window.3600", "fixed_window", 100, 3600)
    restarted: Proc | None = None
    try:
        await store.apply([check])
        proc.kill()
        started = time.monotonic()
        for _ in range(3):
            with pytest.raises(BackendUnavailable):
                await store.apply([check])
        assert time.monotonic() - started < 2.0  # three failures, none waiting on a connect
        restarted, _ = start_redis(port=port)
        outcome = await _eventually(store, check)
        assert outcome.used == 1  # a fresh Redis: the counter starts again
    finally:
        await store.close()
        proc.stop()
        if restarted is not None:
            restarted.stop()


async def _eventually(store: RedisStore, check: Check, deadline: float = 5.0) -> Outcome:
    end = time.monotonic() + deadline
    while True:
        try:
            return (await store.apply([check]))[0]
        except BackendUnavailable:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.05)


def test_now_argument_is_microseconds() -> None:
    # The test-only time argument and the store's own encoding agree on units.
    args = script_args([Check("k", "fixed_window", 1, 1)], 5 * MICROS)
    assert args[3] == 5 * MICROS and args[4:] == [1, 1, 1, 0, 1]


def test_the_hot_path_encoding_is_the_generic_one() -> None:
    checks = [Check("d|k=v|0.fixed_window.60", "fixed_window", 10, 60, 0, 1),
              Check("d|k=%7B%7D|1.token_bucket.1", "token_bucket", 5, 1, 20, 0)]
    assert encode_evalsha(checks) == encode_command(["EVALSHA", *script_args(checks)])


def test_the_store_runs_on_uvloop(redis_port: int) -> None:
    """uvloop's transports are not asyncio.Transport subclasses; the connection must not mind."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[Outcome]:
        store = RedisStore.from_url(f"redis://127.0.0.1:{redis_port}", timeout=1.0)
        try:
            check = Check("uv|k=v|0.fixed_window.60", "fixed_window", 1, 60)
            return [*(await store.apply([check])), *(await store.apply([check]))]
        finally:
            await store.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        first, second = runner.run(main())
    assert first.allowed and not second.allowed


async def test_a_redis_on_this_host_over_its_unix_socket(tmp_path: Path) -> None:
    socket = tmp_path / "redis.sock"
    proc, port = start_redis(extra=["--unixsocket", str(socket), "--unixsocketperm", "700"])
    store = RedisStore.from_url(f"unix://{socket}", timeout=1.0)
    probe = await RespConnection.open("127.0.0.1", port, timeout=2.0, connect_timeout=2.0)
    try:
        checks = [Check("unix|k=v|0.fixed_window.3600", "fixed_window", 2, 3600)]
        assert [o.allowed for o in await store.apply(checks)] == [True]
        assert [(o.allowed, o.remaining) for o in await store.apply(checks)] == [(True, 0)]
        assert [o.allowed for o in await store.apply(checks)] == [False]
        # The counter is the one TCP clients see: the same Redis, reached another way.
        assert await probe.call("KEYS", "rl:{unix|*") != []
    finally:
        await store.close()
        probe.close()
        proc.stop()
    gone = RedisStore.from_url(f"unix://{socket}", timeout=0.2)
    with pytest.raises(BackendUnavailable, match=str(socket)):
        await gone.apply(checks)
    await gone.close()




def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pavilion test CA")])

    def signed(subject: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(hours=1)))

    ca = signed(ca_name, ca_key.public_key()).add_extension(
        x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256())
    cert = signed(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "redis")]), key.public_key()).add_extension(
        x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False,
    ).sign(ca_key, hashes.SHA256())
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


async def test_a_managed_redis_with_a_password_a_user_a_database_and_tls(tmp_path: Path) -> None:
    from tests.procs import free_port

    ca, cert, key = _tls_files(tmp_path)
    tls_port = free_port()
    proc, port = start_redis(extra=["--requirepass", "hunter2", "--tls-port", str(tls_port),
                                    "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                                    "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"])
    check = [Check("managed|k=v|0.fixed_window.3600", "fixed_window", 5, 3600)]
    admin = await RespConnection.open("127.0.0.1", port, timeout=2.0, connect_timeout=2.0)
    stores: list[RedisStore] = []

    async def apply(url: str) -> list[Outcome]:
        stores.append(store := RedisStore.from_url(url, timeout=1.0))
        return await store.apply(check)

    try:
        await admin.call("AUTH", "hunter2")
        assert await admin.call("ACL", "SETUSER", "limiter", "on", ">pw2", "~rl:*", "+@all") == "OK"
        assert (await apply(f"redis://:hunter2@127.0.0.1:{port}/2"))[0].remaining == 4
        assert (await apply(f"redis://limiter:pw2@127.0.0.1:{port}/2"))[0].remaining == 3  # an ACL user, same counter
        await admin.call("SELECT", "2")
        assert await admin.call("KEYS", "rl:{managed*") != []  # in database 2, not 0
        assert (await apply(f"rediss://:hunter2@127.0.0.1:{tls_port}/2?ssl_ca_certs={ca}"))[0].remaining == 2
        for url, reason in ((f"redis://:wrong-one@127.0.0.1:{port}", "AUTH on 127.0.0.1"),
                            (f"redis://127.0.0.1:{port}", "NOAUTH"),
                            (f"rediss://:hunter2@127.0.0.1:{tls_port}", "CERTIFICATE_VERIFY_FAILED")):
            with pytest.raises(BackendUnavailable, match=reason) as refused:
                await apply(url)
            assert "hunter2" not in str(refused.value) and "wrong-one" not in str(refused.value)
    finally:
        for store in stores:
            await store.close()
        admin.close()
        proc.stop()

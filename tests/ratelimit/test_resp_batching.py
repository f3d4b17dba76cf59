"""RespConnection's write batching, against a scripted Redis stand-in that records every read it gets.

With nothing in flight a command goes out at once; while a batch is in flight, later commands wait for
its last reply and then leave together in one write; a peer that never answers still gets the held
commands sent after HOLD_LIMIT, so each fails by its own timeout instead of waiting forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ratelimit.resp import HOLD_LIMIT, RedisTimeout, RespConnection, encode_command


class FakeRedis:
    """Answers `+OK` to each command once `release()` is called; records the bytes of every read."""

    def __init__(self) -> None:
        self.reads: list[bytes] = []
        self.answering = asyncio.Event()
        self._read = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._owed = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        try:
            while data := await reader.read(65536):
                self.reads.append(data)
                self._read.set()
                self._owed += data.count(b"*1\r\n")
                if self.answering.is_set():
                    self._answer()
        finally:
            writer.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    async def wait_reads(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.reads) < count:
                self._read.clear()
                await self._read.wait()

    def release(self) -> None:
        self.answering.set()
        self._answer()

    def _answer(self) -> None:
        if self._writer is not None and self._owed:
            self._writer.write(b"+OK\r\n" * self._owed)
            self._owed = 0


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeRedis, int]]:
    redis = FakeRedis()
    server = await asyncio.start_server(redis.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield redis, port
        redis.close()
        await asyncio.sleep(0.01)  # let the handler see the close before the loop ends


async def test_commands_issued_while_a_batch_is_in_flight_leave_together(fake: tuple[FakeRedis, int]) -> None:
    redis, port = fake
    conn = await RespConnection.open("127.0.0.1", port, timeout=5.0, connect_timeout=2.0)
    try:
        first = conn.send(encode_command(["A"]))
        await redis.wait_reads(1)  # sent on its own: nothing was in flight
        held = [conn.send(encode_command([f"B{i}"])) for i in range(5)]
        await asyncio.sleep(HOLD_LIMIT / 4)
        assert len(redis.reads) == 1  # held behind the unanswered first command
        redis.release()
        assert await first == "OK"
        assert await asyncio.gather(*held) == ["OK"] * 5
        # The five went out in one write, right after the first reply, not one by one.
        assert redis.reads[1:] == [b"".join(encode_command([f"B{i}"]) for i in range(5))]
    finally:
        conn.close()


async def test_an_idle_connection_sends_at_once(fake: tuple[FakeRedis, int]) -> None:
    redis, port = fake
    redis.release()
    conn = await RespConnection.open("127.0.0.1", port, timeout=5.0, connect_timeout=2.0)
    try:
        for i in range(3):
            assert await conn.send(encode_command([f"C{i}"])) == "OK"
        assert len(redis.reads) == 3  # one write per command when each waits for its reply
    finally:
        conn.close()


async def test_commands_held_behind_a_peer_that_never_answers_time_out(fake: tuple[FakeRedis, int]) -> None:
    redis, port = fake
    conn = await RespConnection.open("127.0.0.1", port, timeout=0.05, connect_timeout=2.0)
    try:
        first = conn.send(encode_command(["A"]))
        await redis.wait_reads(1)
        held = conn.send(encode_command(["B"]))
        async with asyncio.timeout(5):  # without the hold limit the held command would wait forever
            with pytest.raises(RedisTimeout):
                await first
            with pytest.raises(RedisTimeout):
                await held
        assert b"".join(redis.reads).count(b"*1\r\n") == 2  # the held command was sent, then timed out
    finally:
        conn.close()

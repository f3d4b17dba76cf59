"""A small pipelined Redis (RESP2) connection for the rate-limit hot path.

Why not redis-py here: one ShouldRateLimit costs one EVALSHA, and redis-py spends ~60 µs of CPU per
command (connection checkout, timeouts, hooks), a quarter of the whole request budget. This client
keeps one socket per Redis node and matches replies to callers in order (Redis answers a
connection's commands in order).

Writes are batched the way Nagle batches segments: with nothing in flight a command goes out on the
next loop turn (no added latency when idle); while a batch is in flight, new commands wait for its
last reply (or `HOLD_LIMIT`, whichever comes first) and then go out together. Under load one `send`
and one read then carry many requests instead of a syscall pair (and a Redis wake-up) each, which on
loopback costs more CPU than the rest of the round trip; the wait is at most one Redis round trip.

The timeout measures Redis, not the event loop: each command's clock starts when its bytes are
handed to the socket (at the flush, not when the caller asked), and replies are parsed inside
`data_received`, which asyncio runs before the timer callbacks of the same loop turn (one timer per
connection, armed for the oldest deadline, serves every command in flight). So a reply that
is already in the socket buffer when a busy loop comes back always wins over its timer; a loaded
service does not time out (and fail open) because it was slow to look at an answer that came in time.
A caller whose command timed out gets `RedisTimeout` at once; its late reply is read and dropped,
so the connection stays usable and in order.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

Reply = Any  # int | bytes | str | list[Reply] | RedisReplyError | None

# The longest a command waits behind a batch in flight before it is sent anyway (seconds): it bounds
# the wait when Redis is slow or hung, so the held command still gets its own timeout.
HOLD_LIMIT = 0.001


class RedisReplyError(Exception):
    """An error reply (`-ERR ...`, `-NOSCRIPT ...`, `-MOVED 1234 host:port`) from Redis."""

    @property
    def kind(self) -> str:
        return str(self).split(" ", 1)[0]


class RedisError(Exception):
    """Redis could not be asked or did not answer: the base of the two below."""


class RedisTimeout(RedisError):
    """No reply within the command's timeout."""


class RedisConnectionError(RedisError):
    """The connection could not be made or was lost with commands in flight."""


def encode_command(args: Sequence[bytes | str | int]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = b"%d" % arg
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class _Incomplete(Exception):
    pass


def _parse(buf: bytes, pos: int) -> tuple[Reply, int]:
    """One reply starting at `pos`; raises _Incomplete when the buffer does not hold all of it.

    Iterative, not recursive: a script reply is an array of small arrays of integers, and a Python
    call per element would cost more than the parsing itself.
    """
    stack: list[tuple[list[Reply], int]] = []
    while True:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            raise _Incomplete
        kind = buf[pos]
        value: Reply
        if kind == 58:  # ':'
            value = int(buf[pos + 1:end])
            pos = end + 2
        elif kind == 42:  # '*'
            count = int(buf[pos + 1:end])
            pos = end + 2
            if count > 0:
                stack.append(([], count))
                continue
            value = [] if count == 0 else None
        elif kind == 36:  # '$'
            size = int(buf[pos + 1:end])
            pos = end + 2
            if size < 0:
                value = None
            else:
                if len(buf) < pos + size + 2:
                    raise _Incomplete
                value = buf[pos:pos + size]
                pos += size + 2
        elif kind == 43:  # '+'
            value = buf[pos + 1:end].decode()
            pos = end + 2
        elif kind == 45:  # '-'
            value = RedisReplyError(buf[pos + 1:end].decode(errors="replace"))
            pos = end + 2
        else:
            raise RedisConnectionError(f"unexpected RESP type byte {kind!r}")
        while stack:
            items, count = stack[-1]
            items.append(value)
            if len(items) < count:
                break
            stack.pop()
            value = items
        else:
            return value, pos


class RespConnection(asyncio.Protocol):
    """One pipelined connection. Use `await RespConnection.open(...)`, then `await conn.call(...)`."""

    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._unsent: list[bytes] = []
        self._waiting_flush: list[asyncio.Future[Reply]] = []
        self._pending: deque[asyncio.Future[Reply]] = deque()  # in send order, matched to replies
        # (deadline, future) in send order, so in deadline order: one timer serves them all.
        self._deadlines: deque[tuple[float, asyncio.Future[Reply]]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._buffer = b""
        self._flush_scheduled = False
        self._hold_timer: asyncio.TimerHandle | None = None
        self._lost: Exception | None = None
        self.last_reply_at = self._loop.time()

    @classmethod
    async def open(cls, host: str, port: int, *, timeout: float,  # noqa: ASYNC109 (per-command, not this call's)
                   connect_timeout: float, path: str | None = None,
                   ssl: ssl_module.SSLContext | None = None) -> RespConnection:
        """Connect over TCP to `host:port` (with TLS when `ssl` is given: the certificate must name
        `host`), or to the Unix socket at `path` (a Redis on the same host)."""
        loop = asyncio.get_running_loop()
        address = path or f"{host}:{port}"
        try:
            async with asyncio.timeout(connect_timeout):
                if path:
                    _transport, protocol = await loop.create_unix_connection(lambda: cls(address, timeout), path)
                else:
                    _transport, protocol = await loop.create_connection(
                        lambda: cls(address, timeout), host, port, ssl=ssl, server_hostname=host if ssl else None)
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to {address}: {exc or type(exc).__name__}") from exc
        return protocol

    @property
    def usable(self) -> bool:
        return self._lost is None and self._transport is not None and not self._transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Always a stream transport (we only come from create_connection); not an isinstance check,
        # because uvloop's TCPTransport does not subclass asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)

    def call(self, *args: bytes | str | int) -> asyncio.Future[Reply]:
        """Queue one command; the future resolves to its reply (an error reply is a RedisReplyError value)."""
        return self.send(encode_command(args))

    def send(self, command: bytes) -> asyncio.Future[Reply]:
        """Queue one command already in RESP form (see `encode_command`)."""
        future: asyncio.Future[Reply] = self._loop.create_future()
        if not self.usable:
            future.set_exception(RedisConnectionError(f"connection to {self.address} is closed"))
            return future
        self._unsent.append(command)
        self._waiting_flush.append(future)
        if self._pending:
            # A batch is in flight: data_received sends this one with its last reply.
            if self._hold_timer is None:
                self._hold_timer = self._loop.call_later(HOLD_LIMIT, self._hold_expired)
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    def _hold_expired(self) -> None:
        self._hold_timer = None
        self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._unsent:
            return
        data, futures = b"".join(self._unsent), self._waiting_flush
        self._unsent, self._waiting_flush = [], []
        if not self.usable or self._transport is None:
            for future in futures:
                if not future.done():
                    future.set_exception(RedisConnectionError(f"connection to {self.address} is closed"))
            return
        self._transport.write(data)
        if not self._pending:
            self.last_reply_at = self._loop.time()  # idle until now: the hung-peer clock starts here
        self._pending.extend(futures)
        if self.timeout > 0:
            deadline = self._loop.time() + self.timeout
            self._deadlines.extend((deadline, future) for future in futures)
            if self._timer is None or self._timer.when() > deadline:
                # (A later timer exists only if the timeout was just lowered, after the script load.)
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = self._loop.call_at(deadline, self._sweep)

    def _sweep(self) -> None:
        """Fail the commands whose deadline passed; answered ones are just dropped from the queue."""
        self._timer = None
        now = self._loop.time()
        deadlines = self._deadlines
        while deadlines:
            deadline, future = deadlines[0]
            if not future.done():
                if deadline > now:
                    self._timer = self._loop.call_at(deadline, self._sweep)
                    return
                future.set_exception(RedisTimeout(f"no reply from {self.address} in time"))
            deadlines.popleft()

    def data_received(self, data: bytes) -> None:
        self.last_reply_at = self._loop.time()
        buf = self._buffer + data if self._buffer else data
        pos = 0
        pending = self._pending
        try:
            while pos < len(buf):
                reply, pos = _parse(buf, pos)
                if not pending:
                    raise RedisConnectionError(f"{self.address} sent a reply nobody asked for")
                future = pending.popleft()
                if not future.done():
                    future.set_result(reply)
        except _Incomplete:
            pass
        except (RedisConnectionError, ValueError) as exc:
            self._fail(RedisConnectionError(str(exc)))
            if self._transport is not None:
                self._transport.abort()
            return
        self._buffer = buf[pos:]
        if not pending and self._unsent:
            self._flush()  # the batch in flight is answered: send what waited for it

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to {self.address} lost" + (f": {exc}" if exc else "")))

    def _fail(self, error: Exception) -> None:
        self._lost = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        self._deadlines.clear()
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)
        for future in self._waiting_flush:
            if not future.done():
                future.set_exception(error)
        self._waiting_flush, self._unsent = [], []

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._fail(RedisConnectionError(f"connection to {self.address} closed"))

    def now(self) -> float:
        return self._loop.time()

    def stale(self, now: float, after: float) -> bool:
        """Commands have waited longer than `after` seconds with nothing read: the peer is hung."""
        return bool(self._pending) and now - self.last_reply_at > after

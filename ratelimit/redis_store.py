"""Counters in Redis or Redis Cluster: one EVALSHA of `lua/apply.lua` per request.

Keys. A check's key becomes `rl:{<key>}`: the whole stable key (domain and descriptor entries,
already percent-encoded so it holds no brace) is the Redis Cluster hash tag, and the script adds the
window suffix (`rl:{<key>}:<window>`) from Redis's own clock. So one counter has one key wherever
it is used: the same per-client limit reached from two routes with different descriptor sets is one
counter, not two, and counters spread over the cluster's slots evenly.

Round trips. On a single Redis every check of a request goes in one script call. On a cluster the
checks are grouped by hash slot; each group is one script call to the slot's node and the groups are
sent concurrently, so a request still waits for one round trip (one command per distinct slot). A
request-wide hash tag (all keys of a request in one slot) would make that one command always, but
it would split a shared counter into one per descriptor combination and pile a domain on one node;
exact counting matters more.

Timeouts: see `ratelimit.resp` (the clock starts when the bytes are sent; a reply already received
always wins over its timer). One pipelined connection per node carries all concurrent requests, so
"pool size" is not a knob: there is never a wait for a free connection.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import replace
from importlib import resources
from typing import Any

from redis.crc import key_slot

from pavilion.errors import BackendUnavailable
from pavilion.log import get_logger
from ratelimit.redis_target import RedisTarget, parse_cluster_seeds, parse_redis_url
from ratelimit.resp import RedisConnectionError, RedisError, RedisReplyError, RedisTimeout, Reply, RespConnection
from ratelimit.store import Check, Outcome

log = get_logger(__name__)

KEY_PREFIX = "rl:"
ALGORITHM_CODES = {"fixed_window": 1, "sliding_window": 2, "token_bucket": 3}
SCRIPT = resources.files("ratelimit").joinpath("lua/apply.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
SLOTS = 16384


def redis_key(check: Check) -> str:
    return f"{KEY_PREFIX}{{{check.key}}}"


def script_args(checks: Sequence[Check], now_us: int | None = None) -> list[bytes | str | int]:
    """EVALSHA arguments: numkeys, the keys, then ARGV = [now or "", then 5 values per check].

    `now_us` exists for the tests that replay the shared vectors at chosen instants; the store never
    sets it, so in service Redis's TIME is the only clock.
    """
    args: list[bytes | str | int] = [SCRIPT_SHA, len(checks)]
    args.extend(redis_key(check) for check in checks)
    args.append("" if now_us is None else now_us)
    for check in checks:
        args.extend((ALGORITHM_CODES[check.algorithm], check.limit, check.window, check.burst, check.hits))
    return args


_ARGS_CACHE: dict[tuple[str, int, int, int, int], str] = {}
_EVALSHA_HEAD = f"$7\r\nEVALSHA\r\n$40\r\n{SCRIPT_SHA}\r\n"


def _check_args(check: Check) -> str:
    """The RESP form of one check's five ARGV values; few distinct shapes, so cached."""
    shape = (check.algorithm, check.limit, check.window, check.burst, check.hits)
    text = _ARGS_CACHE.get(shape)
    if text is None:
        if len(_ARGS_CACHE) > 10_000:
            _ARGS_CACHE.clear()
        values = (str(ALGORITHM_CODES[check.algorithm]), str(check.limit), str(check.window), str(check.burst),
                  str(check.hits))
        text = _ARGS_CACHE[shape] = "".join(f"${len(v)}\r\n{v}\r\n" for v in values)
    return text


def encode_evalsha(checks: Sequence[Check]) -> bytes:
    """`encode_command(["EVALSHA", *script_args(checks)])`, built the cheap way for the hot path.

    Keys are ASCII (storage keys are percent-encoded), so a character count is a byte count.
    """
    count = str(len(checks))
    parts = [f"*{4 + 6 * len(checks)}\r\n", _EVALSHA_HEAD, f"${len(count)}\r\n{count}\r\n"]
    for check in checks:
        key = f"{KEY_PREFIX}{{{check.key}}}"
        parts.append(f"${len(key)}\r\n{key}\r\n")
    parts.append("$0\r\n\r\n")
    parts.extend(_check_args(check) for check in checks)
    return "".join(parts).encode("ascii")


MAX_KEPT_COMMAND = 4096


class CommandMemo:
    """`encode_evalsha` per checks tuple, kept by the tuple's identity: the limiter's request plans
    hold one tuple for their life, so a repeated request reuses its command bytes. Bounded; an entry
    keeps its tuple alive, so a reused id can never return another tuple's command."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._commands: dict[int, tuple[Sequence[Check], bytes]] = {}

    def encode(self, checks: Sequence[Check]) -> bytes:
        entry = self._commands.get(id(checks))
        if entry is not None and entry[0] is checks:
            return entry[1]
        command = encode_evalsha(checks)
        # Only an immutable sequence can be known by its identity; a long command (keys from long
        # descriptor values) is not kept, so the memo stays small whatever clients send.
        if isinstance(checks, tuple) and len(command) <= MAX_KEPT_COMMAND:
            if len(self._commands) >= self._size:
                self._commands.clear()
            self._commands[id(checks)] = (checks, command)
        return command


def parse_outcomes(reply: Reply, count: int) -> list[Outcome]:
    """The script's reply, `allowed remaining reset_after_us used` per check, space-separated."""
    values = reply.split() if isinstance(reply, bytes) else []
    if len(values) != 4 * count:
        raise BackendUnavailable("redis", f"unexpected script reply {reply!r:.80}")
    numbers = list(map(int, values))
    return [Outcome(numbers[i] == 1, numbers[i + 1], numbers[i + 2] / 1_000_000, numbers[i + 3])
            for i in range(0, 4 * count, 4)]


class _Node:
    """One Redis server: a lazily (re)opened pipelined connection with the script loaded."""

    def __init__(self, target: RedisTarget, timeout: float, connect_timeout: float) -> None:
        self.target = target
        self.address = target.address
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        # Commands waiting this long with nothing read mean a hung peer: reconnect.
        self._stale_after = max(1.0, 20 * timeout)
        self._conn: RespConnection | None = None
        self._connecting: asyncio.Task[RespConnection] | None = None
        self._ever_connected = False

    def _ready(self) -> RespConnection | None:
        """The open connection, unless it is closed or its peer looks hung."""
        conn = self._conn
        if conn is not None and conn.usable and not conn.stale(conn.now(), self._stale_after):
            return conn
        return None

    async def connection(self) -> RespConnection:
        conn = self._ready()
        if conn is not None:
            return conn
        if self._conn is not None and self._conn.usable:
            log.warning("redis_connection_stale", node=self.address)
            self._conn.close()
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.create_task(self._connect())
            self._connecting.add_done_callback(_retrieve)
        if self._ever_connected:
            # A reconnect: fail this request now (the rule's on_backend_error answers it) rather than
            # make it wait on a connect whose timer would also count event-loop lag under a burst.
            raise RedisConnectionError(f"reconnecting to {self.address}")
        return await asyncio.wait_for(asyncio.shield(self._connecting), self._connect_timeout)

    async def start(self) -> None:
        """Connect (and load the script) before the first request; a failure is logged, not raised:
        the service starts anyway, answers by on_backend_error, and connects when Redis is there."""
        try:
            await self.connection()
        except (RedisError, TimeoutError, OSError) as exc:
            log.warning("redis_unavailable_at_start", node=self.address, error=str(exc))

    async def _connect(self) -> RespConnection:
        # The script loads under the connect timeout; only then does the connection get the request
        # timeout and become visible to requests, so no request ever queues behind the load.
        target = self.target
        conn = await RespConnection.open(target.host, target.port, timeout=self._connect_timeout,
                                         connect_timeout=self._connect_timeout, path=target.path,
                                         ssl=target.ssl_context())
        # AUTH and SELECT first (a managed Redis refuses anything else before AUTH), then the script.
        for command in (*target.handshake(), ("SCRIPT", "LOAD", SCRIPT)):
            try:
                reply = await conn.call(*command)
            except RedisError:
                conn.close()
                raise
            if isinstance(reply, RedisReplyError):
                conn.close()
                what = "AUTH" if command[0] == "AUTH" else " ".join(str(part) for part in command[:2])  # no password
                raise RedisConnectionError(f"{what} on {self.address}: {reply}")
        conn.timeout = self._timeout
        self._conn = conn
        self._ever_connected = True
        log.info("redis_connected", node=self.address)
        return conn

    async def call(self, *args: bytes | str | int) -> Reply:
        conn = await self.connection()
        return await conn.call(*args)

    async def evalsha(self, command: bytes, asking: bool = False) -> Reply:
        """Run the script; `command` is `encode_evalsha(checks)`."""
        # The usual case, connected, skips the nested coroutine of `connection()`.
        conn = self._ready() or await self.connection()
        if asking:
            # Its +OK is read in order and dropped; only the script's reply matters.
            conn.call("ASKING").add_done_callback(_retrieve)
        reply = await conn.send(command)
        if isinstance(reply, RedisReplyError) and reply.kind == "NOSCRIPT":
            # Redis restarted or SCRIPT FLUSH ran on a connection we kept: load once and go again.
            await conn.call("SCRIPT", "LOAD", SCRIPT)
            if asking:
                conn.call("ASKING").add_done_callback(_retrieve)
            reply = await conn.send(command)
        return reply

    def close(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self._conn is not None:
            self._conn.close()


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A background task or reply nobody awaits must not log "exception was never retrieved".
    if not future.cancelled():
        future.exception()


def _translate(node: str, exc: BaseException) -> BackendUnavailable:
    if isinstance(exc, RedisTimeout | TimeoutError):
        return BackendUnavailable("redis", f"timeout from {node}")
    return BackendUnavailable("redis", f"{node}: {exc}")


class RedisStore:
    """A CounterStore on one Redis server: TCP, TLS or a Unix socket, with AUTH and SELECT as the target says."""

    def __init__(self, target: RedisTarget, *, timeout: float = 0.05, connect_timeout: float = 1.0) -> None:
        self._node = _Node(target, timeout, connect_timeout)
        self._commands = CommandMemo()

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 0.05) -> RedisStore:
        """See `ratelimit.redis_target` for the URL forms."""
        return cls(parse_redis_url(url), timeout=timeout)

    def location(self) -> dict[str, Any]:
        """Where the counters are, for /status (never the password)."""
        target = self._node.target
        return {"kind": "redis", "address": target.address, "db": target.db, "tls": target.tls,
                "auth": target.password is not None}

    async def start(self) -> None:
        await self._node.start()

    async def apply(self, checks: Sequence[Check]) -> list[Outcome]:
        if not checks:
            return []
        try:
            reply = await self._node.evalsha(self._commands.encode(checks))
        except (RedisError, TimeoutError, OSError) as exc:
            raise _translate(self._node.address, exc) from exc
        if isinstance(reply, RedisReplyError):
            raise BackendUnavailable("redis", f"{self._node.address}: {reply}")
        return parse_outcomes(reply, len(checks))

    async def close(self) -> None:
        self._node.close()


class RedisClusterStore:
    """A CounterStore on Redis Cluster: slots mapped from CLUSTER SLOTS, refreshed on MOVED."""

    def __init__(self, seeds: Sequence[tuple[str, int]], *, timeout: float = 0.05,
                 connect_timeout: float = 1.0, template: RedisTarget | None = None) -> None:
        if not seeds:
            raise ValueError("--redis-cluster needs at least one HOST:PORT")
        self._seeds = list(seeds)
        self._template = template or RedisTarget()  # credentials and TLS every node gets
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._nodes: dict[str, _Node] = {}
        self._slots: list[str] | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._last_refresh = 0.0

    @classmethod
    def from_hosts(cls, text: str, *, timeout: float = 0.05) -> RedisClusterStore:
        """See `ratelimit.redis_target.parse_cluster_seeds` for the forms."""
        template, seeds = parse_cluster_seeds(text)
        return cls(seeds, timeout=timeout, template=template)

    def location(self) -> dict[str, Any]:
        """Where the counters are, for /status (never the password)."""
        return {"kind": "redis-cluster", "seeds": [f"{host}:{port}" for host, port in self._seeds],
                "tls": self._template.tls, "auth": self._template.password is not None}

    def _node(self, address: str) -> _Node:
        node = self._nodes.get(address)
        if node is None:
            host, _, port = address.rpartition(":")
            target = replace(self._template, host=host, port=int(port))
            node = self._nodes[address] = _Node(target, self._timeout, self._connect_timeout)
        return node

    async def _refresh_slots(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._load_slots())
        await asyncio.wait_for(asyncio.shield(self._refreshing), self._connect_timeout)

    async def start(self) -> None:
        """Learn the slot map and connect to every master before the first request (failures logged)."""
        try:
            await self._refresh_slots()
        except (RedisError, TimeoutError, OSError) as exc:
            log.warning("redis_cluster_unavailable_at_start", error=str(exc))
            return
        for address in sorted(set(self._slots or []) - {""}):
            await self._node(address).start()

    async def _load_slots(self) -> None:
        addresses = [n.address for n in self._nodes.values()] + [f"{h}:{p}" for h, p in self._seeds]
        last: BaseException | None = None
        for address in dict.fromkeys(addresses):
            try:
                reply = await self._node(address).call("CLUSTER", "SLOTS")
            except (RedisError, TimeoutError, OSError) as exc:
                last = exc
                continue
            if isinstance(reply, RedisReplyError) or not isinstance(reply, list):
                last = RedisConnectionError(f"CLUSTER SLOTS on {address}: {reply}")
                continue
            table = [""] * SLOTS
            for start, end, master, *_replicas in reply:
                owner = f"{master[0].decode()}:{master[1]}"
                for slot in range(start, end + 1):
                    table[slot] = owner
            self._slots = table
            log.info("redis_cluster_slots", nodes=sorted(set(table) - {""}))
            return
        log.warning("redis_cluster_slots_unavailable", error=str(last))
        raise RedisConnectionError(f"no cluster node answered CLUSTER SLOTS: {last}")

    async def apply(self, checks: Sequence[Check]) -> list[Outcome]:
        if not checks:
            return []
        try:
            if self._slots is None:
                # No map yet (the cluster was down at start): ask for one, but never make a request wait.
                self._refresh_soon()
                raise RedisConnectionError("no cluster slot map yet")
            groups: dict[int, list[int]] = {}
            for index, check in enumerate(checks):
                groups.setdefault(key_slot(redis_key(check).encode()), []).append(index)
            results = await asyncio.gather(*(self._apply_slot(slot, [checks[i] for i in indexes])
                                             for slot, indexes in groups.items()))
        except (RedisError, TimeoutError, OSError) as exc:
            if isinstance(exc, RedisConnectionError):
                self._refresh_soon()  # a failed-over master: its replica may own the slots now
            raise _translate("redis cluster", exc) from exc
        outcomes: list[Outcome | None] = [None] * len(checks)
        for indexes, group_outcomes in zip(groups.values(), results, strict=True):
            for index, outcome in zip(indexes, group_outcomes, strict=True):
                outcomes[index] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    def _refresh_soon(self) -> None:
        """Reload the slot map in the background, at most once a second."""
        now = asyncio.get_running_loop().time()
        if now - self._last_refresh < 1.0 or (self._refreshing is not None and not self._refreshing.done()):
            return
        self._last_refresh = now
        self._refreshing = asyncio.create_task(self._load_slots())
        self._refreshing.add_done_callback(_retrieve)

    async def _apply_slot(self, slot: int, checks: list[Check]) -> list[Outcome]:
        if self._slots is None or not self._slots[slot]:
            raise RedisConnectionError(f"slot {slot} has no node")
        node = self._node(self._slots[slot])
        command = encode_evalsha(checks)
        reply = await node.evalsha(command)
        if isinstance(reply, RedisReplyError) and reply.kind in ("MOVED", "ASK"):
            # `MOVED <slot> <host:port>`: the map is old. ASK: one-off redirect during a migration.
            target = str(reply).split(" ")[2]
            if reply.kind == "MOVED":
                self._refresh_soon()  # in the background; this request goes straight to the new owner
            reply = await self._node(target).evalsha(command, asking=reply.kind == "ASK")
        if isinstance(reply, RedisReplyError):
            raise RedisConnectionError(f"{node.address}: {reply}")
        return parse_outcomes(reply, len(checks))

    async def close(self) -> None:
        for node in self._nodes.values():
            node.close()

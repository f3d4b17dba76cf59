"""The seam between the limiter and where counters live (Redis, Redis Cluster, memory).

A request's checks go to the store in one `apply` call: for Redis that is one round trip, one
Lua script evaluated atomically with Redis's own clock. Each check is decided on its own (one over
limit does not undo another's hit), as envoyproxy/ratelimit does with its INCRBY per descriptor.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple, Protocol
from urllib.parse import quote

from ratelimit.rules import Limit


# NamedTuples rather than frozen dataclasses: as immutable, and several times cheaper to build per request.
class Check(NamedTuple):
    """One limit to test for one descriptor.

    `key` is stable across windows (the store adds a window suffix where the algorithm has one);
    `limit` is requests per `window` seconds; `burst` is the token bucket's capacity (0: `limit`);
    `hits` 0 asks "would one more hit pass?" without consuming anything.
    """

    key: str
    algorithm: str
    limit: int
    window: int
    burst: int = 0
    hits: int = 1


class Outcome(NamedTuple):
    """What one check found. `reset_after` is in seconds (see algorithms.py for each algorithm)."""

    allowed: bool
    remaining: int
    reset_after: float
    used: int


class CounterStore(Protocol):
    async def apply(self, checks: Sequence[Check]) -> list[Outcome]:
        """Decide every check atomically per check, in one call; raise BackendUnavailable on failure."""
        ...

    async def close(self) -> None: ...


_UNSAFE = re.compile(r"[^A-Za-z0-9_.~-]")


def _escape(text: str) -> str:
    # Percent-encode everything but [A-Za-z0-9_.-~] so `|`, `=`, `:` and Redis Cluster's `{}` hash-tag
    # braces can never come from a descriptor value and two different descriptors never share a key.
    # Most values need nothing; the search is cheaper than quote().
    return quote(text, safe="") if _UNSAFE.search(text) else text


def descriptor_key(domain: str, entries: Sequence[tuple[str, str]]) -> str:
    """The part of a storage key every limit of one descriptor shares: `domain|k=v|k2=v2`."""
    parts = [_escape(domain)]
    parts.extend(f"{_escape(key)}={_escape(value)}" for key, value in entries)
    return "|".join(parts)


def limit_key(prefix: str, limit: Limit, index: int, *, override: bool = False) -> str:
    """`prefix` (from descriptor_key) and the limit part: `<index>.<algorithm>.<window seconds>`,
    or `o.<algorithm>.<window seconds>` for a request's limit override."""
    return f"{prefix}|{'o' if override else index}.{limit.algorithm}.{limit.window_seconds}"


def storage_key(
    domain: str, entries: Sequence[tuple[str, str]], limit: Limit, index: int, *, override: bool = False
) -> str:
    """The counter key for one limit of one descriptor: `domain|k=v|k2=v2|<limit part>`.

    Algorithm and window are in the limit part so a config edit that changes them never reads state
    written under another meaning (a GCRA timestamp read as a counter); the rate is not, so changing
    a rate keeps the requests counted so far, like envoyproxy/ratelimit. The store adds the window
    suffix where the algorithm has one.
    """
    return limit_key(descriptor_key(domain, entries), limit, index, override=override)

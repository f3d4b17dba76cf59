"""Fixed-window counters known to be over their limit until their window ends, so no store is asked.

Within one fixed window a counter only grows: every hit, allowed or not, is an INCRBY, and other
replicas only add to it. Once the store answers "over" for a counter, every later check of it in the
same window is over too, whatever its hits (a `hits_addend: 0` probe included). envoyproxy/ratelimit
keeps such a local cache (LOCAL_CACHE_SIZE_IN_BYTES) for the same reason: a client hammering past its
limit, which is when a service is busiest, then costs no Redis round trip at all, and Redis carries
only the traffic that can still be admitted.

Only fixed windows: a sliding window or token bucket that refuses a large request may admit a
smaller one, and both recover as time passes, so "over" is not monotonic there. The entry is keyed by
the storage key and the limit, because a request's limit override can give one key different rates;
a config swap empties it (a raised limit must admit at once).
"""

from __future__ import annotations

from collections.abc import Sequence

from ratelimit.clock import MICROS
from ratelimit.rules import FIXED_WINDOW
from ratelimit.store import Check, Outcome

# Bounds on what clients can make this hold: keys come from descriptor values. A longer key is not
# remembered (its checks go to the store as usual); past MAX_ENTRIES the expired entries are dropped,
# then everything. At most ~20 MB.
MAX_ENTRIES = 20_000
MAX_KEY_LENGTH = 1024


class KnownOver:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._until: dict[tuple[str, int], int] = {}  # (key, limit) -> end of its window, µs
        self._max_entries = max_entries

    def __len__(self) -> int:
        return len(self._until)

    def clear(self) -> None:
        self._until.clear()

    def lookup(self, checks: Sequence[Check], now_us: int) -> list[Outcome | None] | None:
        """Per check, the over-limit outcome if it is known; None when none of them is known."""
        until = self._until
        known: list[Outcome | None] = []
        found = False
        for check in checks:
            end = until.get((check.key, check.limit))
            if end is not None and check.algorithm == FIXED_WINDOW:
                if end > now_us:
                    known.append(Outcome(False, 0, (end - now_us) / MICROS, check.limit))
                    found = True
                    continue
                del until[(check.key, check.limit)]
            known.append(None)
        return known if found else None

    def remember(self, checks: Sequence[Check], outcomes: Sequence[Outcome], now_us: int) -> None:
        """Note the fixed-window counters the store just found over, until their window ends."""
        for check, outcome in zip(checks, outcomes, strict=True):
            if (not outcome.allowed and check.algorithm == FIXED_WINDOW and outcome.reset_after > 0
                    and len(check.key) <= MAX_KEY_LENGTH):
                if len(self._until) >= self._max_entries:
                    self._drop_expired(now_us)
                self._until[(check.key, check.limit)] = now_us + round(outcome.reset_after * MICROS)

    def _drop_expired(self, now_us: int) -> None:
        self._until = {entry: end for entry, end in self._until.items() if end > now_us}
        if len(self._until) >= self._max_entries:  # a flood of distinct keys, all still over: start afresh
            self._until.clear()

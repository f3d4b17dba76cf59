"""The window and bucket maths, pure: no I/O, no clock of its own, integers where it matters.

Every function takes the stored state, the time `now_us` (integer microseconds since the epoch,
what Redis's TIME gives) and a `Check`, and returns the state to store and the `Outcome`. The Lua
scripts of the Redis store implement the same functions operation for operation; the shared vectors
in tests/ratelimit/vectors.py pin both. Common rules:

- `hits` > 0 consumes `hits`; `hits` == 0 consumes nothing and answers whether one more hit would
  pass (so a check on an exhausted limit says OVER_LIMIT).
- `remaining` is never negative; `reset_after` is in seconds (float).

State layout (what the Redis store keeps; the memory store keeps the same):

- fixed_window: one integer counter per window, key `window_key(key, window_start)`, created with
  an expiry of `window` seconds. Every hit is counted, allowed or not (envoyproxy/ratelimit's
  INCRBY), so a client over its limit stays over until the window ends.
- sliding_window: the same per-window counters as fixed_window, created with an expiry of
  2 * `window` (the previous window is read during the whole next one). Only allowed hits count.
- token_bucket: one key, `key` itself, holding the TAT (theoretical arrival time) in integer
  microseconds, written only when hits are consumed, with an expiry at the TAT (the bucket is full
  again then, which is the same as no key).
"""

from __future__ import annotations

import math

from ratelimit.clock import MICROS
from ratelimit.rules import FIXED_WINDOW, SLIDING_WINDOW, TOKEN_BUCKET
from ratelimit.store import Check, Outcome


def window_start(now_us: int, window: int) -> int:
    """Start (epoch seconds) of the epoch-aligned window holding `now_us`: envoyproxy/ratelimit's `(now/d)*d`."""
    now_s = now_us // MICROS
    return now_s - now_s % window


def window_key(key: str, start: int) -> str:
    """Storage key of one window's counter."""
    return f"{key}:{start}"


def fixed_window(count: int, now_us: int, check: Check) -> tuple[int, Outcome]:
    """`count` is the current window's counter (0 when absent); returns the new counter.

    Epoch-aligned like envoyproxy/ratelimit, so a client can spend `limit` at the end of one window
    and `limit` again at the start of the next: up to 2 * limit within one window's length.
    """
    start = window_start(now_us, check.window)
    reset_after = ((start + check.window) * MICROS - now_us) / MICROS
    if check.hits == 0:
        return count, Outcome(count < check.limit, max(0, check.limit - count), reset_after, count)
    count += check.hits
    return count, Outcome(count <= check.limit, max(0, check.limit - count), reset_after, count)


def sliding_window(previous: int, current: int, now_us: int, check: Check) -> tuple[int, Outcome]:
    """Two fixed windows, the previous one weighted by how much of it still overlaps the sliding window.

    estimate = floor(previous * (window - elapsed) / window) + current, where `elapsed` is the time
    since the current window began. This assumes the previous window's hits were spread evenly (the
    Cloudflare approximation); it smooths the fixed window's boundary burst without per-request state.
    Returns the new current counter. `reset_after`: when allowed, until the current window ends;
    when denied, an estimate of when this request would pass if nothing else came (never early).
    """
    window_us = check.window * MICROS
    elapsed_us = now_us - window_start(now_us, check.window) * MICROS
    left_us = window_us - elapsed_us
    weighted = math.floor(previous * (left_us / window_us))
    need = max(check.hits, 1)
    allowed = weighted + current + need <= check.limit
    if allowed and check.hits > 0:
        current += check.hits
    used = weighted + current
    remaining = max(0, check.limit - used)
    if allowed:
        return current, Outcome(True, remaining, left_us / MICROS, used)
    budget = check.limit - current - need
    if budget >= 0:
        # Wait until the previous window's weight has decayed to the budget (previous > 0 here).
        elapsed_needed = math.ceil(window_us * (1 - budget / previous))
        wait_us = elapsed_needed - elapsed_us
    elif check.limit - need < 0:
        wait_us = left_us + window_us  # can never pass; point past the next window
    else:
        # In the next window this window's count becomes the previous one.
        elapsed_needed = math.ceil(window_us * (1 - (check.limit - need) / current))
        wait_us = left_us + max(0, elapsed_needed)
    return current, Outcome(False, remaining, wait_us / MICROS, used)


def emission_interval_us(check: Check) -> int:
    """GCRA's T: microseconds one request costs. At least 1 so absurd rates stay well defined."""
    return max(1, (check.window * MICROS) // check.limit)


def token_bucket(tat_us: int, now_us: int, check: Check) -> tuple[int, Outcome]:
    """GCRA over `tat_us` (0 when absent); returns the TAT to store (unchanged when nothing is consumed).

    T = window / limit (integer µs), capacity B = burst or limit, tolerance τ = T * B. A request of n
    hits is allowed when max(TAT, now) + n*T - now <= τ: a full bucket admits B at once, then one every T.
    remaining = floor((τ - (TAT' - now)) / T); `reset_after`: when allowed, until the bucket is full
    again; when denied, until this request would pass (Retry-After), or until the bucket is full for
    a request larger than the bucket (it never passes).
    """
    capacity = check.burst or check.limit
    if check.limit <= 0 or capacity <= 0:
        return tat_us, Outcome(False, 0, float(check.window), 0)
    interval = emission_interval_us(check)
    tolerance = interval * capacity
    base = max(tat_us, now_us)
    need = max(check.hits, 1)
    new_tat = base + need * interval
    allowed = new_tat - now_us <= tolerance
    if allowed and check.hits > 0:
        tat_us = new_tat
        after = new_tat
    else:
        after = base
    remaining = min(capacity, max(0, (tolerance - (after - now_us)) // interval))
    if allowed:
        return tat_us, Outcome(True, remaining, (after - now_us) / MICROS, capacity - remaining)
    if need > capacity:
        # Larger than the bucket: it can never pass; say when the bucket is full, the best there is.
        return tat_us, Outcome(False, remaining, (base - now_us) / MICROS, capacity - remaining)
    return tat_us, Outcome(False, remaining, (new_tat - tolerance - now_us) / MICROS, capacity - remaining)


# Expiry of each algorithm's keys, in seconds after creation (token_bucket: at the TAT instead).
def counter_ttl(check: Check) -> int:
    if check.algorithm == SLIDING_WINDOW:
        return 2 * check.window
    return check.window


KNOWN = (FIXED_WINDOW, SLIDING_WINDOW, TOKEN_BUCKET)

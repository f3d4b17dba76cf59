"""The rate-limit configuration as frozen, plain data: what `load_config` produces and the limiter reads.

One `Rule` is one descriptor path of the envoyproxy/ratelimit format that carries a `rate_limit`
(or our `rate_limits` list); descriptors that only hold nested descriptors are not rules, they are
part of the path. `source` takes no part in equality, so moving a rule between files changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pavilion.errors import Location

NO_SOURCE = Location("<memory>")

# envoyproxy/ratelimit's dividers: a month is 30 days and a year 365 days, windows aligned to the epoch.
UNIT_SECONDS: dict[str, int] = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
    "month": 30 * 86400,
    "year": 365 * 86400,
}

FIXED_WINDOW = "fixed_window"
SLIDING_WINDOW = "sliding_window"
TOKEN_BUCKET = "token_bucket"
ALGORITHMS = (FIXED_WINDOW, SLIDING_WINDOW, TOKEN_BUCKET)

ON_BACKEND_ERROR = ("allow", "deny", "local")

# What envoyproxy/ratelimit reports as limit_remaining for an unlimited descriptor.
MAX_UINT32 = 2**32 - 1


@dataclass(frozen=True)
class Limit:
    """`requests_per_unit` requests per `unit_multiplier` * `unit`, counted by `algorithm`.

    `burst` only means something for the token bucket: the bucket's capacity in requests; 0 means
    "as many as `requests_per_unit`" (see `capacity`).
    """

    unit: str
    requests_per_unit: int
    unit_multiplier: int = 1
    algorithm: str = FIXED_WINDOW
    burst: int = 0
    name: str | None = None

    @property
    def window_seconds(self) -> int:
        return UNIT_SECONDS[self.unit] * self.unit_multiplier

    @property
    def capacity(self) -> int:
        """Token bucket size: `burst`, or `requests_per_unit` when burst is 0."""
        return self.burst or self.requests_per_unit

    @property
    def quota(self) -> int:
        """The most requests it admits at once: the bucket's capacity, else `requests_per_unit` a window."""
        return self.capacity if self.algorithm == TOKEN_BUCKET else self.requests_per_unit

    def describe(self) -> str:
        per = self.unit if self.unit_multiplier == 1 else f"{self.unit_multiplier} {self.unit}s"
        extra = f", burst {self.capacity}" if self.algorithm == TOKEN_BUCKET else ""
        return f"{self.requests_per_unit} per {per} ({self.algorithm}{extra})"


@dataclass(frozen=True)
class Rule:
    """A matched descriptor path and what it enforces.

    `key_path` holds (key, value) per level; value None means "any value" (key only), and a value
    ending in `*` is a prefix wildcard. `limits` is empty when `unlimited`.

    Two per-level settings of envoyproxy/ratelimit, each the depths (0 = the top level) where a
    descriptor on the rule's path set it; a setting applies to every rule below its descriptor:
    - `share_threshold`: at a wildcard level, every request value the wildcard matches counts on one
      counter (the wildcard's), instead of one counter per value;
    - `value_to_metric`: the metric label holds the request's value at that level where it would
      otherwise hold the configured one (the key alone, or the wildcard).
    """

    domain: str
    key_path: tuple[tuple[str, str | None], ...]
    limits: tuple[Limit, ...] = ()
    unlimited: bool = False
    shadow_mode: bool = False
    replaces: tuple[str, ...] = ()
    detailed_metric: bool = False
    name: str | None = None
    on_backend_error: str = "allow"
    share_threshold: tuple[int, ...] = ()
    value_to_metric: tuple[int, ...] = ()
    source: Location = field(default=NO_SOURCE, compare=False)

    @property
    def stats_key(self) -> str:
        """envoyproxy/ratelimit's stat key for the rule: `domain.key_value.subkey` (a bounded label)."""
        parts = [key if value is None else f"{key}_{value}" for key, value in self.key_path]
        return ".".join([self.domain, *parts])

    def counted_entries(self, entries: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        """A request's entries as its counter key holds them: at a `share_threshold` level, the wildcard."""
        if not self.share_threshold:
            return entries
        return tuple((key, self.key_path[depth][1] or value) if depth in self.share_threshold else (key, value)
                     for depth, (key, value) in enumerate(entries))

    def metric_label(self, entries: tuple[tuple[str, str], ...]) -> str:
        """The stat name of a request matched by this rule, as envoyproxy/ratelimit builds it: `stats_key`
        with the request's value at every level (`detailed_metric`) or at the `value_to_metric` levels;
        a wildcard that `share_threshold` shares stays the wildcard."""
        if not (self.detailed_metric or self.value_to_metric):
            return self.stats_key
        parts = [self.domain]
        for depth, (key, configured) in enumerate(self.key_path):
            value = configured
            if (self.detailed_metric or depth in self.value_to_metric) and depth not in self.share_threshold \
                    and depth < len(entries):
                value = entries[depth][1] or None
            parts.append(key if value is None else f"{key}_{value}")
        return ".".join(parts)

    @property
    def limit_names(self) -> frozenset[str]:
        """Names `replaces` can refer to: the rule's name and every named limit's."""
        names = {limit.name for limit in self.limits if limit.name}
        if self.name:
            names.add(self.name)
        return frozenset(names)

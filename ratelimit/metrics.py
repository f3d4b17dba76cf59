"""Prometheus metrics of the rate-limit service, with bounded label cardinality.

Per rule, as envoyproxy/ratelimit counts them (each by the request's hits): total_hits,
over_limit, near_limit (within the limit but past 80 % of it), within_limit, shadow_mode.
The `rule` label is the rule's name, or its key path (`domain.key_value.key`), never a descriptor
value, unless the rule says `detailed_metric`. Distinct label sets are capped: past the cap they
are counted under `rule="_other"`, so a flood of client values cannot grow the registry.

Counts are summed in plain ints and added to prometheus_client at most every FLUSH_SECONDS (as
ext_authz does): a labelled inc() takes a lock and, with --workers, writes an mmap'd file, and a
request with ten descriptors made twenty of them. Request handling times are kept in a list and
observed into the histogram at the same flush, in one loop (a histogram observe is 0.7 µs, 1.6 µs
with --workers, and several times that between requests of a busy server, its code out of cache).
A scrape may so lag by up to FLUSH_SECONDS.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pavilion.metrics import NAMESPACE, Counter, Gauge, Histogram

DEFAULT_LABEL_CAP = 1000
FLUSH_SECONDS = 0.5
OVERFLOW_LABEL = "_other"

_HITS = {
    name: Counter(f"{NAMESPACE}_ratelimit_{name}", help_text, ["domain", "rule"])
    for name, help_text in (
        ("total_hits", "Hits (request cost) seen per rule"),
        ("over_limit", "Hits over the rule's limit"),
        ("near_limit", "Hits within the limit but past 80 % of it"),
        ("within_limit", "Hits within the rule's limit"),
        ("shadow_mode", "Hits over the limit let through because the rule or service is in shadow mode"),
    )
}
# The order of RuleMetrics' pending counts.
_ORDER = [_HITS[name] for name in ("total_hits", "over_limit", "shadow_mode", "within_limit", "near_limit")]
REQUESTS = Counter(f"{NAMESPACE}_ratelimit_requests", "ShouldRateLimit answers by overall code and cause",
                   ["code", "cause"])
KNOWN_OVER_ANSWERS = Counter(f"{NAMESPACE}_ratelimit_known_over_answers",
                             "Checks answered over limit without the store: the fixed window was already over")
BACKEND_ERRORS = Counter(f"{NAMESPACE}_ratelimit_backend_errors", "Counter store failures by kind", ["kind"])
BREAKER_OPEN = Gauge(f"{NAMESPACE}_ratelimit_breaker_open", "1 while the Redis circuit breaker is open",
                     multiprocess_mode="max")
CONFIG_RELOADS = Counter(f"{NAMESPACE}_ratelimit_config_reloads", "Config reloads by result", ["result"])
LATENCY = Histogram(f"{NAMESPACE}_ratelimit_request_seconds", "ShouldRateLimit handling time",
                    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5))


class RuleMetrics:
    """Counts hits per (domain, rule) with at most `cap` distinct label pairs."""

    def __init__(self, cap: int = DEFAULT_LABEL_CAP) -> None:
        self._cap = cap
        self._seen: set[tuple[str, str]] = set()
        # Label children by the pair asked for, so the hot path skips prometheus_client's labels() lookup.
        # Pairs past the cap share the overflow children; this dict is bounded by the cap of distinct
        # pairs plus the overflow pairs asked for, so it is cleared when it grows past 4 x the cap.
        self._children: dict[tuple[str, str], list[Any]] = {}
        self._request_children: dict[tuple[str, str], Any] = {}
        # Summed since the last flush: (domain, rule) -> hits in _ORDER; (code, cause) -> requests.
        self._pending_hits: dict[tuple[str, str], list[int]] = {}
        self._pending_requests: dict[tuple[str, str], int] = {}
        self._pending_latencies: list[float] = []
        self._flush_scheduled = False

    def label(self, domain: str, rule: str) -> tuple[str, str]:
        pair = (domain, rule)
        if pair in self._seen:
            return pair
        if len(self._seen) < self._cap:
            self._seen.add(pair)
            return pair
        return (domain, OVERFLOW_LABEL)

    def record(self, domain: str, rule: str, *, hits: int, over: bool, near: bool, shadow: bool) -> None:
        """One counted limit of one descriptor (`near`: within the limit but past 80 % of it)."""
        if hits <= 0:
            return
        counts = self._pending_hits.get((domain, rule))
        if counts is None:
            counts = self._pending_hits[(domain, rule)] = [0, 0, 0, 0, 0]
        counts[0] += hits
        if over:
            counts[1] += hits
            if shadow:
                counts[2] += hits
        else:
            counts[3] += hits
            if near:
                counts[4] += hits
        if not self._flush_scheduled:
            self._schedule_flush()

    def count_request(self, code: str, cause: str) -> None:
        """One ShouldRateLimit answer, by overall code and cause (`pavilion_ratelimit_requests`)."""
        key = (code, cause)
        self._pending_requests[key] = self._pending_requests.get(key, 0) + 1
        if not self._flush_scheduled:
            self._schedule_flush()

    def observe_latency(self, seconds: float) -> None:
        """One request's handling time (`pavilion_ratelimit_request_seconds`)."""
        self._pending_latencies.append(seconds)
        if not self._flush_scheduled:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): nothing would run a timer
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Add the counts summed since the last flush to the Prometheus counters."""
        self._flush_scheduled = False
        hits, self._pending_hits = self._pending_hits, {}
        requests, self._pending_requests = self._pending_requests, {}
        latencies, self._pending_latencies = self._pending_latencies, []
        observe = LATENCY.observe
        for seconds in latencies:
            observe(seconds)
        for pair, counts in hits.items():
            children = self._children.get(pair)
            if children is None:
                if len(self._children) > 4 * self._cap:
                    self._children.clear()
                labels = self.label(*pair)
                children = [metric.labels(*labels) for metric in _ORDER]
                self._children[pair] = children
            for child, count in zip(children, counts, strict=True):
                if count:
                    child.inc(count)
        for (code, cause), count in requests.items():
            counter = self._request_children.get((code, cause))
            if counter is None:
                counter = self._request_children[(code, cause)] = REQUESTS.labels(code=code, cause=cause)
            counter.inc(count)

"""Prometheus metrics of the rate-limit service, with bounded label cardinality.

Per rule, as envoyproxy/ratelimit counts them (each by the request's hits): total_hits,
over_limit, near_limit (within the limit but past 80 % of it), within_limit, shadow_mode.
The `rule` label is the rule's name, or its key path (`domain.key_value.key`), never a descriptor
value, unless the rule says `detailed_metric`. Distinct label sets are capped: past the cap they
are counted under `rule="_other"`, so a flood of client values cannot grow the registry.
"""

from __future__ import annotations

from typing import Any

from pavilion.metrics import NAMESPACE, Counter, Gauge, Histogram

DEFAULT_LABEL_CAP = 1000
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
REQUESTS = Counter(f"{NAMESPACE}_ratelimit_requests", "ShouldRateLimit answers by overall code and cause",
                   ["code", "cause"])
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
        self._children: dict[tuple[str, str], dict[str, Any]] = {}

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
        children = self._children.get((domain, rule))
        if children is None:
            if len(self._children) > 4 * self._cap:
                self._children.clear()
            labels = self.label(domain, rule)
            children = {name: metric.labels(*labels) for name, metric in _HITS.items()}
            self._children[(domain, rule)] = children
        children["total_hits"].inc(hits)
        if over:
            children["over_limit"].inc(hits)
            if shadow:
                children["shadow_mode"].inc(hits)
        else:
            children["within_limit"].inc(hits)
            if near:
                children["near_limit"].inc(hits)

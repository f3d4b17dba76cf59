"""Prometheus metrics of the rate-limit service, with bounded label cardinality.

Per rule, as envoyproxy/ratelimit counts them (each by the request's hits): total_hits,
over_limit, near_limit (within the limit but past 80 % of it), within_limit, shadow_mode.
The `rule` label is the rule's name, or its key path (`domain.key_value.key`), never a descriptor
value, unless the rule says `detailed_metric`. Distinct label sets are capped: past the cap they
are counted under `rule="_other"`, so a flood of client values cannot grow the registry.
"""

from __future__ import annotations

from pavilion.metrics import NAMESPACE, Counter, Gauge, Histogram

NEAR_LIMIT_RATIO = 0.8
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

    def label(self, domain: str, rule: str) -> tuple[str, str]:
        pair = (domain, rule)
        if pair in self._seen:
            return pair
        if len(self._seen) < self._cap:
            self._seen.add(pair)
            return pair
        return (domain, OVERFLOW_LABEL)

    def record(self, domain: str, rule: str, *, hits: int, used: int, limit: int, over: bool,
               shadow: bool) -> None:
        """One descriptor's outcome: `used` is the count after this request, `limit` its requests_per_unit."""
        if hits <= 0:
            return
        labels = self.label(domain, rule)
        _HITS["total_hits"].labels(*labels).inc(hits)
        if over:
            _HITS["over_limit"].labels(*labels).inc(hits)
            if shadow:
                _HITS["shadow_mode"].labels(*labels).inc(hits)
        else:
            _HITS["within_limit"].labels(*labels).inc(hits)
            if limit > 0 and used >= NEAR_LIMIT_RATIO * limit:
                _HITS["near_limit"].labels(*labels).inc(hits)

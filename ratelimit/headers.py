"""Response headers for the client, from a Decision: `RateLimit`, `RateLimit-Policy`, `Retry-After`.

The syntax is draft-ietf-httpapi-ratelimit-headers-10/11: both fields are Structured Field Lists of
String items with parameters, one item per counted limit (a policy):

    RateLimit-Policy: "per-ip";q=100;w=60, "daily";q=10000;w=86400
    RateLimit: "per-ip";r=42;t=17, "daily";r=9000;t=3600

`q` is the limit, `w` its window in seconds, `r` what remains, `t` the seconds until it resets
(rounded up). `Retry-After` (delay-seconds) comes only with an OVER_LIMIT answer, and is never
earlier than the end of the over-limit policy's window, as the draft asks. Envoy's ratelimit filter
adds these to the 429 it sends, and to the upstream's response when the request passes.

A limit answered by `on_backend_error: allow|deny` (Redis down) has no real counts behind it, so it
gets no RateLimit item; a `local` one does (its counts are real, if per replica).
"""

from __future__ import annotations

import math

from ratelimit.limiter import Code, Decision, DescriptorStatus
from ratelimit.rules import TOKEN_BUCKET, Limit, Rule


def policy_name(limit: Limit, rule: Rule | None, override: bool) -> str:
    """A bounded name: the limit's or rule's own name, else the rule's key path (config, never client data)."""
    if override:
        return "override"
    name = limit.name or (rule.name if rule else None) or (rule.stats_key if rule else "limit")
    return name


def _sf_string(text: str) -> str:
    cleaned = "".join(ch for ch in text if 0x20 <= ord(ch) < 0x7F)
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quota(limit: Limit) -> int:
    return limit.capacity if limit.algorithm == TOKEN_BUCKET else limit.requests_per_unit


# (id(rule), id(limit)) -> (rule, limit, quoted name, policy item). Rules and limits live as long as
# their config; keeping them in the entry makes a reused id harmless. Overrides are not cached.
_POLICIES: dict[tuple[int, int], tuple[Rule | None, Limit, str, str]] = {}


def _policy(limit: Limit, rule: Rule | None, override: bool) -> tuple[str, str]:
    key = (id(rule), id(limit))
    entry = _POLICIES.get(key)
    if entry is not None and entry[0] is rule and entry[1] is limit:
        return entry[2], entry[3]
    quoted = _sf_string(policy_name(limit, rule, override))
    item = f"{quoted};q={_quota(limit)};w={limit.window_seconds}"
    if not override:
        if len(_POLICIES) > 10_000:
            _POLICIES.clear()
        _POLICIES[key] = (rule, limit, quoted, item)
    return quoted, item


def rate_limit_headers(decision: Decision) -> list[tuple[str, str]]:
    policies: list[str] = []
    current: list[str] = []
    seen: set[str] = set()
    for status in decision.statuses:
        if not status.limits or status.fallback in ("allow", "deny"):
            continue
        override = _is_override(status)
        rule = status.rule
        for limit_status in status.limits:
            quoted, item = _policy(limit_status.limit, rule, override)
            if quoted in seen:
                continue
            seen.add(quoted)
            outcome = limit_status.outcome
            policies.append(item)
            remaining, reset = outcome.remaining, math.ceil(outcome.reset_after)
            current.append(f"{quoted};r={remaining if remaining > 0 else 0};t={reset if reset > 0 else 0}")
    headers: list[tuple[str, str]] = []
    if policies:
        headers.append(("RateLimit-Policy", ", ".join(policies)))
        headers.append(("RateLimit", ", ".join(current)))
    if decision.code is Code.OVER_LIMIT:
        wait = max((s.duration_until_reset for s in decision.statuses if s.code is Code.OVER_LIMIT), default=0.0)
        headers.append(("Retry-After", str(max(1, math.ceil(wait)))))
    return headers


def _is_override(status: DescriptorStatus) -> bool:
    # A request's override is counted under a limit part starting with `o.` (see store.storage_key).
    if not status.limits:
        return False
    key = status.limits[0].key
    return key.startswith("o.", key.rfind("|") + 1)

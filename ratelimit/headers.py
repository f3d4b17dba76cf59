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

`--response-headers envoyproxy` gives instead what envoyproxy/ratelimit sends with
LIMIT_RESPONSE_HEADERS_ENABLED, for clients that already read it (`envoyproxy_headers`): three
headers about one descriptor, `RateLimit-Limit` (its requests per unit), `RateLimit-Remaining` and
`RateLimit-Reset` (seconds), names changeable as with its LIMIT_*_HEADER settings.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ratelimit.limiter import Code, Decision
from ratelimit.rules import MAX_UINT32, Limit, Rule
from ratelimit.store import Outcome

# What `--response-headers` takes: this draft's fields (the default), envoyproxy/ratelimit's, or none
# (Envoy can still make X-RateLimit-* headers from the statuses: enable_x_ratelimit_headers).
HEADER_STYLES = ("draft", "envoyproxy", "none")


def policy_name(limit: Limit, rule: Rule | None, override: bool) -> str:
    """A bounded name: the limit's or rule's own name, else the rule's key path (config, never client data)."""
    if override:
        return "override"
    name = limit.name or (rule.name if rule else None) or (rule.stats_key if rule else "limit")
    return name


def _sf_string(text: str) -> str:
    cleaned = "".join(ch for ch in text if 0x20 <= ord(ch) < 0x7F)
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policy_item(limit: Limit, rule: Rule | None, override: bool) -> tuple[str, str]:
    """The policy's quoted name and its RateLimit-Policy item (`"name";q=100;w=60`)."""
    quoted = _sf_string(policy_name(limit, rule, override))
    return quoted, f"{quoted};q={limit.quota};w={limit.window_seconds}"


def current_item(quoted: str, outcome: Outcome) -> str:
    """The policy's RateLimit item: what remains and the seconds until the reset, rounded up."""
    remaining, reset = outcome.remaining, math.ceil(outcome.reset_after)
    return f"{quoted};r={remaining if remaining > 0 else 0};t={reset if reset > 0 else 0}"


def retry_after(decision: Decision) -> str:
    """Delay-seconds until the over-limit descriptor that blocks longest resets, at least 1."""
    wait = max((s.duration_until_reset for s in decision.statuses if s.code is Code.OVER_LIMIT), default=0.0)
    return str(max(1, math.ceil(wait)))


class HeaderNames(NamedTuple):
    """envoyproxy/ratelimit's LIMIT_LIMIT_HEADER, LIMIT_REMAINING_HEADER and LIMIT_RESET_HEADER."""

    limit: str = "RateLimit-Limit"
    remaining: str = "RateLimit-Remaining"
    reset: str = "RateLimit-Reset"


ENVOYPROXY_NAMES = HeaderNames()


def envoyproxy_headers(decision: Decision, names: HeaderNames = ENVOYPROXY_NAMES) -> list[tuple[str, str]]:
    """envoyproxy/ratelimit's headers (src/service/ratelimit.go): about the descriptor closest to its
    limit (the first with the least remaining), or the last one over its limit; none when no descriptor
    was counted. The reset is the seconds until that limit's window ends, rounded up."""
    chosen = None
    least = MAX_UINT32
    for status in decision.statuses:
        if status.current_limit is None or status.guessed:
            continue
        if status.code is Code.OVER_LIMIT:
            chosen, least = status, 0
        elif status.limit_remaining < least:
            chosen, least = status, status.limit_remaining
    if chosen is None or chosen.current_limit is None:
        return []
    return [(names.limit, str(chosen.current_limit.requests_per_unit)),
            (names.remaining, str(chosen.limit_remaining)),
            (names.reset, str(max(0, math.ceil(chosen.duration_until_reset))))]

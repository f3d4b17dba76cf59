"""`GET /limits` on the rate-limit admin port: why is a client limited? Each descriptor's rule and its
counters as a request would see them now, without consuming anything.

The query: `domain=D` and one `descriptor` parameter per descriptor, its entries `key=value` joined
with `,` (`descriptor=route=accounts,tenant=acme` is one descriptor of two entries; two `descriptor`
parameters are two descriptors of one request). A `key` alone is the entry with an empty value. A `,`
or `=` inside a key, or a `,` inside a value, is written `%2C` / `%3D` within the parameter (so
`%252C` in the URL): each key and value is percent-decoded once more after the split. `domain` may be
left out when the config has exactly one domain.

The answer is the limiter's own: the descriptors go through `Limiter.plan` and `Limiter.decide` with
`hits_addend` 0, the same matching, the same counter keys, the same store call (Redis behind its
circuit breaker, or memory) a request makes, and `on_backend_error` answers when the store fails.
Nothing is counted, and nothing goes to the per-rule metrics (those are the service's, which this
bypasses). What a check does touch is what any request touches: the plan cache, the known-over cache
of fixed windows found over, the breaker's failure count when Redis does not answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple
from urllib.parse import unquote

from aiohttp import web

from ratelimit.limiter import Code, Decision, Descriptor, DescriptorStatus, Limiter
from ratelimit.rules import NO_SOURCE, Limit, Rule
from ratelimit.store import Outcome

MAX_DESCRIPTORS = 16
MAX_ENTRIES = 16
MAX_TEXT = 1024  # characters of one key or value


class BadQuery(ValueError):
    """A query /limits cannot answer; `parameter` names the query parameter at fault."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


class Query(NamedTuple):
    domain: str
    descriptors: tuple[tuple[tuple[str, str], ...], ...]


def parse_descriptor(text: str) -> tuple[tuple[str, str], ...]:
    """`key=value,key2=value2` (a `key` alone: empty value) as entries; BadQuery naming `descriptor`."""
    if not text:
        raise BadQuery("descriptor", "is empty; write key=value[,key=value...]")
    parts = text.split(",")
    if len(parts) > MAX_ENTRIES:
        raise BadQuery("descriptor", f"{text!r} has {len(parts)} entries, at most {MAX_ENTRIES}")
    entries = []
    for part in parts:
        key, _, value = part.partition("=")
        key, value = unquote(key), unquote(value)
        if not key:
            raise BadQuery("descriptor", f"{text!r}: an entry without a key ({part!r}); write key=value")
        if len(key) > MAX_TEXT or len(value) > MAX_TEXT:
            raise BadQuery("descriptor", f"an entry longer than {MAX_TEXT} characters")
        entries.append((key, value))
    return tuple(entries)


def parse_query(pairs: Iterable[tuple[str, str]], domains: Iterable[str]) -> Query:
    """The query's parameters (in order, repeated ones included) as a Query; `domains`: those configured."""
    domain: str | None = None
    descriptors: list[tuple[tuple[str, str], ...]] = []
    for name, value in pairs:
        if name == "domain":
            if domain is not None:
                raise BadQuery("domain", "given twice; ask one domain per call")
            if not value:
                raise BadQuery("domain", "is empty")
            domain = value
        elif name == "descriptor":
            if len(descriptors) == MAX_DESCRIPTORS:
                raise BadQuery("descriptor", f"more than {MAX_DESCRIPTORS} descriptors in one call")
            descriptors.append(parse_descriptor(value))
        else:
            raise BadQuery(name, "unknown parameter; /limits takes domain and descriptor")
    if not descriptors:
        raise BadQuery("descriptor", "missing; e.g. /limits?domain=D&descriptor=route=accounts,tenant=acme")
    if domain is None:
        known = sorted(domains)
        if len(known) != 1:
            raise BadQuery("domain", f"missing, and the config has {len(known)} domains: {', '.join(known) or 'none'}")
        domain = known[0]
    return Query(domain, tuple(descriptors))


async def inspect(limiter: Limiter, query: Query) -> dict[str, Any]:
    """What a request with the query's descriptors would be answered now, consuming nothing."""
    descriptors = [Descriptor(entries, hits_addend=0) for entries in query.descriptors]
    plan = limiter.plan(query.domain, descriptors, 0)
    # Which checks this process answers from its known-over cache rather than the store: a lookup only.
    known = limiter.known_over.lookup(plan.checks, limiter.clock.now_us()) if limiter.known_over else None
    decision = await limiter.decide(plan)
    by_check = dict(zip(plan.checks, known or [None] * len(plan.checks), strict=True))
    answered: dict[str, str] = {}
    for check in plan.checks:
        answered[check.key] = "known_over" if by_check.get(check) is not None else "store"
    return {
        "domain": query.domain,
        "domain_known": limiter.config.has_domain(query.domain),
        "overall_code": decision.code.name,
        "global_shadow_mode": limiter.global_shadow_mode,
        "global_shadowed": decision.global_shadowed,
        "backend": _backend(decision),
        "descriptors": [_descriptor(entries, status, answered)
                        for entries, status in zip(query.descriptors, decision.statuses, strict=True)],
    }


def _backend(decision: Decision) -> dict[str, Any]:
    error = decision.backend_error
    if error is None:
        return {"answered": True}
    return {"answered": False, "error": str(error),
            "fallbacks": sorted({status.fallback for status in decision.statuses if status.fallback})}


def _entries_text(entries: Iterable[tuple[str, str | None]]) -> str:
    return ",".join(key if value is None else f"{key}={value}" for key, value in entries)


def _descriptor(entries: tuple[tuple[str, str], ...], status: DescriptorStatus,
                answered: dict[str, str]) -> dict[str, Any]:
    shown: dict[str, Any] = {"descriptor": _entries_text(entries), "rule": _rule(status.rule),
                             "code": status.code.name}
    if status.rule is None:
        shown["state"] = "no rule (unlimited)"
        return shown
    counted = {id(limit_status.limit): limit_status for limit_status in status.limits}
    shown.update(
        state=_state(status), limit_remaining=status.limit_remaining,
        duration_until_reset=round(status.duration_until_reset, 3), over=status.over, shadowed=status.shadowed,
        unlimited=status.unlimited, replaced=status.replaced, fallback=status.fallback,
        current_limit=_limit(status.current_limit) if status.current_limit else None,
        limits=[_limit(limit, counted.get(id(limit)), answered, status.fallback) for limit in status.rule.limits])
    return shown


def _state(status: DescriptorStatus) -> str:
    if status.unlimited:
        return "unlimited"
    if status.replaced or not status.limits:
        return "replaced"
    if status.shadowed:
        return "over (shadow mode)"
    return "over" if status.code is Code.OVER_LIMIT else "within"


def _rule(rule: Rule | None) -> dict[str, Any] | None:
    if rule is None:
        return None
    return {"key_path": _entries_text(rule.key_path), "stats_key": rule.stats_key, "name": rule.name,
            "source": None if rule.source == NO_SOURCE else str(rule.source), "unlimited": rule.unlimited,
            "shadow_mode": rule.shadow_mode, "replaces": list(rule.replaces),
            "on_backend_error": rule.on_backend_error}


def _limit(limit: Limit, counted: Any = None, answered: dict[str, str] | None = None,
           fallback: str | None = None) -> dict[str, Any]:
    shown: dict[str, Any] = {"name": limit.name, "algorithm": limit.algorithm, "unit": limit.unit,
                             "unit_multiplier": limit.unit_multiplier, "requests_per_unit": limit.requests_per_unit,
                             "burst": limit.burst, "describe": limit.describe()}
    if answered is None:
        return shown
    if counted is None:
        shown["replaced"] = True  # cancelled by a `replaces` of a rule matched in this request
        return shown
    outcome: Outcome = counted.outcome
    shown.update(counter_key=counted.key, allowed=outcome.allowed, remaining=outcome.remaining,
                 reset_after=round(outcome.reset_after, 3), used=outcome.used,
                 answered_by=f"fallback_{fallback}" if fallback else answered.get(counted.key, "store"))
    return shown


def routes(limiter: Limiter, store: Callable[[], dict[str, Any]] | None = None) -> list[web.RouteDef]:
    """`GET /limits` over `limiter`; `store()` describes the counter store (kind, breaker) in each answer."""

    async def handle(request: web.Request) -> web.Response:
        try:
            query = parse_query(request.query.items(), limiter.config.domains)
        except BadQuery as exc:
            return web.json_response({"error": str(exc), "parameter": exc.parameter}, status=400)
        answer = await inspect(limiter, query)
        if store is not None:
            answer["store"] = store()
        return web.json_response(answer)

    return [web.get("/limits", handle)]


__all__ = ["MAX_DESCRIPTORS", "MAX_ENTRIES", "BadQuery", "Query", "inspect", "parse_descriptor", "parse_query",
           "routes"]

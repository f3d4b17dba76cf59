"""Turn one ShouldRateLimit request into per-descriptor decisions: match, count once, decide.

The semantics are envoyproxy/ratelimit's (src/service/ratelimit.go and src/limiter/base_limiter.go):
a descriptor that matches no rule is OK with no limit; an `unlimited` rule is OK with remaining
2^32 - 1 and costs no counter; a `shadow_mode` rule is counted and reported but its status is OK;
`replaces` cancels, for the whole request, the limits named by any matched rule; a descriptor's
`limit` override replaces the configured limits (and is never in shadow mode); the overall code is
OVER_LIMIT when any descriptor's status is; global shadow mode turns that overall code into OK while
leaving the descriptor statuses as they are. All counters of a request go to the store in one call.

When the store raises BackendUnavailable each rule's `on_backend_error` decides: `allow` answers OK
(the default; envoyproxy/ratelimit would return an error and Envoy fails open by default), `deny`
answers OVER_LIMIT (the descriptor's `fallback` says why, so the service can tell it from a real
over-limit), `local` counts in this process's memory with the limit divided by `replicas`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from pavilion.errors import BackendUnavailable
from ratelimit.algorithms import window_start
from ratelimit.clock import MICROS, Clock, SystemClock
from ratelimit.matching import RateLimitConfig
from ratelimit.memory_store import MemoryStore
from ratelimit.rules import MAX_UINT32, TOKEN_BUCKET, Limit, Rule
from ratelimit.store import Check, CounterStore, Outcome, descriptor_key, limit_key


class Code(enum.IntEnum):
    """The numbers of envoy.service.ratelimit.v3.RateLimitResponse.Code."""

    OK = 1
    OVER_LIMIT = 2


@dataclass(frozen=True)
class Descriptor:
    """One request descriptor. `hits_addend` None: the request's; 0: check without consuming."""

    entries: tuple[tuple[str, str], ...]
    limit_override: Limit | None = None
    hits_addend: int | None = None


@dataclass(frozen=True)
class LimitStatus:
    """One counted limit of a descriptor."""

    limit: Limit
    key: str
    outcome: Outcome

    @property
    def over(self) -> bool:
        return not self.outcome.allowed

    @property
    def near(self) -> bool:
        """Within the limit but past 80 % of it (envoyproxy/ratelimit's near_limit threshold)."""
        size = self.limit.capacity if self.limit.algorithm == TOKEN_BUCKET else self.limit.requests_per_unit
        return self.outcome.allowed and self.outcome.used > (size * 8) // 10


@dataclass(frozen=True)
class DescriptorStatus:
    """The answer for one descriptor, with what the service needs for the response, headers and metrics.

    `current_limit` is the limit that decided: among the limits over, the one that blocks longest;
    else the one with the least remaining. `over` is true when a limit is over even if `code` is OK
    (shadow mode); `shadowed` is true exactly when shadow mode turned OVER_LIMIT into OK.
    `fallback` names the `on_backend_error` that answered when the store failed, else None.
    """

    rule: Rule | None
    code: Code
    hits: int
    limits: tuple[LimitStatus, ...] = ()
    current_limit: Limit | None = None
    limit_remaining: int = 0
    duration_until_reset: float = 0.0
    over: bool = False
    shadowed: bool = False
    unlimited: bool = False
    replaced: bool = False
    fallback: str | None = None

    @property
    def near(self) -> bool:
        return any(status.near for status in self.limits)


@dataclass(frozen=True)
class Decision:
    code: Code
    statuses: tuple[DescriptorStatus, ...]
    global_shadowed: bool = False  # OVER_LIMIT turned into OK by global shadow mode
    backend_error: BackendUnavailable | None = None  # the store failed and on_backend_error answered


@dataclass(frozen=True)
class _Planned:
    """One limit of one descriptor, to be counted."""

    descriptor: int
    limit: Limit
    check: Check
    on_backend_error: str


class Limiter:
    def __init__(self, config: RateLimitConfig, store: CounterStore, *, clock: Clock | None = None,
                 replicas: int = 1, global_shadow_mode: bool = False) -> None:
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        self.config = config  # swapped whole on reload; each request reads it once
        self.store = store
        self.clock = clock or SystemClock()
        self.replicas = replicas
        self.global_shadow_mode = global_shadow_mode
        self.local_store = MemoryStore(self.clock)

    async def should_rate_limit(self, domain: str, descriptors: Sequence[Descriptor], hits_addend: int = 1) -> Decision:
        """Decide one request. `hits_addend` is the request's cost (the service passes 1 when the
        request leaves it 0, as Envoy's API says); a descriptor's own `hits_addend` wins over it."""
        if hits_addend < 0 or any(d.hits_addend is not None and d.hits_addend < 0 for d in descriptors):
            raise ValueError("hits_addend cannot be negative")
        config = self.config
        rules = [self._rule_for(config, domain, descriptor) for descriptor in descriptors]
        replaced = {name for rule in rules if rule is not None for name in rule.replaces}
        planned: list[_Planned] = []
        kept: list[tuple[Limit, ...]] = []
        for index, (descriptor, rule) in enumerate(zip(descriptors, rules, strict=True)):
            limits = self._limits_left(rule, replaced)
            kept.append(limits)
            if rule is None or not limits:
                continue
            hits = _hits(descriptor, hits_addend)
            override = descriptor.limit_override is not None
            prefix = descriptor_key(domain, descriptor.entries)
            for position, limit in enumerate(limits):
                check = Check(limit_key(prefix, limit, position, override=override), limit.algorithm,
                              limit.requests_per_unit, limit.window_seconds, limit.burst, hits)
                planned.append(_Planned(index, limit, check, rule.on_backend_error))
        outcomes, fallbacks, error = await self._count(planned)
        per_descriptor: list[list[LimitStatus]] = [[] for _ in descriptors]
        for plan, outcome in zip(planned, outcomes, strict=True):
            per_descriptor[plan.descriptor].append(LimitStatus(plan.limit, plan.check.key, outcome))
        statuses = tuple(
            _status(rule, _hits(descriptor, hits_addend), tuple(per_descriptor[i]),
                    replaced=rule is not None and not rule.unlimited and not kept[i],
                    fallback=fallbacks.get(i))
            for i, (descriptor, rule) in enumerate(zip(descriptors, rules, strict=True))
        )
        over = any(status.code is Code.OVER_LIMIT for status in statuses)
        if over and self.global_shadow_mode:
            return Decision(Code.OK, statuses, global_shadowed=True, backend_error=error)
        return Decision(Code.OVER_LIMIT if over else Code.OK, statuses, backend_error=error)

    @staticmethod
    def _rule_for(config: RateLimitConfig, domain: str, descriptor: Descriptor) -> Rule | None:
        override = descriptor.limit_override
        if override is None:
            return config.match(domain, descriptor.entries)
        if not config.has_domain(domain):
            return None
        # Like envoyproxy/ratelimit, an override applies in a known domain whether or not a rule
        # matches, and is never in shadow mode; it keeps the matched rule's on_backend_error. Its
        # key path is the matched rule's, or the request's keys without values, so metrics labelled
        # by `stats_key` stay bounded (the counter key still holds the values).
        matched = config.match(domain, descriptor.entries)
        key_path = matched.key_path if matched else tuple((key, None) for key, _ in descriptor.entries)
        return Rule(
            domain=domain, key_path=key_path, limits=(override,),
            on_backend_error=matched.on_backend_error if matched else "allow",
            detailed_metric=matched.detailed_metric if matched else False,
        )

    @staticmethod
    def _limits_left(rule: Rule | None, replaced: set[str]) -> tuple[Limit, ...]:
        if rule is None or rule.unlimited:
            return ()
        if rule.name and rule.name in replaced:
            return ()
        return tuple(limit for limit in rule.limits if not (limit.name and limit.name in replaced))

    async def _count(self, planned: list[_Planned]) -> tuple[list[Outcome], dict[int, str], BackendUnavailable | None]:
        if not planned:
            return [], {}, None
        try:
            return await self.store.apply([plan.check for plan in planned]), {}, None
        except BackendUnavailable as error:
            return self._fall_back(planned), {plan.descriptor: plan.on_backend_error for plan in planned}, error

    def _fall_back(self, planned: list[_Planned]) -> list[Outcome]:
        now = self.clock.now_us()
        local = [plan for plan in planned if plan.on_backend_error == "local"]
        local_outcomes = iter(self.local_store.apply_now([self._local_check(plan.check) for plan in local]))
        outcomes: list[Outcome] = []
        for plan in planned:
            if plan.on_backend_error == "local":
                outcomes.append(next(local_outcomes))
                continue
            window = plan.check.window
            reset = ((window_start(now, window) + window) * MICROS - now) / MICROS
            if plan.on_backend_error == "deny":
                outcomes.append(Outcome(False, 0, reset, 0))
            else:
                outcomes.append(Outcome(True, plan.check.limit, reset, 0))
        return outcomes

    def _local_check(self, check: Check) -> Check:
        """This replica's share: the limit (and burst) divided by `replicas`, at least 1 unless it was 0."""
        def share(value: int) -> int:
            return value and max(1, value // self.replicas)

        return Check(check.key, check.algorithm, share(check.limit), check.window, share(check.burst), check.hits)


def _hits(descriptor: Descriptor, request_hits: int) -> int:
    return request_hits if descriptor.hits_addend is None else descriptor.hits_addend


def _status(rule: Rule | None, hits: int, limits: tuple[LimitStatus, ...], *, replaced: bool,
            fallback: str | None) -> DescriptorStatus:
    if rule is None:
        return DescriptorStatus(None, Code.OK, hits)
    if rule.unlimited:
        return DescriptorStatus(rule, Code.OK, hits, limit_remaining=MAX_UINT32, unlimited=True)
    if not limits:
        return DescriptorStatus(rule, Code.OK, hits, replaced=replaced)
    over_limits = [status for status in limits if status.over]
    if over_limits:
        deciding = max(over_limits, key=lambda status: status.outcome.reset_after)
    else:
        deciding = min(limits, key=lambda status: (status.outcome.remaining, -status.outcome.reset_after))
    over = bool(over_limits)
    shadowed = over and rule.shadow_mode
    return DescriptorStatus(
        rule=rule, code=Code.OVER_LIMIT if over and not shadowed else Code.OK, hits=hits, limits=limits,
        current_limit=deciding.limit, limit_remaining=0 if over else deciding.outcome.remaining,
        duration_until_reset=deciding.outcome.reset_after, over=over, shadowed=shadowed, fallback=fallback,
    )

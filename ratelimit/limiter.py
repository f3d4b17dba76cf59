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
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

from pavilion.errors import BackendUnavailable
from ratelimit.algorithms import window_start
from ratelimit.clock import MICROS, Clock, SystemClock
from ratelimit.known_over import KnownOver
from ratelimit.matching import RateLimitConfig
from ratelimit.memory_store import MemoryStore
from ratelimit.metrics import KNOWN_OVER_ANSWERS
from ratelimit.rules import MAX_UINT32, Limit, Rule
from ratelimit.store import Check, CounterStore, Outcome, descriptor_key, limit_key


class Code(enum.IntEnum):
    """The numbers of envoy.service.ratelimit.v3.RateLimitResponse.Code."""

    OK = 1
    OVER_LIMIT = 2


# The per-request types are NamedTuples, not frozen dataclasses: as immutable, and built several
# times per descriptor on the hot path, where a frozen dataclass's __init__ costs 3-4 times more.

class Descriptor(NamedTuple):
    """One request descriptor. `hits_addend` None: the request's; 0: check without consuming."""

    entries: tuple[tuple[str, str], ...]
    limit_override: Limit | None = None
    hits_addend: int | None = None


class LimitStatus(NamedTuple):
    """One counted limit of a descriptor."""

    limit: Limit
    key: str
    outcome: Outcome

    @property
    def over(self) -> bool:
        return not self.outcome.allowed


class DescriptorStatus(NamedTuple):
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
    def guessed(self) -> bool:
        """Answered by `on_backend_error: allow|deny` with no counter behind it (a `local` answer has real,
        per-replica counts): left out of the client's headers and the per-rule metrics."""
        return self.fallback in ("allow", "deny")


class Decision(NamedTuple):
    code: Code
    statuses: tuple[DescriptorStatus, ...]
    global_shadowed: bool = False  # OVER_LIMIT turned into OK by global shadow mode
    backend_error: BackendUnavailable | None = None  # the store failed and on_backend_error answered


class _Plan(NamedTuple):
    """What a descriptor without override resolves to under one config: its rule and, for each of the
    rule's limits in order, the limit and its Check (valid as is when the request replaces nothing)."""

    rule: Rule | None
    checks: tuple[tuple[Limit, Check], ...]


class RequestPlan(NamedTuple):
    """A whole request under one config: per descriptor its rule, cost and (limit, check) pairs; then
    every check in store order and the descriptor each belongs to. `checks` is one tuple for the
    plan's life, so a store may keep its encoded command by the tuple's identity."""

    config: RateLimitConfig
    domain: str
    rules: tuple[Rule | None, ...]
    hits: tuple[int, ...]
    checks_of: tuple[tuple[tuple[Limit, Check], ...], ...]
    checks: tuple[Check, ...]
    owners: tuple[int, ...]


# Plans per (domain, entries, hits): matching and key building cost more than the rest of a
# request. Bounded (descriptor values can come from clients: one per IP address, say); least
# recently used first out. Emptied whenever the limiter's config object is swapped.
PLAN_CACHE_SIZE = 10_000


class Limiter:
    def __init__(self, config: RateLimitConfig, store: CounterStore, *, clock: Clock | None = None,
                 replicas: int = 1, global_shadow_mode: bool = False, plan_cache_size: int = PLAN_CACHE_SIZE) -> None:
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        self.config = config  # swapped whole on reload; each request reads it once
        self.store = store
        self.clock = clock or SystemClock()
        self.replicas = replicas
        self.global_shadow_mode = global_shadow_mode
        self.local_store = MemoryStore(self.clock)
        self._plan_cache_size = plan_cache_size
        self._plans: OrderedDict[tuple[str, tuple[tuple[str, str], ...], int], _Plan] = OrderedDict()
        self.known_over = KnownOver()
        self._learnt_under: RateLimitConfig | None = None  # the config the plans and known_over hold for

    @property
    def cached_plans(self) -> int:
        return len(self._plans)

    async def should_rate_limit(self, domain: str, descriptors: Sequence[Descriptor], hits_addend: int = 1) -> Decision:
        """Decide one request. `hits_addend` is the request's cost (the service passes 1 when the
        request leaves it 0, as Envoy's API says); a descriptor's own `hits_addend` wins over it."""
        return await self.decide(self.plan(domain, descriptors, hits_addend))

    def plan(self, domain: str, descriptors: Sequence[Descriptor], hits_addend: int = 1) -> RequestPlan:
        """Everything about a request that does not depend on the counters: its rules and checks.

        A plan is the same for every request with the same domain, descriptors and cost under one
        config, so the service keeps plans per request bytes and a repeated request starts at `decide`.
        """
        if hits_addend < 0:
            raise ValueError("hits_addend cannot be negative")
        config = self.config
        self._forget_if_swapped(config)
        hits_of: list[int] = []
        rules: list[Rule | None] = []
        checks_of: list[tuple[tuple[Limit, Check], ...] | None] = []  # None: not from a plan
        replacing = False
        for descriptor in descriptors:
            hits = descriptor.hits_addend
            if hits is None:
                hits = hits_addend
            elif hits < 0:
                raise ValueError("hits_addend cannot be negative")
            hits_of.append(hits)
            if descriptor.limit_override is None:
                plan = self._plan(config, domain, descriptor.entries, hits)
                rule = plan.rule
                checks_of.append(plan.checks)
            else:
                rule = self._rule_for(config, domain, descriptor)
                checks_of.append(None)
            rules.append(rule)
            if rule is not None and rule.replaces:
                replacing = True
        replaced = {name for rule in rules if rule is not None for name in rule.replaces} if replacing else set()
        owners: list[int] = []  # per check: its descriptor
        checks: list[Check] = []
        for index, planned in enumerate(checks_of):
            if planned is None or replacing:
                planned = checks_of[index] = self._checks(domain, descriptors[index], rules[index], replaced,
                                                          hits_of[index])
            if planned:
                checks.extend(check for _limit, check in planned)
                owners.extend([index] * len(planned))
        return RequestPlan(config, domain, tuple(rules), tuple(hits_of), tuple(planned or () for planned in checks_of),
                           tuple(checks), tuple(owners))

    async def decide(self, plan: RequestPlan) -> Decision:
        """Count the plan's checks in the store (one call) and decide every descriptor.

        Checks of fixed-window counters already known to be over (`known_over`) are answered here;
        only the others go to the store, and none at all when every check is known. On a store
        failure each rule's `on_backend_error` answers its checks (`failed`: their descriptors).
        """
        known, asked = self._known_over_split(plan)
        failed: set[int] = set()
        error: BackendUnavailable | None = None
        try:
            # Awaited here rather than in a helper coroutine: one coroutine less per request.
            answers = await self.store.apply(asked) if asked else []
        except BackendUnavailable as exc:
            error = exc
            owners = [owner for index, owner in enumerate(plan.owners) if known is None or known[index] is None]
            failed = set(owners)
            answers = self._fall_back(asked, [plan.rules[owner].on_backend_error  # type: ignore[union-attr]
                                              for owner in owners])
        else:
            if answers:
                self.known_over.remember(asked, answers, self.clock.now_us())
        if known is None:
            outcomes = answers
        else:
            KNOWN_OVER_ANSWERS.inc(len(plan.checks) - len(asked))
            remaining = iter(answers)
            outcomes = [outcome if outcome is not None else next(remaining) for outcome in known]
        statuses: list[DescriptorStatus] = []
        position = 0
        over = False
        for index, rule in enumerate(plan.rules):
            checks = plan.checks_of[index]
            count = len(checks)
            if count == 1:
                limit, check = checks[0]
                limits: tuple[LimitStatus, ...] = (LimitStatus(limit, check.key, outcomes[position]),)
            else:
                limits = tuple([LimitStatus(limit, check.key, outcome) for (limit, check), outcome
                                in zip(checks, outcomes[position:position + count], strict=True)])
            position += count
            status = _status(rule, plan.hits[index], limits, rule is not None and not rule.unlimited and not count,
                             rule.on_backend_error if failed and rule is not None and index in failed else None)
            if status.code is Code.OVER_LIMIT:
                over = True
            statuses.append(status)
        if over and self.global_shadow_mode:
            return Decision(Code.OK, tuple(statuses), True, error)
        return Decision(Code.OVER_LIMIT if over else Code.OK, tuple(statuses), False, error)

    def _plan(self, config: RateLimitConfig, domain: str, entries: tuple[tuple[str, str], ...], hits: int) -> _Plan:
        plans = self._plans
        cache_key = (domain, entries, hits)
        plan = plans.get(cache_key)
        if plan is not None:
            plans.move_to_end(cache_key)
            return plan
        rule = config.match(domain, entries)
        checks: tuple[tuple[Limit, Check], ...] = ()
        if rule is not None and not rule.unlimited and rule.limits:
            prefix = descriptor_key(domain, rule.counted_entries(entries))
            checks = tuple((limit, Check(limit_key(prefix, limit, position), limit.algorithm, limit.requests_per_unit,
                                         limit.window_seconds, limit.burst, hits))
                           for position, limit in enumerate(rule.limits))
        plan = plans[cache_key] = _Plan(rule, checks)
        if len(plans) > self._plan_cache_size:
            plans.popitem(last=False)
        return plan

    def _checks(self, domain: str, descriptor: Descriptor, rule: Rule | None, replaced: set[str],
                hits: int) -> tuple[tuple[Limit, Check], ...]:
        """The uncached way: a request's limit override, or a request whose rules replace limits."""
        limits = self._limits_left(rule, replaced)
        if rule is None or not limits:
            return ()
        override = descriptor.limit_override is not None
        prefix = descriptor_key(domain, rule.counted_entries(descriptor.entries))
        return tuple((limit, Check(limit_key(prefix, limit, position, override=override), limit.algorithm,
                                   limit.requests_per_unit, limit.window_seconds, limit.burst, hits))
                     for position, limit in enumerate(limits))

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

    def _forget_if_swapped(self, config: RateLimitConfig) -> None:
        """Empty what was learnt under another config: plans (the rules differ) and the counters known
        over (a limit may have been raised)."""
        if config is not self._learnt_under:
            self._plans.clear()
            self.known_over.clear()
            self._learnt_under = config

    def _known_over_split(self, plan: RequestPlan) -> tuple[list[Outcome | None] | None, Sequence[Check]]:
        """Per check the outcome already known (None: none known at all), and the checks to ask."""
        self._forget_if_swapped(plan.config)
        if not self.known_over or not plan.checks:
            return None, plan.checks
        known = self.known_over.lookup(plan.checks, self.clock.now_us())
        if known is None:
            return None, plan.checks
        return known, tuple(check for check, outcome in zip(plan.checks, known, strict=True) if outcome is None)

    def _fall_back(self, checks: Sequence[Check], fallbacks: list[str]) -> list[Outcome]:
        now = self.clock.now_us()
        local = [check for check, fallback in zip(checks, fallbacks, strict=True) if fallback == "local"]
        local_outcomes = iter(self.local_store.apply_now([self._local_check(check) for check in local]))
        outcomes: list[Outcome] = []
        for check, fallback in zip(checks, fallbacks, strict=True):
            if fallback == "local":
                outcomes.append(next(local_outcomes))
                continue
            window = check.window
            reset = ((window_start(now, window) + window) * MICROS - now) / MICROS
            if fallback == "deny":
                outcomes.append(Outcome(False, 0, reset, 0))
            else:
                outcomes.append(Outcome(True, check.limit, reset, 0))
        return outcomes

    def _local_check(self, check: Check) -> Check:
        """This replica's share: the limit (and burst) divided by `replicas`, at least 1 unless it was 0."""
        def share(value: int) -> int:
            return value and max(1, value // self.replicas)

        return Check(check.key, check.algorithm, share(check.limit), check.window, share(check.burst), check.hits)


def _status(rule: Rule | None, hits: int, limits: tuple[LimitStatus, ...], replaced: bool,
            fallback: str | None) -> DescriptorStatus:
    if rule is None:
        return DescriptorStatus(None, Code.OK, hits)
    if rule.unlimited:
        return DescriptorStatus(rule, Code.OK, hits, limit_remaining=MAX_UINT32, unlimited=True)
    if not limits:
        return DescriptorStatus(rule, Code.OK, hits, replaced=replaced)
    if len(limits) == 1:
        deciding = limits[0]
        over = not deciding.outcome.allowed
    else:
        over_limits = [status for status in limits if status.over]
        if over_limits:
            deciding = max(over_limits, key=lambda status: status.outcome.reset_after)
        else:
            deciding = min(limits, key=lambda status: (status.outcome.remaining, -status.outcome.reset_after))
        over = bool(over_limits)
    shadowed = over and rule.shadow_mode
    outcome = deciding.outcome
    return DescriptorStatus(rule, Code.OVER_LIMIT if over and not shadowed else Code.OK, hits, limits, deciding.limit,
                            0 if over else outcome.remaining, outcome.reset_after, over, shadowed, False, False,
                            fallback)

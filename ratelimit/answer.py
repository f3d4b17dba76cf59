"""The parts of a ShouldRateLimit answer that follow from a request plan, built once per plan.

Every request with the same bytes has the same plan (see `ratelimit.service`), so everything about
its answer that does not depend on the counters is the same too: per counted limit the status
messages with `current_limit` set (one for OK, one for OVER_LIMIT), the `RateLimit-Policy` item, the
metric label and the count past which the limit is "near". A request then only fills in what its
counters say. Per limit these views are shared by every plan (kept by the limit's identity), so a
plan for a new client value costs a tuple, not new messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from envoy.service.ratelimit.v3 import rls_pb2

from ratelimit.headers import (
    ENVOYPROXY_NAMES,
    HEADER_STYLES,
    HeaderNames,
    current_item,
    envoyproxy_headers,
    policy_item,
    retry_after,
)
from ratelimit.limiter import Code, Decision, RequestPlan
from ratelimit.rules import Limit, Rule
from ratelimit.store import Check

_RESPONSE = rls_pb2.RateLimitResponse
_UNITS = {"second": 1, "minute": 2, "hour": 3, "day": 4, "month": 5, "year": 6, "week": 7}


class LimitView(NamedTuple):
    """What the answer says about one counted limit, whatever its counter holds."""

    limit: Limit
    rule: Rule | None
    ok: rls_pb2.RateLimitResponse.DescriptorStatus  # code OK, current_limit set: copied per request
    over: rls_pb2.RateLimitResponse.DescriptorStatus  # the same with OVER_LIMIT
    quoted: str  # the policy's name as a Structured Field string
    policy: str  # its RateLimit-Policy item
    label: str  # the rule's metric label
    near_above: int  # used past this (80 % of its quota) and allowed is "near" (envoyproxy/ratelimit)


class PlanAnswer(NamedTuple):
    """A plan with, per descriptor, the views of its counted limits (in the plan's order); the answer's
    statuses as they are when every descriptor is within its first limit (a request copies them in one
    call and fixes up only what differs); the RateLimit-Policy value and the (descriptor, limit)
    positions of its items when every limit was counted (no fallback)."""

    plan: RequestPlan
    views: tuple[tuple[LimitView, ...], ...]
    template: rls_pb2.RateLimitResponse
    policy_header: str
    header_positions: tuple[tuple[int, int, LimitView], ...]
    labels: tuple[str, ...]  # per descriptor, the `rule` label of its metrics ("" when nothing is counted)


def current_limit(limit: Limit, rule: Rule | None) -> rls_pb2.RateLimitResponse.RateLimit:
    proto = _RESPONSE.RateLimit(requests_per_unit=limit.requests_per_unit, unit=_UNITS[limit.unit])
    name = limit.name or (rule.name if rule else None)
    if limit.unit_multiplier != 1:
        # The proto has no multiplier; say it in the name rather than report a wrong window.
        name = f"{name or 'limit'} ({limit.requests_per_unit} per {limit.window_seconds}s)"
    if name:
        proto.name = name
    return proto


# id(limit) -> its view. A configured limit belongs to one rule and lives as long as its config; the
# entry keeps both, so a reused id is caught by the identity check. Overrides (a new Limit per request)
# are never kept.
_VIEWS: dict[int, LimitView] = {}
_MAX_VIEWS = 10_000


def limit_view(limit: Limit, rule: Rule | None, check: Check) -> LimitView:
    view = _VIEWS.get(id(limit))
    if view is not None and view.limit is limit and view.rule is rule:
        return view
    override = _is_override(check.key)
    proto = current_limit(limit, rule)
    quoted, policy = policy_item(limit, rule, override)
    view = LimitView(limit, rule, _RESPONSE.DescriptorStatus(code=_RESPONSE.OK, current_limit=proto),
                     _RESPONSE.DescriptorStatus(code=_RESPONSE.OVER_LIMIT, current_limit=proto), quoted, policy,
                     (rule.name or rule.stats_key) if rule else "", (limit.quota * 8) // 10)
    if not override:
        if len(_VIEWS) >= _MAX_VIEWS:
            _VIEWS.clear()
        _VIEWS[id(limit)] = view
    return view


def _is_override(key: str) -> bool:
    # A request's override is counted under a limit part starting with `o.` (see store.limit_key).
    return key.startswith("o.", key.rfind("|") + 1)


def plan_answer(plan: RequestPlan) -> PlanAnswer:
    views = tuple(tuple(limit_view(limit, plan.rules[index], check) for limit, check in checks)
                  for index, checks in enumerate(plan.checks_of))
    template = _RESPONSE()
    for descriptor_views in views:
        if descriptor_views:
            template.statuses.append(descriptor_views[0].ok)
        else:
            template.statuses.add(code=_RESPONSE.OK)
    positions = header_positions(views, ())
    labels = tuple(metric_label(plan.rules[index], descriptor_views, plan.checks_of[index][0][1])
                   if descriptor_views else "" for index, descriptor_views in enumerate(views))
    return PlanAnswer(plan, views, template, ", ".join(view.policy for _i, _j, view in positions), positions,
                      labels)


def metric_label(rule: Rule | None, views: tuple[LimitView, ...], check: Check) -> str:
    """A descriptor's `rule` label: the rule's name or key path, or with `detailed_metric` or
    `value_to_metric` the key path with request values in it (Rule.metric_label). Request values come
    percent-encoded, as the counter key holds them; RuleMetrics caps how many labels there can be."""
    if rule is None or not (rule.detailed_metric or rule.value_to_metric):
        return views[0].label
    return rule.metric_label(tuple((key, value) for key, _, value in
                                   (entry.partition("=") for entry in _key_entries(check.key))))


def _key_entries(key: str) -> list[str]:
    # A counter key is `domain|k=v|k2=v2|<limit part>` (store.storage_key), keys and values escaped.
    return key.split("|")[1:-1]


def header_positions(views: tuple[tuple[LimitView, ...], ...],
                     left_out: tuple[int, ...]) -> tuple[tuple[int, int, LimitView], ...]:
    """The limits that get a RateLimit item, one per policy name (the first), skipping the descriptors
    in `left_out` (answered by `on_backend_error: allow|deny`, so with no real counts behind them)."""
    seen: set[str] = set()
    positions = []
    for index, descriptor_views in enumerate(views):
        if index in left_out:
            continue
        for position, view in enumerate(descriptor_views):
            if view.quoted not in seen:
                seen.add(view.quoted)
                positions.append((index, position, view))
    return tuple(positions)


def to_response(decision: Decision, answer: PlanAnswer, headers: Headers | None = None) -> rls_pb2.RateLimitResponse:
    """The answer for Envoy; `headers` makes the client's headers (default: `rate_limit_headers`)."""
    response = _RESPONSE()
    response.MergeFrom(answer.template)
    response.overall_code = decision.code
    for item, status, views in zip(response.statuses, decision.statuses, answer.views, strict=True):
        limit = status.current_limit
        if limit is None:  # no counted limit: no rule, unlimited or replaced
            item.code = status.code
            item.limit_remaining = status.limit_remaining
            continue
        if status.code is Code.OVER_LIMIT or views[0].limit is not limit:
            view = views[0]
            if view.limit is not limit:  # several limits: the one that decided
                view = next(view for view in views if view.limit is limit)
            item.CopyFrom(view.over if status.code is Code.OVER_LIMIT else view.ok)
        if status.limit_remaining:
            item.limit_remaining = status.limit_remaining
        micros = max(0, round(status.duration_until_reset * 1_000_000))
        reset = item.duration_until_reset
        reset.seconds = micros // 1_000_000
        reset.nanos = micros % 1_000_000 * 1000
    add = response.response_headers_to_add.add
    for key, value in (headers or rate_limit_headers)(decision, answer):
        add(key=key, value=value)
    return response


Headers = Callable[[Decision, PlanAnswer], list[tuple[str, str]]]


def header_style(style: str, names: HeaderNames = ENVOYPROXY_NAMES) -> Headers:
    """What `--response-headers STYLE` adds to each answer (see ratelimit.headers)."""
    if style == "draft":
        return rate_limit_headers
    if style == "envoyproxy":
        return lambda decision, _answer: envoyproxy_headers(decision, names)
    if style == "none":
        return lambda _decision, _answer: []
    raise ValueError(f"response headers {style!r}: give one of {', '.join(HEADER_STYLES)}")


def rate_limit_headers(decision: Decision, answer: PlanAnswer) -> list[tuple[str, str]]:
    """`RateLimit-Policy` and `RateLimit` for the limits counted, `Retry-After` when over (see headers)."""
    if decision.backend_error is None:
        policy, positions = answer.policy_header, answer.header_positions
    else:
        left_out = tuple(index for index, status in enumerate(decision.statuses)
                         if status.guessed)
        positions = header_positions(answer.views, left_out)
        policy = ", ".join(view.policy for _i, _j, view in positions)
    headers: list[tuple[str, str]] = []
    if positions:
        statuses = decision.statuses
        headers.append(("RateLimit-Policy", policy))
        headers.append(("RateLimit", ", ".join([current_item(view.quoted, statuses[index].limits[position].outcome)
                                                for index, position, view in positions])))
    if decision.code is Code.OVER_LIMIT:
        headers.append(("Retry-After", retry_after(decision)))
    return headers
